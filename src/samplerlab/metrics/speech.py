"""Speech quality and intelligibility metrics of an estimate against its clean reference (16 kHz).

- SI-SDR (Le Roux et al. 2019, eq. 2): 10 log10(||a s||^2 / ||a s - s_hat||^2), a = <s_hat, s> / ||s||^2.
- Wideband PESQ (ITU-T P.862.2) through the ``pesq`` package.
- STOI (Taal et al. 2011) and extended STOI (Jensen & Taal 2016) through ``pystoi``.
WARP-Q and DNSMOS are not wired in yet (see the speech issue).

``speech_metrics`` returns the requested ones as a dict; a metric whose package is missing raises
an error naming the package to install (``pip install samplerlab[speech]``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["si_sdr", "pesq_wb", "stoi", "estoi", "speech_metrics", "SPEECH_METRICS", "MetricUnavailable"]

SPEECH_METRICS = ("pesq", "stoi", "estoi", "si_sdr")


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
    return float(pesq(sample_rate, _np(reference), _np(estimate), "wb"))


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


_FUNCS = {"pesq": pesq_wb, "stoi": stoi, "estoi": estoi, "si_sdr": si_sdr}


def speech_metrics(reference, estimate, which=SPEECH_METRICS, sample_rate: int = 16000) -> dict[str, float]:
    bad = [m for m in which if m not in _FUNCS]
    if bad:
        raise ValueError(f"unknown speech metrics {bad}; valid: {', '.join(_FUNCS)}")
    out = {}
    for name in which:
        fn = _FUNCS[name]
        out[name] = fn(reference, estimate) if name == "si_sdr" else fn(reference, estimate, sample_rate)
    return out
