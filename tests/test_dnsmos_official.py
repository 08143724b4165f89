"""DNSMOS as the DNS Challenge scores it: samplerlab's DNSMOS on the models the speechmos package ships agrees
per file with speechmos's own scoring (the challenge's script: windows, P.835 polynomials per window, P.808
log-mel features from librosa) within 0.01 on short, long and near-silent clips."""

import numpy as np
import pytest

from samplerlab.metrics.dnsmos import DNSMOS, bundled_model_dir

pytest.importorskip("onnxruntime")
pytest.importorskip("librosa", reason="speechmos's scoring needs librosa (the test extra installs it)")
official = pytest.importorskip("speechmos.dnsmos", reason="the speechmos package is not installed")


def _speechy(seconds, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    voiced = np.sin(2 * np.pi * 180 * t) + 0.5 * np.sin(2 * np.pi * 360 * t)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t)
    return (0.25 * voiced * envelope + 0.03 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("label, clip", [
    ("2 s", _speechy(2.0)),
    ("3.3 s", _speechy(3.3, 1)),
    ("12.3 s", _speechy(12.3, 2)),
    ("near-silent", (1e-4 * np.random.default_rng(3).standard_normal(40000)).astype(np.float32)),
])
def test_per_file_agreement_with_the_official_scoring(label, clip):
    assert bundled_model_dir() is not None
    ours = DNSMOS()(clip)
    ref = official.run(clip, 16000)
    assert ours.calibrated
    for key, value in (("sig_mos", ours.sig), ("bak_mos", ours.bak), ("ovrl_mos", ours.ovrl), ("p808_mos", ours.p808)):
        assert abs(float(ref[key]) - value) < 0.01, (label, key, float(ref[key]), value)
