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

DNSMOS P.808 (Reddy, Gopal & Cutler, "DNSMOS: A Non-Intrusive Perceptual Objective Speech Quality Metric
to Evaluate Noise Suppressors", ICASSP 2021) predicts one overall MOS from a log-mel spectrogram. When
the folder also holds ``model_v8.onnx`` it is scored too (``p808``), on each window less its last 10 ms,
with features computed here: power STFT (321-point periodic Hann, hop 160, zero-padded centred frames),
120 Slaney-style mel bands (Slaney 1998: linear below 1 kHz, logarithmic above, area-normalised
triangles) from 0 to 8 kHz, dB relative to the window's maximum floored 80 dB below it, mapped by
(dB + 40) / 40; its output is reported as is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DNSMOS",
    "DNSMOSScores",
    "DNSMOS_METRICS",
    "WINDOW_SECONDS",
    "slaney_mel_filters",
    "p808_features",
    "bundled_model_dir",
    "OFFICIAL_P835_POLYNOMIALS",
]

WINDOW_SECONDS = 9.01
HOP_SECONDS = 1.0
SAMPLE_RATE = 16000
DNSMOS_METRICS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808")
_KEYS = ("sig", "bak", "ovrl")


@dataclass(frozen=True)
class DNSMOSScores:
    sig: float
    bak: float
    ovrl: float
    windows: int
    calibrated: bool
    p808: float | None = None  # when the folder has model_v8.onnx

    def as_metrics(self) -> dict[str, float]:
        out = {"dnsmos_sig": self.sig, "dnsmos_bak": self.bak, "dnsmos_ovrl": self.ovrl}
        if self.p808 is not None:
            out["dnsmos_p808"] = self.p808
        return out


def _hz_to_mel(f):
    """Slaney's mel scale: 3 mels per 200 Hz below 1 kHz, then logarithmic (27 mels per factor 6.4)."""
    f = np.asarray(f, dtype=np.float64)
    step, f_break, m_break = 200.0 / 3, 1000.0, 15.0
    log_step = np.log(6.4) / 27.0
    return np.where(f < f_break, f / step, m_break + np.log(np.maximum(f, 1e-12) / f_break) / log_step)


def _mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    step, f_break, m_break = 200.0 / 3, 1000.0, 15.0
    log_step = np.log(6.4) / 27.0
    return np.where(m < m_break, m * step, f_break * np.exp(log_step * (m - m_break)))


def slaney_mel_filters(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None):
    """(n_mels, n_fft // 2 + 1) triangular filters on mel-spaced centres, each of unit area in Hz
    (scaled by 2 / bandwidth)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    bins = np.arange(n_fft // 2 + 1) * sample_rate / n_fft  # the FFT bins (odd n_fft: not up to Nyquist)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))
    lower = (bins[None, :] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    upper = (edges[2:, None] - bins[None, :]) / (edges[2:] - edges[1:-1])[:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


_P808 = dict(n_fft=321, hop=160, n_mels=120)


def p808_features(wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(frames, 120) scaled log-mel features of one window for the P.808 model (module docstring)."""
    import torch

    n_fft, hop = _P808["n_fft"], _P808["hop"]
    x = torch.as_tensor(np.asarray(wav, dtype=np.float64))
    spec = torch.stft(
        x,
        n_fft,
        hop,
        window=torch.hann_window(n_fft, periodic=True, dtype=torch.float64),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    power = spec.abs().pow(2).numpy()
    mel = slaney_mel_filters(sample_rate, n_fft, _P808["n_mels"]) @ power
    db = 10 * np.log10(np.maximum(mel, 1e-10))
    db = np.maximum(db, db.max() - 80.0) - 10 * np.log10(max(float(mel.max()), 1e-10))
    return ((db + 40.0) / 40.0).T.astype(np.float32)


def windows(wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> list[np.ndarray]:
    """The 9.01 s windows of ``wav`` as the DNS Challenge's scoring script takes them: a clip shorter than one
    window is doubled (the whole clip appended to itself) until it is at least one window long; then
    floor(seconds) - 9.01 + 1 windows (truncated toward 0) start at whole seconds. A 3 s clip thus becomes 12 s
    and three windows, not one window of its tiling. The window ends are computed as int((i + 9.01) * 16000) as the script does, which rounds some down by one
    sample; those windows are one sample short and, as in the script, skipped (a 20 s clip gives 7 of its 11)."""
    length = int(WINDOW_SECONDS * sample_rate)
    if wav.size == 0:
        raise ValueError("DNSMOS: the recording is empty")
    while wav.size < length:
        wav = np.concatenate([wav, wav])
    hops = int(np.floor(wav.size / sample_rate) - WINDOW_SECONDS) + 1
    hop = int(HOP_SECONDS * sample_rate)
    out = [wav[int(i * hop) : int((i + WINDOW_SECONDS) * hop)] for i in range(hops)]
    return [w for w in out if w.size >= length]


# The P.835 model of the DNS Challenge (sig_bak_ovr.onnx, as speechmos ships it) and the polynomials that map its
# outputs to the listening-test scale, from the challenge's scoring script (highest degree first); a model file
# with this SHA-256 is calibrated with them without a calibration.json.
OFFICIAL_P835_SHA256 = "269fbebdb513aa23cddfbb593542ecc540284a91849ac50516870e1ac78f6edd"
OFFICIAL_P835_POLYNOMIALS = {
    "sig": [-0.08397278, 1.22083953, 0.0052439],
    "bak": [-0.13166888, 1.60915514, -0.39604546],
    "ovrl": [-0.06766283, 1.11546468, 0.04602535],
}


def bundled_model_dir() -> Path | None:
    """The DNS Challenge models shipped by the ``speechmos`` package (``pip install speechmos``), found without
    importing it (it imports librosa); None when it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("speechmos")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "dnsmos_models"
    return folder if (folder / "sig_bak_ovr.onnx").is_file() else None


HOW_TO_GET = (
    "the dnsmos_* metrics need the DNS Challenge's models: pip install speechmos (it ships them; nothing is "
    "downloaded at run time), or give a folder with sig_bak_ovr.onnx (dnsmos = 'DIR', --dnsmos DIR)"
)


class DNSMOS:
    """DNSMOS P.835 from a user-supplied model folder (module docstring). ``threads``: onnxruntime's
    intra-op threads (1 by default: the metric runs beside other work on few cores)."""

    def __init__(self, model_dir: str | Path | None = None, threads: int = 1):
        try:
            import onnxruntime as ort
        except ImportError:
            from .speech import MetricUnavailable

            raise MetricUnavailable(
                "DNSMOS needs onnxruntime: pip install onnxruntime (or samplerlab[speech])"
            ) from None
        if model_dir is None:
            model_dir = bundled_model_dir()
            if model_dir is None:
                from .speech import MetricUnavailable

                raise MetricUnavailable(HOW_TO_GET)
        folder = Path(model_dir)
        if not folder.is_dir():
            raise ValueError(f"{folder}: no such DNSMOS model folder (it should hold sig_bak_ovr.onnx)")
        model = folder / "sig_bak_ovr.onnx"
        if not model.is_file():
            found = sorted(folder.glob("*.onnx"))
            if len(found) != 1:
                raise ValueError(
                    f"{folder}: no sig_bak_ovr.onnx, and {len(found)} other .onnx files "
                    f"({', '.join(p.name for p in found) or 'none'}); which is the P.835 model?"
                )
            model = found[0]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.model_path = model
        self.p808 = None
        if (folder / "model_v8.onnx").is_file() and model.name != "model_v8.onnx":
            self.p808 = ort.InferenceSession(str(folder / "model_v8.onnx"), options, providers=["CPUExecutionProvider"])
        self.calibration = self._calibration(folder / "calibration.json")
        if self.calibration is None and _sha256(model) == OFFICIAL_P835_SHA256:
            self.calibration = {k: np.asarray(v) for k, v in OFFICIAL_P835_POLYNOMIALS.items()}

    @staticmethod
    def _calibration(path: Path) -> dict[str, np.ndarray] | None:
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text())
            cal = {k: np.asarray(raw[k], dtype=np.float64) for k in _KEYS}
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f'{path}: expected {{"sig": [...], "bak": [...], "ovrl": [...]}} '
                f"polynomial coefficients, highest degree first ({e})"
            ) from None
        for k, c in cal.items():
            if c.ndim != 1 or c.size == 0 or not np.isfinite(c).all():
                raise ValueError(f"{path}: {k!r} must be a non-empty list of numbers, got {raw[k]!r}")
        return cal

    def __call__(self, wav, sample_rate: int = SAMPLE_RATE) -> DNSMOSScores:
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"DNSMOS runs at {SAMPLE_RATE} Hz, got {sample_rate} (resample first)")
        from .speech import _np

        segs = windows(_np(wav).astype(np.float32), sample_rate)
        raw, p808 = [], []
        for seg in segs:
            out = np.asarray(self.session.run(None, {self.input_name: seg[np.newaxis, :]})[0], dtype=np.float64)
            if out.size != 3:
                raise ValueError(f"{self.model_path}: expected three outputs (SIG, BAK, OVRL), got shape {out.shape}")
            raw.append(out.reshape(3))
            if self.p808 is not None:
                feats = p808_features(seg[: -_P808["hop"]], sample_rate)[np.newaxis]
                p808.append(
                    float(np.asarray(self.p808.run(None, {self.p808.get_inputs()[0].name: feats})[0]).reshape(-1)[0])
                )
        raw = np.asarray(raw)
        if self.calibration is not None:  # each window mapped, then averaged (as the challenge's script does)
            raw = np.stack([np.polyval(self.calibration[k], raw[:, j]) for j, k in enumerate(_KEYS)], axis=1)
        scores = raw.mean(axis=0)
        return DNSMOSScores(
            *map(float, scores),
            windows=len(segs),
            calibrated=self.calibration is not None,
            p808=float(np.mean(p808)) if p808 else None,
        )


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
