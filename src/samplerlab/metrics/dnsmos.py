"""DNSMOS P.835: a non-intrusive estimate of the ITU-T P.835 ratings of a recording, from the recording alone
(Reddy, Gopal & Cutler, "DNSMOS P.835: A Non-Intrusive Perceptual Objective Speech Quality Metric to
Evaluate Noise Suppressors", ICASSP 2022).

The network predicts three opinion scores from the waveform: SIG (speech signal distortion), BAK
(background noise intrusiveness) and OVRL (overall quality), each on the 1-5 scale. samplerlab ships no
weights and downloads nothing: give the folder that holds the challenge's ONNX model (``sig_bak_ovr.onnx``,
or any single ``.onnx`` file with one waveform input of shape (1, samples) and an output of three scores).

Protocol (as the paper's evaluation does): 16 kHz audio; windows of 9.01 s with a hop of 1 s; a clip
shorter than one window is tiled (repeated) to exactly one window; the scores are averaged over the windows.

The network's raw outputs are mapped to the MOS scale by a per-score polynomial fitted to the listening
tests. Those coefficients are not part of the paper; put them beside the model as ``calibration.json``::

    {"sig": [c_n, ..., c_1, c_0], "bak": [...], "ovrl": [...]}

(highest degree first, as ``numpy.polyval`` takes them). Without the file the raw outputs are reported
and ``DNSMOSScores.calibrated`` is False; ``samplerlab speech eval`` says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DNSMOS", "DNSMOSScores", "DNSMOS_METRICS", "WINDOW_SECONDS"]

WINDOW_SECONDS = 9.01
HOP_SECONDS = 1.0
SAMPLE_RATE = 16000
DNSMOS_METRICS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")
_KEYS = ("sig", "bak", "ovrl")


@dataclass(frozen=True)
class DNSMOSScores:
    sig: float
    bak: float
    ovrl: float
    windows: int
    calibrated: bool

    def as_metrics(self) -> dict[str, float]:
        return {"dnsmos_sig": self.sig, "dnsmos_bak": self.bak, "dnsmos_ovrl": self.ovrl}


def windows(wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> list[np.ndarray]:
    """The 9.01 s windows of ``wav`` at a 1 s hop; a shorter clip is tiled to exactly one window."""
    length = math.ceil(WINDOW_SECONDS * sample_rate)
    if wav.size == 0:
        raise ValueError("DNSMOS: the recording is empty")
    if wav.size < length:
        wav = np.tile(wav, math.ceil(length / wav.size))[:length]
    hop = int(HOP_SECONDS * sample_rate)
    starts = range(0, wav.size - length + 1, hop)
    return [wav[s : s + length] for s in starts]


class DNSMOS:
    """DNSMOS P.835 from a user-supplied model folder (module docstring). ``threads``: onnxruntime's
    intra-op threads (1 by default: the metric runs beside other work on few cores)."""

    def __init__(self, model_dir: str | Path, threads: int = 1):
        try:
            import onnxruntime as ort
        except ImportError:
            from .speech import MetricUnavailable

            raise MetricUnavailable("DNSMOS needs onnxruntime: pip install onnxruntime (or samplerlab[speech])") from None
        folder = Path(model_dir)
        if not folder.is_dir():
            raise ValueError(f"{folder}: no such DNSMOS model folder (it should hold sig_bak_ovr.onnx)")
        model = folder / "sig_bak_ovr.onnx"
        if not model.is_file():
            found = sorted(folder.glob("*.onnx"))
            if len(found) != 1:
                raise ValueError(f"{folder}: no sig_bak_ovr.onnx, and {len(found)} other .onnx files "
                                 f"({', '.join(p.name for p in found) or 'none'}); which is the P.835 model?")
            model = found[0]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.model_path = model
        self.calibration = self._calibration(folder / "calibration.json")

    @staticmethod
    def _calibration(path: Path) -> dict[str, np.ndarray] | None:
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text())
            cal = {k: np.asarray(raw[k], dtype=np.float64) for k in _KEYS}
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: expected {{\"sig\": [...], \"bak\": [...], \"ovrl\": [...]}} "
                             f"polynomial coefficients, highest degree first ({e})") from None
        for k, c in cal.items():
            if c.ndim != 1 or c.size == 0 or not np.isfinite(c).all():
                raise ValueError(f"{path}: {k!r} must be a non-empty list of numbers, got {raw[k]!r}")
        return cal

    def __call__(self, wav, sample_rate: int = SAMPLE_RATE) -> DNSMOSScores:
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"DNSMOS runs at {SAMPLE_RATE} Hz, got {sample_rate} (resample first)")
        from .speech import _np

        segs = windows(_np(wav).astype(np.float32), sample_rate)
        raw = []
        for seg in segs:
            out = np.asarray(self.session.run(None, {self.input_name: seg[np.newaxis, :]})[0], dtype=np.float64)
            if out.size != 3:
                raise ValueError(f"{self.model_path}: expected three outputs (SIG, BAK, OVRL), got shape {out.shape}")
            raw.append(out.reshape(3))
        scores = np.mean(raw, axis=0)
        if self.calibration is not None:
            scores = np.array([np.polyval(self.calibration[k], s) for k, s in zip(_KEYS, scores)])
        return DNSMOSScores(*map(float, scores), windows=len(segs), calibrated=self.calibration is not None)
