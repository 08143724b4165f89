"""Command line: ``samplerlab bench | run | train | sample | eval | likelihood | list | ...``.

Strings become objects here, once, through the registries; a bad name gets an
error listing the valid ones.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from .registry import UnknownNameError
from .solvers.base import parse_value

__all__ = ["main"]


def _csv_list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _int_list(text: str) -> list[int]:
    try:
        return [int(p) for p in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(p) for p in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _key_values(items: list[str], what: str) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{what} must look like KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip().replace("-", "_")] = parse_value(v.strip())
    return out


def _solver_params(items: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in items or []:
        target, eq, value = item.partition("=")
        spec, dot, key = target.rpartition(".")
        if not eq or not dot or not spec or not key:
            raise ValueError(f"--solver-param must look like SOLVER.KEY=VALUE (e.g. ddim.eta=0.5), got {item!r}")
        out.setdefault(spec, {})[key.strip().replace("-", "_")] = parse_value(value.strip())
    return out


def _cmd_bench(args) -> int:
    from .experiments.bench import BenchConfig, run_bench
    from .experiments.report import format_bench, write_bench_outputs

    config = BenchConfig()
    if args.problems:
        config.problems = _csv_list(args.problems)
    if args.solvers:
        config.solvers = _csv_list(args.solvers)
    if args.nfe:
        config.nfes = args.nfe
    config.grid = args.grid
    config.grid_params = _key_values(args.grid_param, "--grid-param")
    config.process = args.process
    config.process_params = _key_values(args.process_param, "--process-param")
    config.solver_params = _solver_params(args.solver_param)
    if args.tolerances:
        config.adaptive_tolerances = args.tolerances
    config.num_samples = args.samples
    config.seed = args.seed
    config.dtype = args.dtype
    config.validate()

    solvers = [config.solver(spec) for spec in config.solvers]
    per_problem = sum(len(config.tolerances(s)) if s.adaptive else len(config.nfes) for s in solvers)
    total = len(config.problems) * per_problem
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="bench", unit="cell", file=sys.stderr)
    start = time.perf_counter()
    summaries, rows = run_bench(config, progress=(lambda label: (bar.set_postfix_str(label), bar.update(1))) if bar else None)
    if bar:
        bar.close()
    table = format_bench(config, summaries, rows)
    print(table, end="")
    print(f"total {time.perf_counter() - start:.1f} s")
    if args.out:
        for path in write_bench_outputs(args.out, config, summaries, rows, table):
            print(f"wrote {path}")
    return 0


def _init_distributed() -> None:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): gloo on CPU, NCCL on GPU."""
    import os

    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")


def _cmd_run(args) -> int:
    from .experiments.runner import load_experiment, run_experiment

    config = load_experiment(args.experiment)
    out = args.out or str(Path("runs") / config.name)
    _init_distributed()
    summary = run_experiment(config, out, progress=not args.no_progress)
    if not summary["files"]:  # a non-zero rank of a sharded run
        return 0
    print((Path(out) / "tables.md").read_text())
    print(f"{summary['computed']} cells computed, {summary['reused']} reused from {Path(out) / 'results.jsonl'}")
    for path in summary["files"]:
        print(f"wrote {path}")
    return 0


def _cmd_schedules_plot(args) -> int:
    from .experiments.tables import plot_schedules
    from .grids import time_steps
    from .processes import make_process
    from .schedules import ScheduledProcess

    base = make_process(args.process)
    entries = []
    for shape in _csv_list(args.shapes):
        for alpha in args.steepness or [1.0]:
            process = base if shape == "base" and alpha == 1.0 else ScheduledProcess.swap(
                base, base.name if shape == "base" else shape, alpha)
            grid = time_steps(args.steps, process, offset=args.offset, power=args.power).tolist() if args.steps else None
            label = shape + ("" if alpha == 1.0 else f", steepness {alpha:g}")
            entries.append((label, process, grid))
    plot_schedules(entries, args.out, title=f"schedules on the {base.name} process's range")
    print(f"wrote {args.out}")
    return 0


def _cmd_optimise_steps(args) -> int:
    from .experiments.step_optimisation import optimise_steps, save_grid
    from .problems import make_problem
    from .processes import make_process
    from .solvers import solver_from_spec

    problem = make_problem(args.problem)
    process = make_process(args.process)
    solver = solver_from_spec(args.solver)
    steps = solver.steps_for_nfe(args.nfe)
    if steps is None:
        raise ValueError(f"{args.solver} cannot run within {args.nfe} NFE")
    grid = optimise_steps(problem.model, solver, steps, process, problem.dim,
                          num_candidates=args.candidates, calibration=args.calibration, seed=args.seed)
    name = args.name or f"{args.problem}-{solver.name}-nfe{args.nfe}"
    path = save_grid(name, grid, {"problem": args.problem, "process": args.process, "nfe": args.nfe}, args.grid_dir)
    print(f"{solver.describe()} at {steps} steps: summed local error {grid.cost:.3e}")
    print("sigmas: " + ", ".join(f"{s:.4g}" for s in grid.sigmas))
    print(f"wrote {path}; use it with --grid saved --grid-param name={name}")
    return 0


def _cmd_likelihood(args) -> int:
    import torch

    from .metrics.likelihood import bits_per_dim, ode_log_likelihood

    if args.checkpoint:
        return _likelihood_checkpoint(args)
    from .problems import make_problem

    problem = make_problem(args.problem)
    x = problem.model.sample(args.samples, torch.Generator().manual_seed(args.seed))
    result = ode_log_likelihood(problem.model, x, sigma_max=args.sigma_max, divergence=args.divergence or "exact",
                                probes=args.probes, rtol=args.rtol, atol=args.rtol, seed=args.seed)
    exact = -problem.model.log_prob(x).mean().item()
    print(f"{problem.name}: {args.samples} exact samples, divergence {args.divergence or 'exact'}, {result.nfe} NFE")
    print(f"NLL  {result.nll:.4f} ± {result.nll_std_error:.4f} nats (standard error over samples); "
          f"closed form {exact:.4f}")
    print(f"     {bits_per_dim(result.nll, problem.dim, eight_bit=False):.4f} bits/dim (continuous data)")
    return 0


def _likelihood_checkpoint(args) -> int:
    """Held-out images of the checkpoint's data (or --data), uniformly dequantised, in nats and bits/dim."""
    import torch

    from .data import load_dataset, split_dataset
    from .metrics.likelihood import bits_per_dim, ode_log_likelihood, uniform_dequantise
    from .training import load_checkpoint

    model, meta = load_checkpoint(args.checkpoint)
    model.net.double()  # the ODE and its divergence run in float64
    info = meta.get("data") or {}
    name = args.data or info.get("name")
    if len(meta.get("shape", ())) != 3 or not name:
        raise ValueError(f"{args.checkpoint}: likelihood --checkpoint needs an image model (or give --data)")
    params = info.get("params", {}) if name == info.get("name") else ({"root": args.data_dir} if args.data_dir else {})
    dataset = load_dataset(name, **params)
    if name == info.get("name"):
        _, dataset = split_dataset(dataset, info["held_out"], info["split_seed"])  # images the model never saw
    if tuple(dataset.data.shape[1:]) != tuple(meta["shape"]):
        raise ValueError(f"{name} images have shape {tuple(dataset.data.shape[1:])}, the model {tuple(meta['shape'])}")
    values = dataset.integer_values()[: args.samples]
    levels = int(round(2 / dataset.bin_width)) + 1
    x = uniform_dequantise(values, torch.Generator().manual_seed(args.seed), levels=levels,
                           bin_width=dataset.bin_width).float()
    divergence = args.divergence or "hutchinson-rademacher"
    start = time.perf_counter()
    result = ode_log_likelihood(model, x, sigma_max=args.sigma_max, divergence=divergence, probes=args.probes,
                                rtol=args.rtol, atol=args.rtol, seed=args.seed)
    dim = x[0].numel()
    bpd = bits_per_dim(result.nll, dim, bin_width=dataset.bin_width)
    bpd_se = result.nll_std_error / (dim * math.log(2))
    print(f"{args.checkpoint}: {len(x)} held-out {name} images, uniformly dequantised (bin {dataset.bin_width:.4g}), "
          f"divergence {divergence} x {args.probes}, {result.nfe} NFE, {time.perf_counter() - start:.0f} s")
    print(f"NLL  {result.nll:.2f} ± {result.nll_std_error:.2f} nats per image (continuous, standard error over images)")
    print(f"     {bpd:.4f} ± {bpd_se:.4f} bits/dim (discrete upper bound: nll - dim log bin)")
    if result.probe_std_error is not None:
        print(f"     Hutchinson estimator's standard error per image (mean): {float(result.probe_std_error.mean()):.2f} nats"
              if args.probes > 1 else "     (use --probes K > 1 to report the estimator's own standard error)")
    return 0


def _cmd_sample(args) -> int:
    import torch

    from .grids import make_grid
    from .imaging import save_image_grid
    from .noise import SampleNoise, parse_seeds
    from .sampling import sample
    from .processes import VPLinear
    from .solvers import solver_from_spec

    if bool(args.diffusers) == bool(args.checkpoint):
        raise ValueError("give one model: --checkpoint DIR (trained by samplerlab train) or --diffusers DIR "
                         "(a local diffusers UNet2DModel or pipeline folder)")
    seeds = parse_seeds(args.seeds)
    if args.checkpoint:
        return _sample_checkpoint(args, seeds)
    from .adapters.diffusers import load_diffusers, timestep_grid

    model = load_diffusers(args.diffusers)
    solver = solver_from_spec(args.solver)
    process = VPLinear()  # the state is in VP coordinates; every VP process has s = 1 / sqrt(1 + sigma^2)
    if args.grid.startswith("diffusers-"):
        grid = timestep_grid(model, args.steps, args.grid.removeprefix("diffusers-"))
    else:
        grid = make_grid(args.grid, args.steps, process, sigma_min=model.denoiser.sigma_min,
                         sigma_max=model.denoiser.sigma_max)
    noise = SampleNoise(seeds, dtype=torch.float32)
    x_T = noise.randn(*model.sample_shape)  # diffusers' prior: N(0, I) in VP coordinates
    result = sample(model, x_T, grid, solver, process=process, noise=noise if solver.stochastic else None,
                    progress=not args.no_progress)
    path = save_image_grid(result.x, args.out)
    print(f"{len(seeds)} samples, {solver.describe()}, {result.num_steps} steps, {result.nfe} NFE, "
          f"{result.wall_seconds:.1f} s; wrote {path}")
    return 0


def _sample_checkpoint(args, seeds: list[int]) -> int:
    import torch

    from .experiments.image_eval import ImageEvalConfig, sample_images
    from .imaging import save_image_grid
    from .training import load_checkpoint

    _init_distributed()
    model, meta = load_checkpoint(args.checkpoint)
    shape, num_classes = tuple(meta["shape"]), meta["num_classes"]
    if len(shape) != 3:
        raise ValueError(f"{args.checkpoint} is a model of {shape}-shaped points, not images; sample it from the API")
    labels = None
    if args.class_label is not None:
        if not 0 <= args.class_label < num_classes:
            raise ValueError(f"--class-label {args.class_label}: the model has classes 0-{num_classes - 1}"
                             if num_classes else f"--class-label: {args.checkpoint} is not class-conditional")
        labels = torch.full((len(seeds),), args.class_label)
    if args.cfg != 1.0 and not num_classes:
        raise ValueError(f"--cfg {args.cfg}: guidance needs a class-conditional model")
    start = time.perf_counter()
    x, nfe = sample_images(model, shape, args.solver, args.steps, seeds, num_classes=num_classes, labels=labels,
                           guidance=args.cfg, config=ImageEvalConfig(), progress=not args.no_progress)
    if _rank() != 0:
        return 0
    path = save_image_grid(x, args.out, scale=max(1, 32 // shape[-1]))
    print(f"{len(seeds)} samples, {args.solver}, {args.steps} steps, {nfe} NFE, guidance {args.cfg:g}, "
          f"{time.perf_counter() - start:.1f} s; wrote {path}")
    return 0


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _load_training_data(name: str, data_dir: str | None, samples: int, seed: int):
    """(train Dataset, info for the checkpoint) of a toy or an image data set (its training split)."""
    from .data import DATASETS, TOYS, Dataset, load_dataset, make_toy, split_dataset

    if name in TOYS:
        return Dataset(make_toy(name, samples, seed=seed), None, name=name), {"name": name, "samples": samples}
    if name not in DATASETS:
        raise ValueError(f"unknown data {name!r}; valid: {', '.join(TOYS.names() + DATASETS.names())}")
    params = {} if name == "digits" else {"root": data_dir}
    if name != "digits" and not data_dir:
        raise ValueError(f"--data {name} reads local files: give --data-dir")
    info = {"name": name, "params": params, "held_out": 0.2, "split_seed": 0}
    train_set, _ = split_dataset(load_dataset(name, **params), info["held_out"], info["split_seed"])
    return train_set, info


def _cmd_train(args) -> int:
    from .training import TrainConfig, train

    _init_distributed()
    data, info = _load_training_data(args.data, args.data_dir, args.samples, args.seed)
    images = data.data.ndim == 4
    defaults = dict(steps=4000, batch_size=128, lr=2e-3, ema_decay=0.999, warmup=200) if images else \
        dict(steps=3000, batch_size=256, lr=2e-3)
    given = {k: v for k, v in dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr).items() if v is not None}
    config = TrainConfig(**{**defaults, **given}, seed=args.seed, sigma_data=round(float(data.data.std()), 4),
                         hidden=args.hidden, depth=args.depth, channels=args.channels,
                         channel_mult=tuple(args.channel_mult), num_blocks=args.num_blocks,
                         attention_resolutions=tuple(args.attention), dropout=args.dropout,
                         checkpoint_every=args.checkpoint_every)
    out = Path(args.out or f"runs/train-{args.data}")
    on_checkpoint = None
    if images and args.sample_every_checkpoint:
        def on_checkpoint(step, model):  # a fixed 10 x 10 grid (class = column) with Heun at 35 NFE
            from .experiments.image_eval import sample_images
            from .imaging import save_image_grid

            n = 10 * max(1, min(10, data.num_classes or 10))
            x, _ = sample_images(model, tuple(data.data.shape[1:]), "heun", 18, list(range(n)),
                                 num_classes=data.num_classes)
            save_image_grid(x, out / "samples" / f"step-{step:07d}.png", nrow=10, scale=max(1, 32 // x.shape[-1]))

    device = _training_device(args.device)
    _, meta = train(data.data, config, out, labels=data.labels, progress=not args.no_progress,
                    on_checkpoint=on_checkpoint, device=device, data_info=info)
    if _rank() == 0:
        tail = meta["losses"][-100:]
        print(f"trained to step {meta['step']}: loss {sum(tail) / len(tail):.4f} (mean of the last {len(tail)}); "
              f"checkpoint in {out} (safetensors + JSON; re-running resumes), log in {out / 'log.jsonl'}")
    return 0


def _cmd_eval(args) -> int:
    from .data import load_dataset, split_dataset
    from .experiments.image_eval import ImageEvalConfig, evaluate_image_model, format_image_eval
    from .io import atomic_write_text
    from .metrics.features import ClassifierFeatures, TorchScriptFeatures, load_or_train_classifier, reference_statistics
    from .training import load_checkpoint

    _init_distributed()
    model, meta = load_checkpoint(args.checkpoint)
    info = meta.get("data") or {}
    if len(meta.get("shape", ())) != 3 or "held_out" not in info:
        raise ValueError(f"{args.checkpoint}: eval needs an image model trained by `samplerlab train` on an image data set")
    train_set, held_out = split_dataset(load_dataset(info["name"], **info["params"]), info["held_out"], info["split_seed"])
    if args.features:
        extractor, tag = TorchScriptFeatures(args.features), "ts-" + Path(args.features).stem
    else:
        if train_set.labels is None:
            raise ValueError(f"{info['name']} has no labels to train the feature classifier; give --features F.pt")
        extractor = ClassifierFeatures(load_or_train_classifier(train_set.data, train_set.labels, cache=args.cache,
                                                                progress=not args.no_progress))
        tag = "classifier"
    ref = reference_statistics(extractor, train_set.data, held_out.data, tag=tag, cache=args.cache,
                               held_out_labels=held_out.labels)
    config = ImageEvalConfig(solvers=_csv_list(args.solvers) if args.solvers else ImageEvalConfig().solvers,
                             nfes=args.nfe or [5, 10, 20, 35], guidance=args.cfg or [1.0],
                             samples=args.samples or len(held_out), seed=args.seed)
    rows = evaluate_image_model(model, meta, ref, extractor, config, progress=not args.no_progress)
    if _rank() != 0:
        return 0
    table = format_image_eval(rows, ref)
    print(table)
    if args.out:
        import dataclasses
        import json

        out = Path(args.out)
        atomic_write_text(out / "table.md", table + "\n")
        atomic_write_text(out / "results.json", json.dumps({
            "checkpoint": str(args.checkpoint), "floor": ref.floor, "n_reference": ref.n_reference,
            "n_held_out": ref.n_held_out, "config": dataclasses.asdict(config),
            "rows": [dataclasses.asdict(r) for r in rows]}, indent=2) + "\n")
        print(f"wrote {out / 'table.md'} and {out / 'results.json'}")
    return 0


def _cmd_make_corpus(args) -> int:
    from .speech.corpus import CorpusConfig, make_corpus

    config = CorpusConfig(train=args.train, valid=args.valid, test=args.test, seed=args.seed,
                          snr_min=args.snr_min, snr_max=args.snr_max,
                          noise_types=tuple(_csv_list(args.noise)) if args.noise else CorpusConfig().noise_types)
    start = time.perf_counter()
    out = make_corpus(args.out, config, progress=not args.no_progress)
    print(f"corpus in {out} ({config.train} train, {config.valid} valid, {config.test} test utterances; "
          f"{time.perf_counter() - start:.0f} s); manifest.json lists voice, speed, pitch, noise and SNR per file")
    return 0


def _cmd_fit_gaussian(args) -> int:
    from .speech.data import find_speech_pairs
    from .speech.gaussian import PRIOR_FILE, fit_gaussian_prior

    prior = fit_gaussian_prior(find_speech_pairs(args.corpus, "train"), progress=not args.no_progress)
    path = prior.save(args.out or Path(args.corpus) / PRIOR_FILE)
    print(f"Gaussian prior from {prior.files} training files ({prior.frames} frames): mean Wiener gain "
          f"{float(prior.gain.mean()):.3f}; wrote {path}")
    return 0


def _cmd_enhance(args) -> int:
    from .io import atomic_write_text
    from .solvers import solver_from_spec
    from .speech.data import SpeechPair, load_pair
    from .speech.enhance import SGMSE_SOLVER, enhance, load_enhancement_model
    from .speech.frontend import save_wav

    model = load_enhancement_model(args.model, corpus=args.corpus, prior_file=args.prior, prior_mode=args.prior_mode)
    solver = solver_from_spec(SGMSE_SOLVER if args.solver == "pc" else args.solver)
    if args.snr is not None:
        if not hasattr(solver, "snr"):
            raise ValueError(f"--snr: solver {args.solver!r} has no snr parameter (the pc solvers have)")
        solver.snr = args.snr
    src = Path(args.input)
    files = sorted(src.glob("*.wav")) if src.is_dir() else [src]
    if not files:
        raise ValueError(f"{src}: no .wav files")
    out = Path(args.out)
    total_audio = total_time = 0.0
    it = files
    if not args.no_progress and len(files) > 1:
        from tqdm.auto import tqdm

        it = tqdm(files, desc="enhance", unit="file")
    for f in it:
        _, noisy = load_pair(SpeechPair(f.stem, None, f))
        r = enhance(noisy, model.denoiser, solver, steps=args.steps, seed=args.seed, pad_multiple=model.pad_multiple,
                    dtype=model.dtype, final_denoise=not args.no_final_denoise)
        save_wav(out / f.name, r.wav)
        total_audio += r.audio_seconds
        total_time += r.seconds
    print(f"enhanced {len(files)} file(s) into {out} with {model.label}, {solver.describe()}, "
          f"{args.steps} steps ({r.nfe} NFE per file); real-time factor {total_time / total_audio:.3f} "
          f"({total_time:.1f} s for {total_audio:.1f} s of audio)")
    atomic_write_text(out / "enhance.json", json.dumps({"solver": args.solver, "steps": args.steps, "snr": args.snr,
                                                        "model": args.model, "prior": args.prior_mode, "seed": args.seed,
                                                        "final_denoise": not args.no_final_denoise,
                                                        "files": len(files), "rtf": total_time / total_audio}) + "\n")
    return 0


def _cmd_speech_train(args) -> int:
    from .speech.data import find_speech_pairs
    from .speech.network import SpeechCropSource
    from .training import TrainConfig, train

    source = SpeechCropSource(find_speech_pairs(args.corpus, "train"), args.crop, progress=not args.no_progress)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=400,  # fixed: runs can be extended
                         ema_decay=0.999, sigma_data=round(source.residual_std(), 4), label_dropout=0.0,
                         sigma_distribution="ouve", net="speech-unet", channels=args.channels,
                         channel_mult=tuple(args.channel_mult), num_blocks=args.num_blocks,
                         attention_resolutions=tuple(args.attention), dropout=0.0, seed=args.seed,
                         checkpoint_every=args.checkpoint_every, log_every=min(100, args.steps))
    out = Path(args.out)
    device = _training_device(args.device)
    _, meta = train(source, config, out, progress=not args.no_progress, device=device,
                    data_info={"name": "speech", "corpus": str(args.corpus), "crop": args.crop})
    tail = meta["losses"][-100:]
    print(f"trained to step {meta['step']}: loss {sum(tail) / len(tail):.4f} (mean of the last {len(tail)}); "
          f"checkpoint in {out} (re-running resumes); enhance with --model {out}")
    return 0


def _cmd_speech_eval(args) -> int:
    import numpy as np

    from .io import atomic_write_text
    from .metrics.speech import LOWER_IS_BETTER, available_metrics, speech_metrics
    from .speech.data import SpeechPair, load_pair

    dnsmos = None
    if args.dnsmos:
        from .metrics.dnsmos import DNSMOS

        dnsmos = DNSMOS(args.dnsmos)
    which = _csv_list(args.metrics) if args.metrics else list(available_metrics(dnsmos))
    if not args.metrics:
        if "warpq" not in which:
            print("WARP-Q skipped: it is an optional extra (pip install 'samplerlab[warpq]')")
        if dnsmos is None:
            print("DNSMOS skipped: pass --dnsmos DIR, a folder with the DNSMOS P.835 model (sig_bak_ovr.onnx)")
    if dnsmos is not None and dnsmos.calibration is None:
        print(f"DNSMOS: no calibration.json in {args.dnsmos}; the scores are the network's raw outputs")
    clean_dir = Path(args.clean)
    sets = {"noisy": args.noisy, "enhanced": args.enhanced}
    rows = {}
    for label, folder in sets.items():
        if not folder:
            continue
        files = sorted(Path(folder).glob("*.wav"))
        if not files:
            raise ValueError(f"{folder}: no .wav files")
        values = {m: [] for m in which}
        if not args.no_progress and len(files) > 1:
            from tqdm.auto import tqdm

            files = tqdm(files, desc=f"score {label}", unit="file", leave=False)
        for f in files:
            clean, est = load_pair(SpeechPair(f.stem, clean_dir / f.name, f))
            for m, v in speech_metrics(clean, est, which, dnsmos=dnsmos).items():
                values[m].append(v)
        rows[label] = {m: (float(np.mean(v)), float(np.std(v)), len(v)) for m, v in values.items()}
    if not rows:
        raise ValueError("give --enhanced DIR and / or --noisy DIR to compare with --clean DIR")
    header = [f"{m} (lower is better)" if m in LOWER_IS_BETTER else m for m in which]
    lines = ["| signal | " + " | ".join(header) + " |", "| --- |" + " --- |" * len(which)]
    for label, r in rows.items():
        lines.append(f"| {label} ({next(iter(r.values()))[2]} files) | "
                     + " | ".join(f"{r[m][0]:.3f} ± {r[m][1]:.3f}" for m in which) + " |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        atomic_write_text(Path(args.out), json.dumps({k: {m: {"mean": v[0], "std": v[1], "n": v[2]} for m, v in r.items()}
                                                      for k, r in rows.items()}, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


def _cmd_list(args) -> int:
    from .grids import GRIDS
    from .problems import PROBLEMS
    from .processes import PROCESSES
    from .solvers import SOLVERS

    for title, reg in (("solvers", SOLVERS), ("grids", GRIDS), ("processes", PROCESSES), ("problems", PROBLEMS)):
        print(f"{title}:")
        for name in reg.names():
            obj = reg.get(name)
            doc = (obj.__doc__ or "").strip().splitlines()
            print(f"  {name:18s} {doc[0] if doc else ''}")
    return 0


def _add_unet_args(p: argparse.ArgumentParser, channels: int, mult: list[int], attention: list[int]) -> None:
    p.add_argument("--channels", type=int, default=channels, help=f"U-Net base width (default: {channels})")
    p.add_argument("--channel-mult", type=_int_list, default=mult,
                   help=f"U-Net widths per level (default: {','.join(map(str, mult))})")
    p.add_argument("--num-blocks", type=int, default=1, help="U-Net residual blocks per level (default: 1)")
    p.add_argument("--attention", type=_int_list, default=attention,
                   help=f"resolutions (first spatial axis) with self-attention (default: {','.join(map(str, attention))})")


def _add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")


def _training_device(name: str | None) -> str:
    """The device for training: the given one, else cuda when available; under torchrun, this rank's GPU."""
    import os

    import torch

    device = name or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and torch.distributed.is_initialized():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    return device


def build_parser() -> argparse.ArgumentParser:
    from .speech.gaussian import PRIORS

    parser = argparse.ArgumentParser(prog="samplerlab", description="Samplers for diffusion models, measured.")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: $SAMPLERLAB_THREADS or 1; more oversubscribes 2-core machines)")
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="exact-score benchmark of solvers x NFE on analytic problems",
                           description="Runs every solver at every NFE budget on exact Gaussian-mixture problems "
                                       "and prints quality tables. Defaults take about a minute on 2 cores.")
    bench.add_argument("--problems", help="comma-separated problems (default: ring,gmm64; see `samplerlab list`)")
    bench.add_argument("--solvers", help="comma-separated solver specs NAME or NAME:KEY=VALUE:..., e.g. "
                       "heun,dpm-solver++:order=3,unipc:variant=bh1 (default: one per solver family)")
    bench.add_argument("--nfe", type=_int_list, help="comma-separated NFE budgets (default: 5,10,20,50)")
    bench.add_argument("--grid", default="karras", help="time grid (default: karras)")
    bench.add_argument("--grid-param", action="append", metavar="KEY=VALUE", help="grid parameter, e.g. rho=7")
    bench.add_argument("--process", default="edm", help="noise process (default: edm)")
    bench.add_argument("--process-param", action="append", metavar="KEY=VALUE", help="process parameter, e.g. t_max=80")
    bench.add_argument("--solver-param", action="append", metavar="SOLVER.KEY=VALUE",
                       help="solver parameter, e.g. ddim.eta=0.5 or edm-stochastic.s_churn=10")
    bench.add_argument("--tolerances", type=_float_list, help="tolerances for adaptive solvers (default: dopri5 rtol 0.1,0.01,0.001; ggf reltol 0.1,0.05,0.02)")
    bench.add_argument("--samples", type=int, default=None, help="samples per problem (default: per problem)")
    bench.add_argument("--seed", type=int, default=0, help="first seed; samples use seed, seed+1, ...")
    bench.add_argument("--dtype", default="float32", help="float32 or float64 (default: float32)")
    bench.add_argument("--out", help="folder for results.csv, results.json, table.txt and quality_vs_nfe.png")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.set_defaults(func=_cmd_bench)

    run = sub.add_parser("run", help="run an experiment file (solver x schedule x transform x steps), resumable")
    run.add_argument("experiment", help="TOML file, e.g. examples/sgmse_schedule_study.toml")
    run.add_argument("--out", help="run folder (default: runs/NAME); re-running resumes it")
    run.add_argument("--no-progress", action="store_true")
    run.set_defaults(func=_cmd_run)

    sched = sub.add_parser("schedules", help="schedule tools")
    sched_sub = sched.add_subparsers(dest="schedules_command", required=True)
    plot = sched_sub.add_parser("plot", help="draw sigma(t) of schedules (and their steps) to a PNG")
    plot.add_argument("--shapes", default="base,linear,subvp,ve,vp,edm",
                      help="comma-separated shapes; 'base' is the process's own (default: all)")
    plot.add_argument("--process", default="ouve", help="whose range and time the shapes take (default: ouve)")
    plot.add_argument("--steepness", type=_float_list, help="steepness exponents to draw, e.g. 1,1.2,1.5")
    plot.add_argument("--steps", type=int, default=0, help="also mark N time steps")
    plot.add_argument("--offset", type=float, default=1.0, help="timestep offset alpha for the marked steps")
    plot.add_argument("--power", type=float, default=1.0, help="power warp of the marked steps")
    plot.add_argument("--out", default="schedules.png")
    plot.set_defaults(func=_cmd_schedules_plot)

    opt = sub.add_parser("optimise-steps", help="choose a solver's steps by dynamic programming and save them")
    opt.add_argument("--problem", default="ring", help="analytic problem (default: ring)")
    opt.add_argument("--process", default="edm")
    opt.add_argument("--solver", default="heun", help="solver spec (default: heun)")
    opt.add_argument("--nfe", type=int, default=10, help="NFE budget (default: 10)")
    opt.add_argument("--candidates", type=int, default=48, help="candidate levels (Karras rho 7, default: 48)")
    opt.add_argument("--calibration", type=int, default=256, help="calibration samples (default: 256)")
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--name", help="saved grid name (default: PROBLEM-SOLVER-nfeN)")
    opt.add_argument("--grid-dir", help="folder for saved grids (default: $SAMPLERLAB_GRID_DIR or ./grids)")
    opt.set_defaults(func=_cmd_optimise_steps)

    like = sub.add_parser("likelihood", help="negative log-likelihood through the probability-flow ODE")
    like.add_argument("--problem", default="ring", help="analytic problem (default: ring)")
    like.add_argument("--samples", type=int, default=256)
    like.add_argument("--checkpoint", help="image model from samplerlab train: NLL of held-out images in bits/dim")
    like.add_argument("--data", help="data set for --checkpoint (default: the checkpoint's own, held-out split)")
    like.add_argument("--data-dir", help="folder of a local data set given by --data")
    like.add_argument("--divergence", choices=["exact", "hutchinson-rademacher", "hutchinson-gaussian"],
                      help="default: exact for analytic problems, hutchinson-rademacher for checkpoints")
    like.add_argument("--probes", type=int, default=1, help="Hutchinson probes per sample")
    like.add_argument("--sigma-max", type=float, default=80.0)
    like.add_argument("--rtol", type=float, default=1e-5)
    like.add_argument("--seed", type=int, default=0)
    like.set_defaults(func=_cmd_likelihood)

    samp = sub.add_parser("sample", help="sample a model to a PNG grid")
    samp.add_argument("--diffusers", help="local diffusers UNet2DModel or pipeline folder (needs samplerlab[diffusers])")
    samp.add_argument("--solver", default="dpm-solver++", help="solver spec (default: dpm-solver++)")
    samp.add_argument("--steps", type=int, default=20)
    samp.add_argument("--grid", default="karras",
                      help="karras, exponential, logsnr, ... on the model's sigma range, or diffusers-leading / "
                           "diffusers-linspace / diffusers-trailing for diffusers' own timesteps")
    samp.add_argument("--checkpoint", help="checkpoint folder written by samplerlab train")
    samp.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale (default: 1, none)")
    samp.add_argument("--class-label", type=int, help="one class for every sample (default: seed %% classes)")
    samp.add_argument("--seeds", default="0-15", help="e.g. 0-63 or 1,5,9")
    samp.add_argument("--out", default="samples.png")
    samp.add_argument("--no-progress", action="store_true")
    samp.set_defaults(func=_cmd_sample)

    tr = sub.add_parser("train", help="train an EDM model (U-Net on images, MLP on 2-D toys); resumable",
                        description="Defaults on digits (U-Net 32 channels, 4000 steps of 128) take about 10 minutes "
                                    "on 2 cores. Launch with torchrun for DistributedDataParallel.")
    tr.add_argument("--data", default="digits",
                    help="digits (bundled), cifar10, fashion-mnist, image-folder (with --data-dir), or a 2-D toy: "
                         "ring, moons, swissroll, checkerboard (default: digits)")
    tr.add_argument("--data-dir", help="folder of a local data set")
    tr.add_argument("--samples", type=int, default=20000, help="points drawn for a 2-D toy")
    tr.add_argument("--steps", type=int, help="optimiser steps (default: 4000 images, 3000 toys)")
    tr.add_argument("--batch-size", type=int, help="global batch (default: 128 images, 256 toys)")
    tr.add_argument("--lr", type=float, help="peak learning rate (default: 2e-3)")
    _add_unet_args(tr, channels=32, mult=[1, 2, 2], attention=[4])
    tr.add_argument("--dropout", type=float, default=0.1)
    tr.add_argument("--hidden", type=int, default=128, help="MLP width (2-D toys)")
    tr.add_argument("--depth", type=int, default=3, help="MLP blocks (2-D toys)")
    tr.add_argument("--checkpoint-every", type=int, default=500)
    tr.add_argument("--no-sample-grids", dest="sample_every_checkpoint", action="store_false",
                    help="do not write a sample grid PNG at each checkpoint")
    _add_device_arg(tr)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", help="checkpoint folder (default: runs/train-DATA)")
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=_cmd_train, foreground=True)

    ev = sub.add_parser("eval", help="Fréchet distance, precision / recall and class accuracy per solver x NFE")
    ev.add_argument("--checkpoint", required=True, help="checkpoint folder written by samplerlab train")
    ev.add_argument("--solvers", help=f"comma-separated solver specs (default: euler,heun,dpm-solver++,unipc:order=3,"
                                      f"ipndm,deis-tab:order=3)")
    ev.add_argument("--nfe", type=_int_list, help="NFE budgets (default: 5,10,20,35)")
    ev.add_argument("--cfg", type=_float_list, help="guidance scales (default: 1)")
    ev.add_argument("--samples", type=int, help="samples per cell (default: as many as held-out images)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--features", help="TorchScript feature extractor (images in [-1, 1] -> (B, d)); default: "
                                       "a classifier samplerlab trains on the data's training split")
    ev.add_argument("--cache", help="cache folder for the classifier and reference statistics "
                                    "(default: $SAMPLERLAB_CACHE or ~/.cache/samplerlab)")
    ev.add_argument("--out", help="folder for table.md and results.json")
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=_cmd_eval)

    speech = sub.add_parser("speech", help="speech enhancement: corpus, Gaussian prior, metrics")
    speech_sub = speech.add_subparsers(dest="speech_command", required=True)
    mc = speech_sub.add_parser("make-corpus", help="synthetic noisy speech (espeak-ng voices + noise), resumable")
    mc.add_argument("--out", default="data/speech-corpus")
    mc.add_argument("--train", type=int, default=200)
    mc.add_argument("--valid", type=int, default=20)
    mc.add_argument("--test", type=int, default=30)
    mc.add_argument("--seed", type=int, default=0)
    mc.add_argument("--snr-min", type=float, default=0.0)
    mc.add_argument("--snr-max", type=float, default=20.0)
    mc.add_argument("--noise", help="comma-separated noise types (default: white,pink,brown,babble)")
    mc.add_argument("--no-progress", action="store_true")
    mc.set_defaults(func=_cmd_make_corpus)
    fg = speech_sub.add_parser("fit-gaussian", help="fit the Gaussian-prior model on a corpus's train split")
    fg.add_argument("--corpus", required=True, help="make-corpus folder or VoiceBank-DEMAND root")
    fg.add_argument("--out", help="default: CORPUS/gaussian_prior.npz")
    fg.add_argument("--no-progress", action="store_true")
    fg.set_defaults(func=_cmd_fit_gaussian)
    st = speech_sub.add_parser("train", help="train the speech score network (U-Net on [Re, Im] of x and y); resumable")
    st.add_argument("--corpus", required=True, help="make-corpus folder or VoiceBank-DEMAND root (its train split)")
    st.add_argument("--steps", type=int, default=8000, help="default 8000: about an hour on 2 CPU cores (4000: 28 min)")
    st.add_argument("--batch-size", type=int, default=8)
    st.add_argument("--lr", type=float, default=5e-4)
    st.add_argument("--crop", type=int, default=64, help="frames per training crop (default: 64, about 0.5 s)")
    _add_unet_args(st, channels=16, mult=[1, 2, 2, 2], attention=[32])  # sized for CPUs
    st.add_argument("--checkpoint-every", type=int, default=500)
    _add_device_arg(st)
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--out", default="runs/speech-net")
    st.add_argument("--no-progress", action="store_true")
    st.set_defaults(func=_cmd_speech_train, foreground=True)
    se = speech_sub.add_parser("eval", help="PESQ, STOI, ESTOI, SI-SDR against clean references: mean ± std")
    se.add_argument("--clean", required=True, help="folder of clean references (matched by file name)")
    se.add_argument("--enhanced", help="folder of enhanced files")
    se.add_argument("--noisy", help="folder of noisy inputs (the baseline)")
    se.add_argument("--metrics", help="comma-separated subset of pesq,stoi,estoi,si_sdr,warpq,dnsmos_sig,dnsmos_bak,"
                                      "dnsmos_ovrl,dnsmos_p808 (default: all that run here)")
    se.add_argument("--dnsmos", metavar="DIR", help="folder with the DNSMOS P.835 model (sig_bak_ovr.onnx; optional "
                                                    "calibration.json, and model_v8.onnx for P.808) for the dnsmos_* "
                                                    "scores; none is downloaded")
    se.add_argument("--out", help="JSON file for the figures")
    se.add_argument("--no-progress", action="store_true")
    se.set_defaults(func=_cmd_speech_eval)

    en = sub.add_parser("enhance", help="enhance noisy speech (a .wav or a folder) with any solver")
    en.add_argument("input", help="noisy .wav file or folder")
    en.add_argument("--model", default="gaussian",
                    help="gaussian (the exact Gaussian-prior model) or a checkpoint folder from samplerlab speech train")
    en.add_argument("--corpus", help="corpus whose train split fits the stationary / adaptive Gaussian prior (cached in it)")
    en.add_argument("--prior", help="a Gaussian prior file from `samplerlab speech fit-gaussian`")
    en.add_argument("--prior-mode", default="utterance", choices=list(PRIORS),
                    help="utterance (default: noise and speech variances from the recording itself), adaptive "
                         "(noise variance from the training split), stationary (both from the training split)")
    en.add_argument("--solver", default="pc",
                    help="solver spec; pc (default) is SGMSE+'s: reverse-diffusion predictor + annealed-Langevin "
                         "corrector, snr 0.5 (spell out pc:... for other predictors / correctors)")
    en.add_argument("--steps", type=int, default=30)
    en.add_argument("--snr", type=float, help="corrector snr of a pc solver (SGMSE+: 0.5)")
    en.add_argument("--no-final-denoise", action="store_true",
                    help="stop at t_eps with its noise instead of the final denoising step SGMSE+ returns")
    en.add_argument("--seed", type=int, default=0)
    en.add_argument("--out", default="enhanced")
    en.add_argument("--no-progress", action="store_true")
    en.set_defaults(func=_cmd_enhance)

    lister = sub.add_parser("list", help="list solvers, grids, processes and problems")
    lister.set_defaults(func=_cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .runtime import configure_threads

    try:
        from .runtime import foreground_threads

        configure_threads(args.threads, fallback=foreground_threads() if getattr(args, "foreground", False) else 1)
        return args.func(args)
    except (UnknownNameError, ValueError) as err:
        print(f"samplerlab: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
