"""DNSMOS through onnxruntime on a model folder the test writes (a tiny ONNX graph with known outputs), and
WARP-Q when its optional extra is installed (its absence is reported, not an error of the library)."""

import json

import numpy as np
import pytest

from samplerlab.metrics.dnsmos import DNSMOS, WINDOW_SECONDS, p808_features, slaney_mel_filters, windows
from samplerlab.metrics.speech import MetricUnavailable, available_metrics, speech_metrics

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _write_model(folder, name="sig_bak_ovr.onnx"):
    """A P.835-shaped model: waveform (1, n) -> (1, 3) = [mean x^2, mean |x|, max x]."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [1, None])
    y = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3])
    nodes = [helper.make_node("Mul", ["input_1", "input_1"], ["sq"]),
             helper.make_node("ReduceMean", ["sq"], ["a"], axes=[1], keepdims=1),
             helper.make_node("Abs", ["input_1"], ["ab"]),
             helper.make_node("ReduceMean", ["ab"], ["b"], axes=[1], keepdims=1),
             helper.make_node("ReduceMax", ["input_1"], ["c"], axes=[1], keepdims=1),
             helper.make_node("Concat", ["a", "b", "c"], ["scores"], axis=1)]
    model = helper.make_model(helper.make_graph(nodes, "p835", [x], [y]), opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / name))
    return folder


def _write_p808(folder):
    """A P.808-shaped model: features (1, frames, 120) -> (1, 1), their mean."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [1, None, 120])
    y = helper.make_tensor_value_info("mos", TensorProto.FLOAT, [1, 1])
    nodes = [helper.make_node("ReduceMean", ["input_1"], ["m"], axes=[1, 2], keepdims=0),
             helper.make_node("Reshape", ["m", "shape"], ["mos"])]
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, 1])
    graph = helper.make_graph(nodes, "p808", [x], [y], initializer=[shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model_v8.onnx"))


def _expected(wav):
    segs = windows(wav.astype(np.float32))
    return np.mean([[np.mean(s.astype(np.float64) ** 2), np.mean(np.abs(s)), s.max()] for s in segs], axis=0), len(segs)


def test_windows_follow_the_protocol():
    """The DNS Challenge script's windows: 9.01 s at a 1 s hop, a short clip doubled until it is a window long,
    window ends int((i + 9.01) * 16000) (some round down a sample and are skipped, as there)."""
    rate = 16000
    n = int(WINDOW_SECONDS * rate)
    ends = [int((i + WINDOW_SECONDS) * rate) for i in range(11)]  # 11 windows fit 20 s; 4 ends round down
    assert len(windows(np.ones(20 * rate))) == sum(e - i * rate >= n for i, e in enumerate(ends)) == 7
    short = np.arange(3 * rate, dtype=np.float64)
    segs = windows(short)  # doubled to 6 s, then 12 s: three windows
    assert len(segs) == 3 and all(s.size == n for s in segs)
    assert segs[0][3 * rate] == 0 and segs[1][0] == short[rate] and segs[0][-1] == short[(n - 1) % short.size]
    with pytest.raises(ValueError, match="empty"):
        windows(np.zeros(0))


def test_dnsmos_runs_the_model_over_windows_and_calibrates(tmp_path):
    folder = _write_model(tmp_path / "dnsmos")
    g = np.random.default_rng(0)
    wav = 0.1 * g.standard_normal(12 * 16000)
    want, count = _expected(wav)
    scores = DNSMOS(folder)(wav)
    assert not scores.calibrated and scores.windows == count == 3
    assert np.allclose([scores.sig, scores.bak, scores.ovrl], want, rtol=1e-5)
    # the polynomials of calibration.json map raw outputs to MOS
    cal = {"sig": [2.0, 1.0], "bak": [1.0, 0.0, 3.0], "ovrl": [4.0]}
    (folder / "calibration.json").write_text(json.dumps(cal))
    scores = DNSMOS(folder)(wav)
    assert scores.calibrated
    # each window mapped, then averaged (the script's order): for the quadratic one that is not the map of the mean
    per_window = [np.mean(np.abs(s.astype(np.float64))) for s in windows(wav.astype(np.float32))]
    bak = np.mean([b**2 + 3 for b in per_window])
    assert np.allclose([scores.sig, scores.bak, scores.ovrl], [2 * want[0] + 1, bak, 4.0], rtol=1e-5)
    m = speech_metrics(wav, wav, ["dnsmos_ovrl", "si_sdr"], dnsmos=DNSMOS(folder))
    assert m["dnsmos_ovrl"] == pytest.approx(4.0) and m["si_sdr"] == float("inf")
    assert "dnsmos_bak" in available_metrics(DNSMOS(folder))


def test_dnsmos_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="no such DNSMOS model folder"):
        DNSMOS(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no sig_bak_ovr.onnx, and 0 other"):
        DNSMOS(tmp_path / "empty")
    folder = _write_model(tmp_path / "other", name="p835.onnx")  # one other .onnx file: used
    assert DNSMOS(folder).model_path.name == "p835.onnx"
    (folder / "calibration.json").write_text(json.dumps({"sig": [1.0]}))
    with pytest.raises(ValueError, match="calibration.json: expected"):
        DNSMOS(folder)
    with pytest.raises(MetricUnavailable, match="pip install speechmos"):
        speech_metrics(np.ones(100), np.ones(100), ["dnsmos_sig"])
    with pytest.raises(MetricUnavailable, match="raw outputs are not P.835 scores"):  # never shown as DNSMOS
        speech_metrics(np.ones(100), np.ones(100), ["dnsmos_sig"], dnsmos=DNSMOS(_write_model(tmp_path / "raw")))
    with pytest.raises(ValueError, match="at 16000 Hz"):
        DNSMOS(_write_model(tmp_path / "ok"))(np.ones(100), sample_rate=8000)


def test_warpq_scores_or_says_how_to_install():
    g = np.random.default_rng(0)
    t = np.arange(3 * 16000) / 16000
    clean = np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 2 * t) > 0) + 0.01 * g.standard_normal(t.size)
    noisy = clean + 0.3 * g.standard_normal(t.size)
    try:
        m = speech_metrics(clean, noisy, ["warpq"])
    except MetricUnavailable as e:
        assert "samplerlab[warpq]" in str(e)
        assert "warpq" not in available_metrics()
        return
    assert speech_metrics(clean, clean, ["warpq"])["warpq"] < m["warpq"]  # lower is better
    assert "warpq" in available_metrics()


def test_speech_eval_command_reports_dnsmos_and_says_what_it_skipped(tmp_path, capsys):
    import soundfile as sf

    from samplerlab.cli import main

    g = np.random.default_rng(1)
    for folder in ("clean", "noisy"):
        (tmp_path / folder).mkdir()
    t = np.arange(2 * 16000) / 16000
    clean = 0.5 * np.sin(2 * np.pi * 200 * t) * (np.sin(2 * np.pi * 1.5 * t) > 0)
    sf.write(tmp_path / "clean" / "a.wav", clean, 16000)
    sf.write(tmp_path / "noisy" / "a.wav", clean + 0.05 * g.standard_normal(t.size), 16000)
    model = _write_model(tmp_path / "dnsmos")
    args = ["speech", "eval", "--clean", str(tmp_path / "clean"), "--noisy", str(tmp_path / "noisy"),
            "--metrics", "si_sdr,dnsmos_ovrl", "--dnsmos", str(model), "--out", str(tmp_path / "m.json")]
    assert main(args) == 1  # an uncalibrated model's raw outputs are not reported as DNSMOS scores
    assert "not P.835 scores" in capsys.readouterr().err
    (model / "calibration.json").write_text(json.dumps({"sig": [1.0, 0.0], "bak": [1.0, 0.0], "ovrl": [2.0, 1.0]}))
    assert main(args) == 0
    assert "| noisy (1 files) |" in capsys.readouterr().out
    got = json.loads((tmp_path / "m.json").read_text())["noisy"]["dnsmos_ovrl"]["mean"]
    noisy = sf.read(tmp_path / "noisy" / "a.wav", dtype="float32")[0]
    assert got == pytest.approx(2 * _expected(noisy)[0][2] + 1, rel=1e-5)  # from the max of each window
    assert main(["speech", "eval", "--clean", str(tmp_path / "clean"), "--noisy", str(tmp_path / "noisy")]) == 0
    out = capsys.readouterr().out
    from samplerlab.metrics.dnsmos import bundled_model_dir

    if bundled_model_dir() is None:
        assert "DNSMOS skipped: pip install speechmos" in out
    else:  # the models speechmos ships are found and used without --dnsmos
        assert "DNSMOS OVRL (P.835)" in out or "dnsmos_ovrl" in out


def test_slaney_mel_filters_and_p808_features():
    rate, n_fft = 16000, 321
    assert slaney_mel_filters(rate, n_fft, 120).shape == (120, 161)
    fine = slaney_mel_filters(rate, 8192, 40)  # fine bins: each triangle has area 1 in Hz (Slaney's norm)
    assert (fine >= 0).all() and np.allclose(fine.sum(1) * rate / 8192, 1.0, rtol=0.02)
    centres = (fine * np.arange(4097)).sum(1) / fine.sum(1) * rate / 8192
    spacing = np.diff(centres)
    below = centres[1:] < 900
    assert np.allclose(spacing[below], spacing[below][0], rtol=0.02)  # linear below 1 kHz
    assert np.all(np.diff(spacing[centres[1:] > 1200]) > 0)  # widening above
    g = np.random.default_rng(0)
    feats = p808_features(0.1 * g.standard_normal(144000))
    assert feats.shape == (900, 120) and feats.max() == pytest.approx(1.0) and feats.min() >= -1.0 - 1e-6
    try:
        import librosa
    except ImportError:
        return
    x = (0.1 * g.standard_normal(20000)).astype(np.float32)
    mel = librosa.feature.melspectrogram(y=x, sr=rate, n_fft=n_fft, hop_length=160, n_mels=120)
    want = ((librosa.power_to_db(mel, ref=np.max) + 40) / 40).T
    assert np.allclose(p808_features(x), want, atol=1e-5)


def test_dnsmos_scores_p808_when_its_model_is_there(tmp_path):
    folder = _write_model(tmp_path / "dnsmos")
    wav = 0.1 * np.random.default_rng(2).standard_normal(11 * 16000)
    assert DNSMOS(folder)(wav).p808 is None and "dnsmos_p808" not in available_metrics(DNSMOS(folder))
    with pytest.raises(MetricUnavailable, match="model_v8.onnx"):
        speech_metrics(wav, wav, ["dnsmos_p808"], dnsmos=DNSMOS(folder))
    _write_p808(folder)
    scores = DNSMOS(folder)(wav)
    segs = windows(wav.astype(np.float32))
    want = np.mean([p808_features(s[:-160]).mean() for s in segs])
    assert scores.windows == 2 and scores.p808 == pytest.approx(want, rel=1e-5)
    assert speech_metrics(wav, wav, ["dnsmos_p808"], dnsmos=DNSMOS(folder))["dnsmos_p808"] == pytest.approx(want, rel=1e-5)
