"""Enhance a recording with any solver: the SGMSE+ reverse process on the OUVE residual (Richter et al. 2023).

noisy wav -> peak normalisation -> compressed STFT y -> u_T ~ N(0, (s(T) sigma(T))^2) (SGMSE+ starts at
x_T = y + sigma(T) z) -> the solver down the grid with the model conditioned on y -> x = u / s + y ->
inverse STFT -> the original peak. The default is SGMSE+'s sampler: 30 uniform steps in t from 1 to
t_eps = 0.03, reverse-diffusion predictor and one annealed-Langevin corrector step with snr 0.5, then a
final step to sigma = 0. SGMSE+ returns the *mean* of its last predictor step (the step from t_eps on,
without its noise); the reverse-diffusion step to sigma = 0 is exactly that noise-free mean, Tweedie's
denoiser D(x_{t_eps}) (Song et al. 2021, App. G "denoising"). Without it the output keeps the noise of
level sigma(t_eps) in every bin, which costs 0.4 PESQ with the Gaussian-prior model (docs/speech.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from ..grids import uniform_time, validate_grid
from ..noise import SampleNoise
from ..processes import OUVE, Process
from ..sampling import prior_sample, sample
from ..solvers import SOLVERS, Solver, parse_solver_spec, solver_from_spec
from ..training import load_checkpoint
from .frontend import SpecConfig, pad_to_multiple, spec_to_wav, wav_to_spec
from .gaussian import channels_to_complex, complex_to_channels

__all__ = [
    "SGMSE_SOLVER",
    "EnhanceResult",
    "EnhancementModel",
    "load_enhancement_model",
    "enhance",
    "enhancement_solver",
    "FolderResult",
    "enhance_files",
]

SGMSE_SOLVER = "pc:predictor=reverse-diffusion:corrector=annealed-langevin:snr=0.5"


@dataclass
class EnhanceResult:
    wav: Tensor
    nfe: int
    seconds: float
    audio_seconds: float

    @property
    def real_time_factor(self) -> float:
        """Processing time over audio duration (< 1: faster than real time)."""
        return self.seconds / self.audio_seconds


@dataclass
class EnhancementModel:
    """A denoiser of the OUVE residual with what ``enhance`` needs to run it."""

    denoiser: object  # D(u_hat, sigma, y=...)
    pad_multiple: int  # frames the input must be a multiple of
    dtype: torch.dtype
    label: str
    process: Process | None = None  # the process it was trained on (None: samplerlab's OUVE defaults)
    spec: SpecConfig = SpecConfig()  # its STFT front end


def load_enhancement_model(
    model: str = "gaussian", *, corpus=None, prior_file=None, prior_mode: str = "utterance"
) -> EnhancementModel:
    """``model``: "gaussian" (the Gaussian-prior model, ``speech.gaussian``; the stationary / adaptive
    priors are fitted on ``corpus``'s train split or read from ``prior_file``) or a checkpoint folder
    written by ``samplerlab speech train``."""
    if model == "gaussian":
        from .gaussian import GaussianSpeechPrior, corpus_prior

        if prior_file:
            prior = GaussianSpeechPrior.load(prior_file).with_mode(prior_mode)
        elif prior_mode == "utterance":
            prior = GaussianSpeechPrior(mode=prior_mode)
        elif corpus:
            prior = corpus_prior(corpus, prior_mode)
        else:
            raise ValueError(
                f"the {prior_mode} Gaussian prior needs a corpus (its train split; --corpus DIR) or a "
                "prior file (--prior FILE); the default utterance prior needs neither"
            )
        return EnhancementModel(prior, 1, torch.float64, f"the {prior_mode} Gaussian prior")

    if str(model).endswith(".ckpt"):
        return _sgmse_model(model)
    net, meta = load_checkpoint(model)
    if meta["config"].get("net") != "speech-unet":
        raise ValueError(f"{model}: not a speech score network (samplerlab speech train writes one); or use gaussian")
    # channels-last weights: oneDNN's convolutions on this layout run the network 1.2x faster on CPU
    # (benchmarks/speech_network.py); outputs agree to float32 rounding
    net.net.to(memory_format=torch.channels_last)
    return EnhancementModel(net, net.net.down_factor, torch.float32, f"the network in {model}")


def _sgmse_model(path) -> EnhancementModel:
    """A published SGMSE+ checkpoint (``adapters.sgmse``): its NCSN++ with the EMA weights behind the denoiser
    contract, on its OUVE process in samplerlab's per-real-channel convention, with its STFT settings."""
    from ..adapters.sgmse import (
        SGMSEScore,
        SGMSEScoreDenoiser,
        build_sgmse_network,
        read_sgmse_checkpoint,
        sgmse_process,
    )

    checkpoint = read_sgmse_checkpoint(path)
    if str(checkpoint.sde).lower() not in ("ouve", "ouvesde"):
        raise ValueError(f"{path}: SDE {checkpoint.sde!r}; samplerlab samples SGMSE+'s OUVE models")
    hp = checkpoint.hyperparameters
    net = build_sgmse_network(checkpoint)
    spec = SpecConfig(
        sample_rate=int(hp.get("sr", 16000)),
        n_fft=int(hp.get("n_fft", 510)),
        hop=int(hp.get("hop_length", 128)),
        alpha=float(hp.get("spec_abs_exponent", 0.5)),
        beta=float(hp.get("spec_factor", 0.15)),
    )
    process = sgmse_process(hp)
    levels = len(net.config.ch_mult)
    try:
        score = SGMSEScore(net, hp)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return EnhancementModel(
        SGMSEScoreDenoiser(score, process), 2 ** (levels - 1), torch.float32, f"the SGMSE+ model {path}", process, spec
    )


def enhance(
    noisy: Tensor,
    model,
    solver: Solver | str = SGMSE_SOLVER,
    *,
    steps: int = 30,
    grid: Tensor | None = None,
    process: Process | None = None,
    seed: int = 0,
    spec: SpecConfig = SpecConfig(),
    pad_multiple: int = 1,
    dtype: torch.dtype = torch.float64,
    final_denoise: bool = True,
    progress: bool = False,
) -> EnhanceResult:
    """Enhance one mono 16 kHz signal; ``model`` is a denoiser D(u_hat, sigma, y=...) of the OUVE residual.
    ``pad_multiple``: frames a network needs its input to be a multiple of; ``dtype`` of the sampling;
    ``final_denoise``: end the default grid with the step to sigma = 0 (module docstring); a given
    ``grid`` decides that itself."""
    start = time.perf_counter()
    process = process or OUVE()
    solver = solver_from_spec(solver) if isinstance(solver, str) else solver
    grid = uniform_time(steps, process, final_zero=final_denoise) if grid is None else grid
    sigmas = validate_grid(grid, process)
    wav, peak = _normalised(noisy, spec, pad_multiple)
    length = noisy.shape[-1]
    y = complex_to_channels(wav_to_spec(wav, spec)).unsqueeze(0).to(dtype)  # (1, 2, F, T)
    noise = SampleNoise([seed], dtype=dtype)
    u = prior_sample(process, float(sigmas[0]), noise, tuple(y.shape[1:]))
    with torch.no_grad():
        r = sample(model, u, sigmas, solver, process=process, noise=noise, cond={"y": y}, progress=progress)
    x = r.x / float(process.scale(float(sigmas[-1]))) + y  # undo s(t_end), add y back
    out = spec_to_wav(channels_to_complex(x[0].double()), wav.shape[-1], spec)[:length] * peak
    return EnhanceResult(out.to(torch.float32), r.nfe, time.perf_counter() - start, length / spec.sample_rate)


def _normalised(noisy: Tensor, spec: SpecConfig, pad_multiple: int) -> tuple[Tensor, float]:
    """The recording checked, divided by its peak (SGMSE+'s normalisation) and padded to whole frames."""
    length = noisy.shape[-1]
    if length < spec.n_fft:
        raise ValueError(f"the noisy recording has {length} samples; enhancement needs at least {spec.n_fft}")
    if not bool(torch.isfinite(noisy).all()):
        raise ValueError("the noisy recording has NaN or infinite samples")
    peak = float(noisy.abs().max())
    if peak == 0:
        raise ValueError("the noisy recording is silent")
    return pad_to_multiple((noisy / peak).to(torch.float64), pad_multiple, spec), peak


LITERAL = "sgmse-literal"  # the solver name of SGMSE+'s own sampler, run step for step (``enhance_literal``)


def enhance_literal(
    noisy: Tensor, model: EnhancementModel, *, steps: int = 30, snr: float = 0.5, seed: int = 0
) -> EnhanceResult:
    """SGMSE+'s default sampler on a published checkpoint, step for step in its own variables
    (``adapters.sgmse.sgmse_literal_pc``: corrector then predictor at each of ``steps`` levels, the last
    predictor's mean returned, 2 ``steps`` model calls). The noise is samplerlab's per-seed stream, drawn as
    SGMSE+'s complex noise (real and imaginary parts of variance 1/2)."""
    from ..adapters.sgmse import SQRT2, SGMSEScoreDenoiser, sgmse_literal_pc

    denoiser = model.denoiser
    if not isinstance(denoiser, SGMSEScoreDenoiser):
        raise ValueError(f"{LITERAL} runs SGMSE+ checkpoints (--model FILE.ckpt), not {model.label}")
    start = time.perf_counter()
    spec, process, score = model.spec, denoiser.process, denoiser.score
    wav, peak = _normalised(noisy, spec, model.pad_multiple)
    y = wav_to_spec(wav, spec).to(torch.complex64)[None, None]  # (1, 1, F, T)
    noise = SampleNoise([seed], dtype=torch.float32)

    def randn(like: Tensor) -> Tensor:
        z = noise.randn(2, *like.shape[2:])
        return (torch.complex(z[:, :1], z[:, 1:]) / SQRT2).to(like.dtype)

    with torch.no_grad():
        x, nfe = sgmse_literal_pc(
            score,
            y,
            theta=process.theta,
            sigma_min=process.sigma_lo * SQRT2,  # SGMSE+'s own (complex-noise) sigma range
            sigma_max=process.sigma_hi * SQRT2,
            num_steps=steps,
            t_eps=process.t_min,
            snr=snr,
            randn=randn,
        )
    out = spec_to_wav(x[0, 0].to(torch.complex128), wav.shape[-1], spec)[: noisy.shape[-1]] * peak
    return EnhanceResult(out.to(torch.float32), nfe, time.perf_counter() - start, noisy.shape[-1] / spec.sample_rate)


def enhancement_solver(spec: str = "pc", snr: float | None = None) -> Solver:
    """The solver of a spec, where "pc" is SGMSE+'s configuration (``SGMSE_SOLVER``); ``snr`` sets the
    corrector's signal-to-noise ratio of a pc solver."""
    spec = SGMSE_SOLVER if spec == "pc" else spec
    if snr is None:
        return solver_from_spec(spec)
    if "snr" not in getattr(SOLVERS.get(parse_solver_spec(spec)[0]), "__dataclass_fields__", {}):
        raise ValueError(f"--snr: solver {spec!r} has no snr parameter (the pc solvers have)")
    return solver_from_spec(spec, snr=snr)


@dataclass
class FolderResult:
    files: int
    nfe: int  # per file
    audio_seconds: float
    seconds: float

    @property
    def real_time_factor(self) -> float:
        return self.seconds / self.audio_seconds


def _check_input(path) -> None:
    from .data import SpeechPair, load_pair

    _, noisy = load_pair(SpeechPair(path.stem, None, path))
    if not bool(noisy.abs().max() > 0):
        raise ValueError(f"{path}: the recording is silent (all samples are 0); there is nothing to enhance")


def enhancement_grid(name: str, steps: int, model: EnhancementModel, solver, final_denoise: bool = True):
    """(denoiser, grid, solver) for ``name``: a registered grid on the model's process (ending at 0 with the
    final denoising step) or a grid file (its levels, its solver settings and, when it has them, the levels
    the model is evaluated at)."""
    from ..denoisers import LevelShift
    from ..grids import GridFile, is_grid_file, make_grid

    solver = solver_from_spec(solver) if isinstance(solver, str) else solver
    process = model.process or OUVE()
    if not is_grid_file(name):
        return model.denoiser, make_grid(name, steps, process, final_zero=final_denoise), solver
    grid_file = GridFile.read(name)
    misfit = grid_file.misfit(solver, steps)
    if misfit:
        raise ValueError(f"{name}: {misfit}")
    levels = grid_file.tensor(process)
    denoiser = model.denoiser
    if grid_file.model_sigmas is not None:
        denoiser = LevelShift(denoiser, levels, grid_file.model_sigmas)
    return denoiser, levels, grid_file.configure(solver)


def enhance_files(
    source,
    out,
    model: EnhancementModel,
    solver: Solver | str,
    *,
    steps: int = 30,
    seed: int = 0,
    final_denoise: bool = True,
    progress: bool = False,
    literal_snr: float = 0.5,
    grid: str = "uniform-time",
) -> FolderResult:
    """Enhance a .wav file or every .wav in a folder into the folder ``out`` (same file names). ``solver`` may
    be ``LITERAL`` ("sgmse-literal"): SGMSE+'s own sampler on an SGMSE+ checkpoint, corrector snr
    ``literal_snr``. ``grid``: a registered grid's name on the process's sigma range (default: uniform in t,
    SGMSE+'s) or a grid file of ``samplerlab calibrate`` / ``examples/calibrate_speech.py``."""
    from pathlib import Path

    from .data import SpeechPair, load_pair
    from .frontend import save_wav

    src = Path(source)
    files = sorted(src.glob("*.wav")) if src.is_dir() else [src]
    if not files:
        raise ValueError(f"{src}: no .wav files")
    for f in files:  # every input checked (readable, whole, finite, long enough) before the first model call
        _check_input(f)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    it = files
    if progress and len(files) > 1:
        from tqdm.auto import tqdm

        it = tqdm(files, desc="enhance", unit="file")
    denoiser, levels = model.denoiser, None
    if solver != LITERAL and grid != "uniform-time":
        denoiser, levels, solver = enhancement_grid(grid, steps, model, solver, final_denoise)
    total_audio = total_time = 0.0
    for f in it:
        _, noisy = load_pair(SpeechPair(f.stem, None, f), sample_rate=model.spec.sample_rate)
        if solver == LITERAL:
            r = enhance_literal(noisy, model, steps=steps, seed=seed, snr=literal_snr)
            save_wav(Path(out) / f.name, r.wav, model.spec.sample_rate)
            total_audio, total_time = total_audio + r.audio_seconds, total_time + r.seconds
            continue
        r = enhance(
            noisy,
            denoiser,
            solver,
            steps=steps,
            grid=levels,
            seed=seed,
            process=model.process,
            spec=model.spec,
            pad_multiple=model.pad_multiple,
            dtype=model.dtype,
            final_denoise=final_denoise,
        )
        save_wav(Path(out) / f.name, r.wav, model.spec.sample_rate)
        total_audio += r.audio_seconds
        total_time += r.seconds
    return FolderResult(len(files), r.nfe, total_audio, total_time)
