"""Speech quality and intelligibility metrics of an estimate against its clean reference (16 kHz).

- SI-SDR (Le Roux et al. 2019, eq. 2): 10 log10(||a s||^2 / ||a s - s_hat||^2), a = <s_hat, s> / ||s||^2.
- Wideband PESQ (ITU-T P.862.2) through the ``pesq`` package.
- STOI (Taal et al. 2011) and extended STOI (Jensen & Taal 2016) through ``pystoi``.
- WARP-Q (Jassim, Skoglund, Chinen & Hines, "WARP-Q: Quality Prediction for Generative Neural Speech
  Codecs", ICASSP 2021): subsequence-DTW cost between MFCC patches of the estimate and the reference,
  the raw score (lower is better, about 0.4 for identical signals). An optional extra, ``pip install
  samplerlab[warpq]``: the ``warpq`` package pulls librosa, numba and pandas, and its VAD needs
  setuptools < 81 (``pkg_resources``) and the ``numpy.lib.pad`` name numpy 2 removed (restored below).
- DNSMOS P.835 SIG / BAK / OVRL and P.808 MOS (``metrics.dnsmos``), non-intrusive, from a user-supplied
  model folder.

``speech_metrics`` returns the requested ones as a dict; a metric whose package (or model) is missing
raises ``MetricUnavailable`` naming what to install or pass; ``available_metrics`` lists what runs here.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from torch import Tensor

__all__ = [
    "si_sdr",
    "pesq_wb",
    "stoi",
    "estoi",
    "warpq",
    "speech_metrics",
    "available_metrics",
    "SPEECH_METRICS",
    "OPTIONAL_METRICS",
    "ALL_METRICS",
    "MetricUnavailable",
]

SPEECH_METRICS = ("pesq", "stoi", "estoi", "si_sdr")  # always installed with samplerlab[speech]
OPTIONAL_METRICS = ("warpq", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808")
ALL_METRICS = SPEECH_METRICS + OPTIONAL_METRICS


class MetricUnavailable(RuntimeError):
    """The package behind a metric is not installed."""


def _np(x) -> np.ndarray:
    return (x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float64)).reshape(-1)


def si_sdr(reference, estimate) -> float:
    s, s_hat = _np(reference), _np(estimate)
    if s.shape != s_hat.shape:
        raise ValueError(f"reference and estimate differ in length: {s.shape[0]} vs {s_hat.shape[0]}")
    energy = float(np.dot(s, s))
    if energy == 0:
        raise ValueError("SI-SDR: the reference is silent")
    target = (np.dot(s_hat, s) / energy) * s
    err = float(np.sum((target - s_hat) ** 2))
    return math.inf if err == 0 else 10 * math.log10(float(np.sum(target**2)) / err)


def pesq_wb(reference, estimate, sample_rate: int = 16000) -> float:
    try:
        from pesq import pesq
    except ImportError:
        raise MetricUnavailable("PESQ needs the `pesq` package: pip install pesq (or samplerlab[speech])") from None
    if sample_rate != 16000:
        raise ValueError(f"wideband PESQ is defined at 16 kHz, got {sample_rate}")
    ref, est = _np(reference), _np(estimate)
    if min(len(ref), len(est)) < PESQ_MIN_SAMPLES:
        raise ValueError(
            f"PESQ needs at least 0.25 s ({PESQ_MIN_SAMPLES} samples at 16 kHz), got {min(len(ref), len(est))}"
        )
    try:
        return float(pesq(sample_rate, ref, est, "wb"))
    except RuntimeError as err:  # the library's PesqError: e.g. no utterance detected in a silent signal
        message = err.args[0].decode() if err.args and isinstance(err.args[0], bytes) else str(err)
        raise ValueError(f"PESQ: {message}") from None


PESQ_MIN_SAMPLES = 4000  # the pesq library refuses signals shorter than a quarter second


def min_samples_for(which) -> int:
    """The shortest signal (16 kHz samples) every metric of ``which`` accepts."""
    return PESQ_MIN_SAMPLES if "pesq" in which else 0


def check_metrics(which, dnsmos=None) -> None:
    """Refuse, before any work, metrics that are unknown or cannot run here."""
    bad = [m for m in which if m not in ALL_METRICS]
    if bad:
        raise ValueError(f"unknown speech metrics {bad}; valid: {', '.join(ALL_METRICS)}")
    missing = [m for m in which if m not in available_metrics(dnsmos)]
    if missing:
        hints = []
        if any(m.startswith("dnsmos_") for m in missing):
            from .dnsmos import HOW_TO_GET

            if dnsmos is not None and dnsmos.calibration is None:
                hints.append(_UNCALIBRATED.format(name="the P.835 scores", path=dnsmos.model_path))
            else:
                hints.append(HOW_TO_GET + " (and model_v8.onnx for dnsmos_p808)")
        if "warpq" in missing:
            hints.append("WARP-Q needs pip install 'samplerlab[warpq]'")
        if {"pesq", "stoi", "estoi"} & set(missing):
            hints.append("PESQ / STOI need pip install 'samplerlab[speech]'")
        raise MetricUnavailable(f"metrics {missing} cannot run here: {'; '.join(hints)}")


def _stoi(reference, estimate, sample_rate: int, extended: bool) -> float:
    try:
        from pystoi import stoi as _pystoi
    except ImportError:
        raise MetricUnavailable("STOI needs the `pystoi` package: pip install pystoi (or samplerlab[speech])") from None
    return float(_pystoi(_np(reference), _np(estimate), sample_rate, extended=extended))


def stoi(reference, estimate, sample_rate: int = 16000) -> float:
    return _stoi(reference, estimate, sample_rate, False)


def estoi(reference, estimate, sample_rate: int = 16000) -> float:
    return _stoi(reference, estimate, sample_rate, True)


_WARPQ = {}


def _warpq_model(sample_rate: int):
    try:
        import numpy.lib

        if not hasattr(numpy.lib, "pad"):  # pyvad (WARP-Q's VAD) calls numpy.lib.pad, removed in numpy 2
            numpy.lib.pad = np.pad
        with warnings.catch_warnings():  # webrtcvad's "pkg_resources is deprecated"
            warnings.simplefilter("ignore")
            from warpq.core import warpqMetric
    except ImportError as e:
        raise MetricUnavailable(f"WARP-Q is an optional extra: pip install 'samplerlab[warpq]' ({e})") from None
    if sample_rate not in _WARPQ:
        _WARPQ[sample_rate] = warpqMetric(sr=sample_rate, n_jobs=1)
    return _WARPQ[sample_rate]


def warpq(reference, estimate, sample_rate: int = 16000) -> float:
    """The raw WARP-Q score of ``estimate`` against ``reference`` (lower is better)."""
    ref, est = _np(reference), _np(estimate)
    peak = max(float(np.abs(ref).max(initial=0)), float(np.abs(est).max(initial=0)))
    if peak > 1:  # its VAD takes float audio in [-1, 1]; one gain for both keeps the comparison fair
        ref, est = ref / peak, est / peak
    result = _warpq_model(sample_rate).evaluate(ref, est, arr_sr=sample_rate)
    return float(result["raw_warpq_score"])


_UNCALIBRATED = (
    "{name}: {path} is not the DNS Challenge's P.835 model and has no calibration.json beside it; its raw "
    "outputs are not P.835 scores and samplerlab does not report them as such (add calibration.json, or use "
    "the official model: pip install speechmos)"
)

_FUNCS = {"pesq": pesq_wb, "stoi": stoi, "estoi": estoi, "si_sdr": si_sdr, "warpq": warpq}


def available_metrics(dnsmos=None) -> tuple[str, ...]:
    """The metrics that run here: the standard four, WARP-Q when its extra is installed, DNSMOS when a
    model (``metrics.dnsmos.DNSMOS``) is given."""
    out = list(SPEECH_METRICS)
    try:
        _warpq_model(16000)
        out.append("warpq")
    except MetricUnavailable:
        pass
    if dnsmos is not None:
        # P.835 scores only from a calibrated model: raw network outputs are never reported under their names
        out += ["dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"] if dnsmos.calibration is not None else []
        out += ["dnsmos_p808"] if dnsmos.p808 is not None else []
    return tuple(out)


def speech_metrics(
    reference, estimate, which=SPEECH_METRICS, sample_rate: int = 16000, dnsmos=None
) -> dict[str, float]:
    """The metrics ``which`` of ``estimate`` against ``reference``; ``dnsmos``: a ``metrics.dnsmos.DNSMOS``
    (the DNSMOS scores ignore the reference)."""
    bad = [m for m in which if m not in ALL_METRICS]
    if bad:
        raise ValueError(f"unknown speech metrics {bad}; valid: {', '.join(ALL_METRICS)}")
    out = {}
    dnsmos_scores = None
    for name in which:
        if name.startswith("dnsmos_"):
            if dnsmos is None:
                from .dnsmos import HOW_TO_GET

                raise MetricUnavailable(f"{name}: {HOW_TO_GET} (in the API: dnsmos=DNSMOS())")
            if name != "dnsmos_p808" and dnsmos.calibration is None:
                raise MetricUnavailable(_UNCALIBRATED.format(name=name, path=dnsmos.model_path))
            dnsmos_scores = dnsmos_scores or dnsmos(estimate, sample_rate).as_metrics()
            if name not in dnsmos_scores:
                raise MetricUnavailable(f"{name} needs model_v8.onnx (DNSMOS P.808) in the DNSMOS model folder")
            out[name] = dnsmos_scores[name]
            continue
        fn = _FUNCS[name]
        out[name] = fn(reference, estimate) if name == "si_sdr" else fn(reference, estimate, sample_rate)
    return out
