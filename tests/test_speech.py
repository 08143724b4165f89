"""Speech enhancement: the synthetic corpus, paired loaders, the Gaussian-prior model against Monte Carlo,
posterior sampling through the OUVE residual with any solver, speech metrics, and the commands."""

import json
import math
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from samplerlab.data import DataError
from samplerlab.grids import uniform_time
from samplerlab.metrics.speech import available_metrics, estoi, pesq_wb, si_sdr, speech_metrics, stoi
from samplerlab.noise import SampleNoise
from samplerlab.processes import OUVE
from samplerlab.sampling import sample
from samplerlab.solvers import make_solver
from samplerlab.speech.corpus import CorpusConfig, coloured_noise, make_corpus, mix_at_snr
from samplerlab.speech.data import find_pairs, find_speech_pairs, find_voicebank_pairs, load_pair
from samplerlab.speech.gaussian import GaussianSpeechPrior, fit_gaussian_prior

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (.ci/run installs it: apt-get install espeak-ng)")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    root = tmp_path_factory.mktemp("corpus")
    make_corpus(root, CorpusConfig(train=6, valid=1, test=3, seed=3))
    return root


# -- corpus -------------------------------------------------------------------------------------------

@needs_espeak
def test_corpus_layout_determinism_and_snr(corpus, tmp_path):
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert len(manifest["files"]) == 10
    pairs = find_pairs(corpus, "train")
    assert [p.name for p in pairs] == [f"train_{i:05d}" for i in range(6)]
    for name, meta in manifest["files"].items():
        clean, noisy = load_pair(next(p for p in find_pairs(corpus, meta["split"]) if p.name == name))
        snr = 10 * math.log10(float(clean.double().pow(2).mean()) / float((noisy - clean).double().pow(2).mean()))
        assert snr == pytest.approx(meta["snr_db"], abs=0.2)  # 16-bit rounding aside
        assert 0 <= meta["snr_db"] <= 20 and meta["noise"] in ("white", "pink", "brown", "babble")
        assert float(noisy.abs().max()) == pytest.approx(0.9, abs=1e-3)
    # the same seed gives the same files; a partial corpus resumes
    again = tmp_path / "again"
    make_corpus(again, CorpusConfig(train=2, valid=0, test=0, seed=3))
    for i in range(2):
        name = f"train/noisy/train_{i:05d}.wav"
        assert (again / name).read_bytes() == (corpus / name).read_bytes()
    with pytest.raises(ValueError, match="other settings"):
        make_corpus(again, CorpusConfig(train=2, valid=0, test=0, seed=4))


def test_coloured_noise_spectral_slopes():
    g = np.random.default_rng(0)
    n = 2**16
    f = np.fft.rfftfreq(n)[1:]
    for kind, slope in (("white", 0.0), ("pink", -1.0), ("brown", -2.0)):
        x = coloured_noise(n, kind, g)
        assert x.std() == pytest.approx(1.0)
        psd = np.abs(np.fft.rfft(x))[1:] ** 2
        band = (f > 1e-3) & (f < 0.3)
        fitted = np.polyfit(np.log(f[band]), np.log(psd[band]), 1)[0]
        assert fitted == pytest.approx(slope, abs=0.1), kind


def test_mix_at_snr_is_exact():
    g = np.random.default_rng(1)
    clean, noise = g.standard_normal(1000), 3 * g.standard_normal(1000)
    for snr in (0.0, 7.5, 20.0):
        scaled = mix_at_snr(clean, noise, snr)
        assert 10 * np.log10(np.mean(clean**2) / np.mean(scaled**2)) == pytest.approx(snr)


def test_bad_corpus_settings():
    with pytest.raises(ValueError, match="unknown noise types \\['rain'\\]"):
        CorpusConfig(noise_types=("white", "rain"))


# -- loaders ------------------------------------------------------------------------------------------

def _write(path, seconds=0.1, rate=16000, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    x = 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * rate))
    sf.write(str(path), x, rate)
    return x


def test_voicebank_layout_pairs_and_resamples(tmp_path):
    for i in range(2):
        _write(tmp_path / "clean_testset_wav" / f"p232_00{i}.wav", rate=48000, seed=i)
        _write(tmp_path / "noisy_testset_wav" / f"p232_00{i}.wav", rate=48000, seed=10 + i)
    pairs = find_speech_pairs(tmp_path, "test")
    assert [p.name for p in pairs] == ["p232_000", "p232_001"] and pairs == find_voicebank_pairs(tmp_path, "test")
    clean, noisy = load_pair(pairs[0])
    assert clean.shape == noisy.shape == (1600,)  # 0.1 s at 48 kHz -> 16 kHz
    with pytest.raises(DataError, match="no VoiceBank-DEMAND train folder"):
        find_voicebank_pairs(tmp_path, "train")


def test_unpaired_unreadable_and_mismatched_files_are_named(tmp_path):
    _write(tmp_path / "train" / "clean" / "a.wav")
    _write(tmp_path / "train" / "noisy" / "a.wav")
    _write(tmp_path / "train" / "noisy" / "b.wav")
    with pytest.raises(DataError, match="noisy/b.wav has no clean partner"):
        find_pairs(tmp_path, "train")
    (tmp_path / "train" / "noisy" / "b.wav").unlink()
    (tmp_path / "train" / "clean" / "a.wav").write_bytes(b"not audio")
    with pytest.raises(DataError, match="a.wav: not a readable audio file"):
        load_pair(find_pairs(tmp_path, "train")[0])
    _write(tmp_path / "train" / "clean" / "a.wav", seconds=0.2)
    with pytest.raises(DataError, match="differ in length"):
        load_pair(find_pairs(tmp_path, "train")[0])
    with pytest.raises(DataError, match="no such folder"):
        find_pairs(tmp_path, "test")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        find_pairs(tmp_path, "dev")


# -- the Gaussian-prior model -----------------------------------------------------------------------------

F, T = 5, 7
VX = torch.tensor([0.5, 0.2, 0.05, 0.01, 0.004], dtype=torch.float64)
VN = torch.tensor([0.02, 0.05, 0.05, 0.03, 0.01], dtype=torch.float64)


def _draw(n, var, g):
    """n spectrograms of CN(0, var(f)) coefficients in [Re, Im] channels: (n, 2, F, T)."""
    return torch.randn(n, 2, F, T, generator=g, dtype=torch.float64) * (var / 2).sqrt().reshape(1, 1, F, 1)


def test_stationary_posterior_mean_and_denoiser_against_monte_carlo():
    prior = GaussianSpeechPrior(VX, VN, mode="stationary")
    g = torch.Generator().manual_seed(0)
    n = 40000
    x, noise = _draw(n, VX, g), _draw(n, VN, g)
    y = x + noise
    # E[x | y] = W y: the least-squares slope of x on y, per bin
    slope = (x * y).sum((0, 1, 3)) / (y * y).sum((0, 1, 3))
    assert torch.allclose(slope, prior.gain, atol=0.01)
    assert torch.allclose(prior.posterior_mean(y), prior.gain.reshape(F, 1) * y)
    # D of the residual u_0 = x - y is the MMSE estimate at every sigma: its error is (P/2) s^2 / (P/2 + s^2)
    u0 = x - y
    half_p = (prior.posterior_var / 2).reshape(1, 1, F, 1)
    for sigma in (0.01, 0.1, 1.0):
        u_hat = u0 + sigma * torch.randn(u0.shape, generator=g, dtype=torch.float64)
        err = (prior(u_hat, sigma, y=y) - u0).pow(2).mean((0, 1, 3))
        want = (half_p * sigma**2 / (half_p + sigma**2)).reshape(F)
        assert torch.allclose(err, want, rtol=0.05), (sigma, err, want)
        worse = (0.9 * prior(u_hat, sigma, y=y) - u0).pow(2).mean((0, 1, 3))
        assert bool((worse > err).all())


def test_adaptive_prior_is_the_power_subtraction_estimate():
    prior = GaussianSpeechPrior(VX, VN, mode="adaptive", smooth_frames=1, smooth_bins=1, floor=1e-3)
    y = torch.zeros(1, 2, F, T, dtype=torch.float64)
    y[0, 0, :, 3] = 1.0  # one loud frame
    vx, vn = prior.variances(y)
    assert torch.allclose(vx[0, :, 3], 1.0 - VN)
    assert torch.allclose(vx[0, :, 0], 1e-3 * VN)  # floor in silent frames
    # three-frame smoothing spreads the loud frame's power to its neighbours
    vx3, _ = GaussianSpeechPrior(VX, VN, mode="adaptive", smooth_frames=3, smooth_bins=1).variances(y)
    assert torch.allclose(vx3[0, :, 2], 1 / 3 - VN)
    with pytest.raises(ValueError, match="unknown Gaussian prior 'wiener'"):
        GaussianSpeechPrior(VX, VN, mode="wiener")


def test_utterance_noise_is_the_mean_power_of_the_quietest_frames():
    prior = GaussianSpeechPrior(mode="utterance", noise_quantile=0.2)
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 2, F, 10, generator=g, dtype=torch.float64)
    y[:, :, :, 2] *= 0.01  # the quietest frames: 2 and 7 (2 of 10 = the 20 % quantile)
    y[:, :, :, 7] *= 0.02
    y[1, :, :, 9] = 0.0  # a padded frame of recording 1 is not counted: 20 % of 9 frames rounds up to 2
    power = y[:, 0] ** 2 + y[:, 1] ** 2
    vn = prior.utterance_noise(power)
    assert vn.shape == (2, F, 1)
    for b in range(2):
        assert torch.allclose(vn[b, :, 0], power[b][:, [2, 7]].mean(1))
    # y alone decides the variances: the recording is one Gaussian model, recording by recording
    vx, vn_b = prior.variances(y)
    vx1, vn1 = prior.variances(y[1:])
    assert torch.equal(vx[1:], vx1) and torch.equal(vn_b[1:], vn1)
    with pytest.raises(ValueError, match="noise_quantile must be in"):
        GaussianSpeechPrior(mode="utterance", noise_quantile=0.0)
    with pytest.raises(ValueError, match="needs variances fitted"):
        GaussianSpeechPrior(mode="adaptive")
    with pytest.raises(ValueError, match="no fitted variances"):
        prior.save("unused.npz")


def test_denoiser_reuses_the_variances_of_the_same_y_only():
    prior = GaussianSpeechPrior(mode="utterance")
    g = torch.Generator().manual_seed(0)
    y = torch.randn(1, 2, F, 12, generator=g, dtype=torch.float64)
    u = torch.randn(y.shape, generator=g, dtype=torch.float64)
    first = prior(u, 0.1, y=y)
    assert torch.equal(prior(u, 0.1, y=y), first)
    y.mul_(3.0)  # modified in place: the cached variances must not be used
    assert torch.equal(prior(u, 0.1, y=y), GaussianSpeechPrior(mode="utterance")(u, 0.1, y=y))
    other = y.clone() * 0.5
    assert torch.equal(prior(u, 0.1, y=other), GaussianSpeechPrior(mode="utterance")(u, 0.1, y=other))


def test_utterance_noise_estimate_of_stationary_noise_with_intermittent_speech():
    """Noise CN(0, v_n(f)) in every frame, loud "speech" in 60 % of them: the estimate is the noise power,
    biased low only by picking the quietest noise frames (about -1.75 / sqrt(F) for the lowest decile)."""
    g = torch.Generator().manual_seed(0)
    bins, frames = 256, 400
    vn = torch.linspace(0.5, 2.0, bins, dtype=torch.float64) * 1e-3
    y = torch.randn(1, 2, bins, frames, generator=g, dtype=torch.float64) * (vn / 2).sqrt().reshape(1, 1, -1, 1)
    speech = torch.rand(frames, generator=g) < 0.6
    y[..., speech] += 0.2 * torch.randn(1, 2, bins, int(speech.sum()), generator=g, dtype=torch.float64)
    est = GaussianSpeechPrior(mode="utterance").utterance_noise(y[:, 0] ** 2 + y[:, 1] ** 2)[0, :, 0]
    ratio = est / vn
    assert 0.8 < float(ratio.mean()) < 1.0  # -1.75 / 16 = -11 % expected
    assert float(ratio.std()) < 0.25  # 40 frames per bin: relative s.e. 1 / sqrt(40) = 0.16


@pytest.mark.parametrize("solver, params, steps, final_denoise, rtol", [
    ("heun", {}, 200, False, 0.05),
    ("pc", {"predictor": "reverse-diffusion", "corrector": "none"}, 400, False, 0.05),
    ("pc", {"predictor": "reverse-diffusion", "corrector": "none"}, 400, True, 0.05),
    # SGMSE+'s corrector: unadjusted Langevin with step eps = (s sigma)^2 / 2 inflates a Gaussian's variance V
    # by 1 / (1 - eps / 2V) per step; over the grid that leaves +2 % to +10 % (the narrowest bin) here
    ("pc", {"predictor": "reverse-diffusion", "corrector": "annealed-langevin", "snr": 0.5}, 400, True, 0.15)])
def test_sampling_the_residual_recovers_the_gaussian_posterior(solver, params, steps, final_denoise, rtol):
    """Started from the true OUVE marginal at T, any solver's samples of u with the exact D, mapped back by
    x = u / s + y, have the posterior's mean W y and variance P / 2 per real component, plus sigma_end^2:
    SGMSE+'s grid stops at t_eps, where the residual noise level is s_e = sigma(t_eps) ~ 0.02. With the
    final denoising step (enhance's default) the output is D(x_{t_eps}), of variance (P/2)^2 / (P/2 + s_e^2)."""
    prior = GaussianSpeechPrior(VX, VN, mode="stationary")
    g = torch.Generator().manual_seed(1)
    n = 3000
    y = (_draw(1, VX, g) + _draw(1, VN, g)).expand(n, 2, F, T).contiguous()
    process = OUVE()
    grid = uniform_time(steps, process, final_zero=final_denoise)
    sig_T = float(grid[0])
    u0 = prior.posterior_mean(y) - y + (prior.posterior_var / 2).sqrt().reshape(1, 1, F, 1) * torch.randn(
        y.shape, generator=g, dtype=torch.float64)
    u_T = float(process.scale(sig_T)) * (u0 + sig_T * torch.randn(y.shape, generator=g, dtype=torch.float64))
    u = sample(prior, u_T, grid, make_solver(solver, **params), process=process,
               noise=SampleNoise(range(n), dtype=torch.float64), cond={"y": y}).x
    x = u / float(process.scale(float(grid[-1]))) + y
    want_mean = prior.posterior_mean(y)[0]
    half_p, s_e = prior.posterior_var / 2, float(grid[-2] if final_denoise else grid[-1])
    want = half_p**2 / (half_p + s_e**2) if final_denoise else half_p + s_e**2
    want_var = want.reshape(F, 1).expand(F, T)
    se = (want_var / n).sqrt()
    assert bool(((x.mean(0) - want_mean).abs() < 5 * se + 0.003).all())
    assert torch.allclose(x.var(0).mean((0, 2)), want_var[:, 0], rtol=rtol)


def test_prior_round_trip_and_errors(tmp_path):
    prior = GaussianSpeechPrior(VX, VN, frames=10, files=2)
    loaded = GaussianSpeechPrior.load(prior.save(tmp_path / "p.npz"))
    assert torch.equal(loaded.clean_var, VX) and loaded.frames == 10 and loaded.spec == prior.spec
    with pytest.raises(ValueError, match="no such Gaussian prior file"):
        GaussianSpeechPrior.load(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="positive"):
        GaussianSpeechPrior(VX, -VN)


@needs_espeak
def test_fitted_prior_has_one_variance_per_bin(corpus):
    prior = fit_gaussian_prior(find_pairs(corpus, "train"))
    assert prior.clean_var.shape == prior.noise_var.shape == (256,) and prior.files == 6
    assert bool((prior.gain > 0).all()) and bool((prior.gain < 1).all())


# -- metrics ------------------------------------------------------------------------------------------

def test_si_sdr_closed_form_and_invariance():
    g = np.random.default_rng(0)
    s = g.standard_normal(8000)
    e = g.standard_normal(8000)
    e -= np.dot(e, s) / np.dot(s, s) * s  # orthogonal to s
    e *= 0.1 * np.linalg.norm(s) / np.linalg.norm(e)  # 20 dB below
    assert si_sdr(s, s + e) == pytest.approx(20.0, abs=1e-9)
    assert si_sdr(s, 3.7 * (s + e)) == pytest.approx(20.0, abs=1e-9)  # scale invariant
    assert si_sdr(s, s) == math.inf
    with pytest.raises(ValueError, match="differ in length"):
        si_sdr(s, s[:10])


@needs_espeak
def test_pesq_and_stoi_rank_clean_above_noisy(corpus):
    clean, _ = load_pair(find_pairs(corpus, "test")[0])
    assert pesq_wb(clean, clean) > 4.5 and stoi(clean, clean) > 0.99 and estoi(clean, clean) > 0.99
    white = coloured_noise(len(clean), "white", np.random.default_rng(0))
    noisy = clean.numpy() + mix_at_snr(clean.numpy(), white, 0.0)  # 0 dB white noise
    m = speech_metrics(clean, noisy)
    assert m["pesq"] < 2.0 and m["stoi"] < 0.95 and m["si_sdr"] == pytest.approx(0.0, abs=0.5)
    assert set(m) == {"pesq", "stoi", "estoi", "si_sdr"}
    with pytest.raises(ValueError, match="unknown speech metrics \\['mos'\\]"):
        speech_metrics(clean, noisy, ["mos"])


# -- commands -----------------------------------------------------------------------------------------

@needs_espeak
def test_enhance_and_speech_eval_commands(corpus, tmp_path, capsys):
    from samplerlab.cli import main

    out = tmp_path / "enh"
    assert main(["enhance", str(corpus / "test" / "noisy"), "--corpus", str(corpus), "--prior-mode", "adaptive",
                 "--steps", "5", "--out", str(out), "--no-progress"]) == 0
    assert "real-time factor" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.wav")) == sorted(p.name for p in (corpus / "test" / "noisy").glob("*.wav"))
    assert (corpus / "gaussian_prior.npz").exists()  # fitted once, cached in the corpus
    assert main(["speech", "eval", "--clean", str(corpus / "test" / "clean"), "--noisy", str(corpus / "test" / "noisy"),
                 "--enhanced", str(out), "--out", str(tmp_path / "m.json")]) == 0
    text = capsys.readouterr().out
    assert "| noisy (3 files) |" in text and "| enhanced (3 files) |" in text
    from samplerlab.metrics.dnsmos import DNSMOS, bundled_model_dir

    here = available_metrics(DNSMOS() if bundled_model_dir() else None)  # + warpq, + DNSMOS where speechmos is
    assert set(json.loads((tmp_path / "m.json").read_text())["enhanced"]) == set(here)
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(find_pairs(corpus, "test")[0].noisy, one / "a.wav")
    for flag, nfe in (([], 5), (["--no-final-denoise"], 6)):  # pc: 2 calls a step; the step to 0 takes one
        assert main(["enhance", str(one), "--steps", "3", "--out", str(tmp_path / "e1"), "--no-progress", *flag]) == 0
        text = capsys.readouterr().out
        assert f"({nfe} NFE per file)" in text and "corrector=annealed-langevin" in text and "snr=0.5" in text
        assert json.loads((tmp_path / "e1" / "enhance.json").read_text())["final_denoise"] is (not flag)
    assert main(["enhance", str(corpus / "test" / "noisy"), "--model", "ckpt", "--no-progress"]) == 2
    assert "ckpt: no such checkpoint folder" in capsys.readouterr().err
    assert main(["enhance", str(corpus / "test" / "noisy"), "--prior-mode", "stationary", "--no-progress"]) == 2
    assert "stationary Gaussian prior needs a corpus" in capsys.readouterr().err
    assert main(["enhance", str(corpus / "test" / "noisy"), "--corpus", str(corpus), "--solver", "heun", "--snr", "0.3",
                 "--no-progress"]) == 2
    assert "has no snr parameter" in capsys.readouterr().err


# -- the study runner on speech -----------------------------------------------------------------------

def test_example_speech_study_file_is_valid():
    from pathlib import Path

    from samplerlab.experiments.config import cells_of, load_experiment

    config = load_experiment(Path(__file__).parent.parent / "examples" / "sgmse_speech_study.toml")
    assert config.speech and config.metrics == ["pesq", "stoi", "estoi", "si_sdr"]
    assert len({c.transform for c in cells_of(config)}) == 8 and {c.steps for c in cells_of(config)} == {10, 15, 30}


@needs_espeak
def test_runner_enhances_a_speech_corpus_and_resumes(corpus, tmp_path):
    from samplerlab.experiments.config import ExperimentConfig, StudyConfig
    from samplerlab.experiments.runner import run_experiment

    config = ExperimentConfig(name="mini", problem="speech", process="ouve", corpus=str(corpus), files=2,
                              metrics=["si_sdr", "estoi"],
                              studies=[StudyConfig("s", ["pc:corrector=annealed-langevin:snr=0.5"], ["base", "ve"],
                                                   steps=[4])])
    summary = run_experiment(config, tmp_path / "run", progress=False)
    assert summary["computed"] == 2
    lines = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    from samplerlab.solvers import solver_from_spec

    want_nfe = solver_from_spec("pc:corrector=annealed-langevin:snr=0.5").nfe(4)
    assert all(r["metrics"]["si_sdr"]["n"] == 2 and r["nfe"] == want_nfe for r in lines), lines
    text = (tmp_path / "run" / "tables.md").read_text()
    assert "*noisy input y*" in text and "*utterance Gaussian prior's posterior mean (Wiener)*" in text
    assert run_experiment(config, tmp_path / "run", progress=False)["reused"] == 2
    with pytest.raises(ValueError, match="needs corpus"):
        ExperimentConfig(name="x", problem="speech", studies=config.studies).validate()
    with pytest.raises(ValueError, match="unknown metrics \\['snr_db'\\]"):
        ExperimentConfig(name="x", problem="speech", corpus="c", metrics=["snr_db"], studies=config.studies).validate()
    import samplerlab.metrics.dnsmos as dnsmos_module

    dnsmos_module_bundled, dnsmos_module.bundled_model_dir = dnsmos_module.bundled_model_dir, lambda: None
    with pytest.raises(ValueError, match="pip install speechmos"):
        ExperimentConfig(name="x", problem="speech", corpus="c", metrics=["dnsmos_ovrl"], studies=config.studies).validate()
    dnsmos_module.bundled_model_dir = dnsmos_module_bundled


@needs_espeak
def test_shared_cells_are_computed_once_and_tables_pair_files(corpus, tmp_path):
    """Two experiments with the same baseline compute it once; the tables pair every configuration with the
    study's baseline file by file (mean difference, bootstrap interval, share of files improved)."""
    from samplerlab.experiments.config import ExperimentConfig, StudyConfig
    from samplerlab.experiments.runner import run_experiment
    from samplerlab.experiments.tables import paired_difference

    solver = "pc:corrector=annealed-langevin:snr=0.5"
    config = ExperimentConfig(name="pairs", problem="speech", process="ouve", corpus=str(corpus), files=3,
                              metrics=["si_sdr"],
                              studies=[StudyConfig("a", [solver], ["base", "ve"], steps=[3]),
                                       StudyConfig("b", [solver], ["base", "vp"], steps=[3])])
    summary = run_experiment(config, tmp_path / "run", progress=False)
    assert summary["cells"] == 4 and summary["computed"] == 3 and summary["shared"] == 1
    lines = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    base_a, base_b = (next(r for r in lines if r["key"] == f"{s} | {solver} | base | none | steps=3") for s in "ab")
    assert base_b["shared_from"] == base_a["key"] and base_b["metrics"] == base_a["metrics"]
    text = (tmp_path / "run" / "tables.md").read_text()
    assert f"Paired against {solver} / base / none" in text
    ve = next(r for r in lines if "| ve |" in r["key"])
    p = paired_difference(base_a["metrics"]["si_sdr"]["values"], ve["metrics"]["si_sdr"]["values"], +1)
    assert f"{p['mean']:+.3f} [{p['low']:+.3f}, {p['high']:+.3f}]" in text
    assert (tmp_path / "run" / "a-paired.png").read_bytes()[:4] == b"\x89PNG"
    assert run_experiment(config, tmp_path / "run", progress=False)["computed"] == 0


def test_paired_difference_on_known_numbers():
    from samplerlab.experiments.tables import paired_difference

    base, other = [1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 5.0, 3.0]  # differences +1, 0, +2, -1
    p = paired_difference(base, other, +1)
    assert p["mean"] == pytest.approx(0.5) and p["improved"] == pytest.approx((1 + 0.5 + 1 + 0) / 4)
    assert p["low"] < 0.5 < p["high"] and -1 <= p["low"] and p["high"] <= 2
    assert paired_difference(base, other, -1)["improved"] == pytest.approx((0 + 0.5 + 0 + 1) / 4)  # lower is better
    same = paired_difference(base, [b + 1 for b in base], +1)
    assert same["low"] == same["high"] == 1.0 and same["improved"] == 1.0


# -- the trainable score network ------------------------------------------------------------------------

@needs_espeak
def test_crop_source_gives_residual_crops(corpus):
    from samplerlab.speech.frontend import normalise_pair, wav_to_spec
    from samplerlab.speech.gaussian import complex_to_channels
    from samplerlab.speech.network import SpeechCropSource

    pairs = find_pairs(corpus, "train")[:2]
    source = SpeechCropSource(pairs, crop_frames=16)
    u, cond = source.draw(5, torch.Generator().manual_seed(0))
    assert u.shape == cond["y"].shape == (5, 2, 256, 16) and source.shape == (2, 256, 16)
    clean, noisy = load_pair(pairs[0])
    clean, noisy, _ = normalise_pair(clean, noisy)
    full_u = complex_to_channels(wav_to_spec(clean) - wav_to_spec(noisy))
    assert torch.allclose(source.examples[0][0], full_u.float())
    assert 0 < source.residual_std() < 1
    long = SpeechCropSource(pairs[:1], crop_frames=10_000)  # longer than the file: zero-padded
    u, cond = long.draw(1, torch.Generator().manual_seed(0))
    assert u.shape[-1] == 10_000 and float(u[..., -1].abs().max()) == 0


@needs_espeak
def test_speech_train_resumes_and_its_checkpoint_enhances(corpus, tmp_path, capsys, monkeypatch):
    from samplerlab.cli import main

    monkeypatch.setenv("SAMPLERLAB_THREADS", "1")
    args = ["speech", "train", "--corpus", str(corpus), "--steps", "2", "--batch-size", "2", "--crop", "16",
            "--channels", "8", "--channel-mult", "1,2,2,2", "--out", str(tmp_path / "net"), "--no-progress"]
    assert main(args) == 0 and "trained to step 2" in capsys.readouterr().out
    meta = json.loads((tmp_path / "net" / "checkpoint.json").read_text())
    assert meta["config"]["sigma_distribution"] == "ouve" and meta["config"]["net"] == "speech-unet"
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(find_pairs(corpus, "test")[0].noisy, one / "a.wav")
    assert main(["enhance", str(one), "--model", str(tmp_path / "net"), "--steps", "2", "--out", str(tmp_path / "enh"),
                 "--no-progress"]) == 0
    assert "the network in" in capsys.readouterr().out
    enhanced, noisy = load_pair(find_pairs(corpus, "test")[0].__class__("a", tmp_path / "enh" / "a.wav", one / "a.wav"))
    assert enhanced.shape == noisy.shape and bool(torch.isfinite(enhanced).all())
    # the runner enhances with the checkpoint too (model = CHECKPOINT)
    from samplerlab.experiments.config import ExperimentConfig, StudyConfig
    from samplerlab.experiments.runner import run_experiment

    config = ExperimentConfig(name="net", problem="speech", process="ouve", corpus=str(corpus), files=1,
                              model=str(tmp_path / "net"), metrics=["si_sdr"],
                              studies=[StudyConfig("s", ["pc:corrector=annealed-langevin:snr=0.5"], steps=[2])])
    assert run_experiment(config, tmp_path / "study", progress=False)["computed"] == 1
    toy = tmp_path / "toy"
    assert main(["train", "--data", "moons", "--samples", "64", "--steps", "1", "--batch-size", "8", "--hidden", "8",
                 "--depth", "1", "--out", str(toy), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["enhance", str(one), "--model", str(toy), "--no-progress"]) == 2
    assert "not a speech score network" in capsys.readouterr().err


def test_ouve_sigma_distribution_covers_t_eps_to_one():
    from samplerlab.training.edm import EDMLoss

    sigma, noise = EDMLoss(0, 1, 0.5, "ouve").draw((4000, 3), torch.Generator().manual_seed(0))
    p = OUVE()
    assert float(sigma.min()) >= p.sigma_floor * 0.999 and float(sigma.max()) <= float(p.sigma(p.t_max)) * 1.001
    t = p.t_of_sigma(sigma.double())
    assert abs(float(t.mean()) - (p.t_min + p.t_max) / 2) < 0.02  # t is uniform
    assert noise.shape == (4000, 3)


@needs_espeak
def test_default_enhancement_beats_the_noisy_input(tmp_path):
    """The speech issue's bar: the utterance Gaussian prior with SGMSE+'s default sampler (30 steps, PC with
    snr 0.5, final denoising step) raises mean PESQ and SI-SDR over the noisy recordings of a test split
    (8 files, SNR 4-20 dB, brown / pink / babble noise; measured +0.22 PESQ, +1.1 dB; babble loses)."""
    from samplerlab.speech.enhance import enhance

    make_corpus(tmp_path, CorpusConfig(train=0, valid=0, test=8, seed=3))
    prior = GaussianSpeechPrior(mode="utterance")
    before, after = [], []
    for pair in find_pairs(tmp_path, "test"):
        clean, noisy = load_pair(pair)
        before.append(speech_metrics(clean, noisy, ("pesq", "si_sdr")))
        after.append(speech_metrics(clean, enhance(noisy, prior, seed=0).wav, ("pesq", "si_sdr")))
    for m in ("pesq", "si_sdr"):
        gain = np.mean([a[m] for a in after]) - np.mean([b[m] for b in before])
        assert gain > {"pesq": 0.1, "si_sdr": 0.5}[m], (m, before, after)


@needs_espeak
def test_spectrogram_example_writes_its_figure(corpus, tmp_path, monkeypatch):
    import runpy
    from pathlib import Path

    out = tmp_path / "spec.png"
    script = Path(__file__).parent.parent / "examples" / "speech_spectrograms.py"
    monkeypatch.setattr("sys.argv", [str(script), "--corpus", str(corpus), "--out", str(out)])
    runpy.run_path(str(script), run_name="__main__")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
