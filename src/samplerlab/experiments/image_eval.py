"""Image models: generate with any solver x NFE x guidance scale and score the samples.

For each cell: Fréchet distance to the training split's feature statistics (the held-out real
images give the floor), improved precision / recall against the reference features, and, for a
class-conditional model with the samplerlab feature classifier, the share of samples the classifier
assigns to the requested class. Samples use the model's process (EDM, or rectified flow for a flow-matching
model) and its default grid: Karras et al.'s (rho = 7, sigma in [0.002, 80]) under EDM, the flow grid
(uniform in t from t_max = 1 - 1e-4) under rectified flow; sample i uses seed ``seed + i`` and a class drawn uniformly from that seed
(``random_labels``), so a cell's samples do not depend on batch size or on how seeds are sharded over
torchrun processes. Random rather than balanced classes matter: in a classifier's feature space the
class clusters dominate the covariance, and exactly balanced classes would score a lower Fréchet
distance than any real sample of the same size (measured on digits: 0.09 balanced against a
real-vs-real floor of 0.35 at n = 359).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..denoisers import ClassifierFreeGuidance, LevelShift
from ..distributed import gather, shard
from ..grids import GridFile, is_grid_file, make_grid
from ..metrics.distribution import precision_recall
from ..metrics.features import ReferenceStats, batched_features
from ..processes import Process, make_process
from ..sampling import generate
from ..solvers import solver_from_spec

__all__ = [
    "ImageEvalConfig",
    "ImageEvalRow",
    "sample_images",
    "sample_checkpoint",
    "checkpoint_sample_grid",
    "evaluate_image_model",
    "evaluate_checkpoint",
    "write_image_eval",
    "format_image_eval",
    "random_labels",
    "sampling_range",
    "model_process",
    "default_grid",
]

DEFAULT_EVAL_SOLVERS = ["euler", "heun", "dpm-solver++", "unipc:order=3", "ipndm", "deis-tab:order=3"]


@dataclass
class ImageEvalConfig:
    solvers: list[str] = field(default_factory=lambda: list(DEFAULT_EVAL_SOLVERS))
    nfes: list[int] = field(default_factory=lambda: [5, 10, 20, 35])
    guidance: list[float] = field(default_factory=lambda: [1.0])
    samples: int = 1000
    seed: int = 0
    batch: int = 500
    process: str = "edm"  # the process the model samples under (a flow-matching model: "rectified-flow")
    sigma_min: float = 0.002  # the model's sampling range (``sampling_range``)
    sigma_max: float = 80.0
    rho: float = 7.0
    grid: str | None = None  # a grid file (samplerlab calibrate) instead of Karras's grid; cells of other steps skip
    grid_name: str = "karras"  # a registered grid on [sigma_min, sigma_max] when no grid file is given


@dataclass
class ImageEvalRow:
    solver: str
    nfe_budget: int
    steps: int | None
    nfe: int | None
    guidance: float
    fd: float | None
    fd_interval: tuple[float, float] | None  # 95 %, across sample sets of this size (ReferenceStats.frechet_interval)
    precision: float | None
    recall: float | None
    class_accuracy: float | None
    seconds: float
    kid: float | None = None  # unbiased KID (Bińkowski et al. 2018) to the training split's features
    kid_se: float | None = None  # its standard error (jackknife over the generated samples)
    # against the cell of lowest FD, on the same seeds (paired): FD difference with its 95 % interval, and the
    # KID difference with its standard error; None for that cell itself
    fd_vs_best: tuple[float, float, float] | None = None
    kid_vs_best: tuple[float, float] | None = None


def model_process(meta: dict) -> Process:
    """The process a model samples under: ``meta["process"]`` (rectified flow for a flow-matching checkpoint),
    EDM's where the metadata names none."""
    return make_process(meta.get("process", "edm"))


def default_grid(meta: dict) -> str:
    """The grid a model samples on unless told: the flow grid under rectified flow, else Karras et al.'s."""
    return "flow" if model_process(meta).name == "rectified-flow" else "karras"


def sampling_range(meta: dict) -> tuple[float, float]:
    """The model's process's range (EDM's [0.002, 80]; rectified flow's [0.001, 9999]), narrowed to a published
    model's trained range (``meta``'s sigma_min / sigma_max, as EDM's sampler narrows it); a samplerlab
    checkpoint names none and keeps its process's."""
    process = model_process(meta)
    return (
        max(process.sigma_min, float(meta.get("sigma_min", 0.0))),
        min(process.sigma_max, float(meta.get("sigma_max", math.inf))),
    )


def random_labels(seeds: list[int], num_classes: int) -> Tensor:
    """One class per seed, uniform, a function of the seed alone."""
    return torch.tensor(
        [
            int(torch.randint(num_classes, (1,), generator=torch.Generator().manual_seed(s + 7919 * 10**6)))
            for s in seeds
        ]
    )


def sample_images(
    model,
    shape,
    solver_spec: str,
    steps: int,
    seeds: list[int],
    *,
    num_classes: int = 0,
    labels: Tensor | None = None,
    guidance: float = 1.0,
    config: ImageEvalConfig | None = None,
    batch: int = 500,
    progress: bool = False,
) -> tuple[Tensor, int]:
    """Images for ``seeds`` (sharded over torchrun processes and gathered) and the counted NFE."""
    cfg = config or ImageEvalConfig()
    solver = solver_from_spec(solver_spec)
    process = make_process(cfg.process)
    denoiser = model
    if cfg.grid is not None:
        grid_file = GridFile.read(cfg.grid)
        if grid_file.num_steps != steps:
            raise ValueError(f"the grid file {cfg.grid} has {grid_file.num_steps} steps, not {steps}")
        try:
            grid = grid_file.tensor(process)
        except ValueError as err:
            raise ValueError(f"{cfg.grid}: {err}") from None
        solver = grid_file.configure(solver)
        if grid_file.model_sigmas is not None:
            denoiser = LevelShift(model, grid, grid_file.model_sigmas)
    elif cfg.grid_name == "karras":
        grid = make_grid("karras", steps, process, sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max, rho=cfg.rho)
    elif (cfg.sigma_min, cfg.sigma_max) == (process.sigma_min, process.sigma_max):
        grid = make_grid(cfg.grid_name, steps, process)  # the process's own range: grids that take none work too
    else:
        grid = make_grid(cfg.grid_name, steps, process, sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max)
    if num_classes and guidance != 1.0:
        denoiser = ClassifierFreeGuidance(denoiser, guidance, {"class_labels": None})
    if num_classes and labels is None:
        labels = torch.tensor(seeds) % num_classes
    mine = shard(list(range(len(seeds))))
    out, nfe = [], 0
    for k in range(0, len(mine), batch):
        idx = mine[k : k + batch]
        cond = {"class_labels": labels[idx]} if num_classes else {}
        with torch.no_grad():
            r = generate(
                denoiser, shape, grid, solver, [seeds[i] for i in idx], process=process, cond=cond, progress=progress
            )
        out.append(r.x)
        nfe = r.nfe
    x = torch.cat(out) if out else torch.empty(0, *shape)
    return gather(x, seeds), nfe


def sample_checkpoint(
    model,
    meta: dict,
    solver_spec: str,
    steps: int,
    seeds: list[int],
    *,
    class_label: int | None = None,
    guidance: float = 1.0,
    progress: bool = False,
    name: str = "the checkpoint",
    grid: str | None = None,
) -> tuple[Tensor, int]:
    """Images of a trained image model (``training.load_checkpoint``) or a published one
    (``adapters.published``) for ``seeds``: one class for all when ``class_label`` is given, else seed %
    classes; ``guidance`` != 1 needs a class-conditional model. ``grid`` is a registered grid's name or spec, laid
    on the model's sigma range (``sampling_range``), or a grid file of ``samplerlab calibrate``; None: the
    model's default (``default_grid``)."""
    shape, num_classes = tuple(meta["shape"]), meta["num_classes"]
    if len(shape) != 3:
        raise ValueError(f"{name} is a model of {shape}-shaped points, not images; sample it from the API")
    labels = None
    if class_label is not None:
        if not 0 <= class_label < num_classes:
            raise ValueError(
                f"--class-label {class_label}: the model has classes 0-{num_classes - 1}"
                if num_classes
                else f"--class-label: {name} is not class-conditional"
            )
        labels = torch.full((len(seeds),), class_label)
    if guidance != 1.0 and not num_classes:
        raise ValueError(f"--cfg {guidance}: guidance needs a class-conditional model")
    config = ImageEvalConfig(process=model_process(meta).name)
    config.sigma_min, config.sigma_max = sampling_range(meta)
    grid = grid or default_grid(meta)
    if is_grid_file(grid):
        config.grid = grid
    else:
        config.grid_name = grid
    return sample_images(
        model,
        shape,
        solver_spec,
        steps,
        seeds,
        num_classes=num_classes,
        labels=labels,
        guidance=guidance,
        config=config,
        progress=progress,
    )


def checkpoint_sample_grid(data_shape, num_classes: int | None, path, process: str = "edm"):
    """A callback for ``train(on_checkpoint=...)``: a fixed 10 x 10 grid (class = column), Heun at 35 NFE on the
    default grid of the model's ``process``."""
    from ..imaging import save_image_grid

    meta = {"process": process}
    config = ImageEvalConfig(process=process, grid_name=default_grid(meta))
    config.sigma_min, config.sigma_max = sampling_range(meta)

    def on_checkpoint(step, model):
        n = 10 * max(1, min(10, num_classes or 10))
        x, _ = sample_images(
            model, tuple(data_shape), "heun", 18, list(range(n)), num_classes=num_classes, config=config
        )
        save_image_grid(x, path / f"step-{step:07d}.png", nrow=10, scale=max(1, 32 // x.shape[-1]))

    return on_checkpoint


def evaluate_image_model(
    model, meta: dict, ref: ReferenceStats, extractor, config: ImageEvalConfig, *, progress: bool = False, on_row=None
) -> list[ImageEvalRow]:
    shape = tuple(meta["shape"])
    num_classes = meta.get("num_classes", 0)
    seeds = list(range(config.seed, config.seed + config.samples))
    labels = random_labels(seeds, num_classes) if num_classes else None
    rows, features = [], []
    cells = [(g, spec, budget) for g in config.guidance for spec in config.solvers for budget in config.nfes]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(cells, desc="eval", unit="cell")
    for g, spec, budget in cells:
        solver = solver_from_spec(spec)
        steps = solver.steps_for_nfe(budget)
        if steps is not None and config.grid is not None and GridFile.read(config.grid).misfit(solver, steps):
            steps = None  # the grid file is for another step count or solver
        if steps is None:
            row = ImageEvalRow(spec, budget, None, None, g, None, None, None, None, None, 0.0)
            feats = None
        else:
            start = time.perf_counter()
            x, nfe = sample_images(
                model,
                shape,
                spec,
                steps,
                seeds,
                num_classes=num_classes,
                labels=labels,
                guidance=g,
                config=config,
                batch=config.batch,
            )
            feats = batched_features(extractor, x.clamp(-1, 1))
            precision, recall = precision_recall(ref.features, feats)
            acc = None
            if labels is not None and hasattr(extractor, "predict"):
                acc = float((extractor.predict(x.clamp(-1, 1)) == labels).double().mean())
            fd, interval = ref.frechet(feats), ref.frechet_interval(feats)
            kid, kid_se = ref.kid(feats)
            row = ImageEvalRow(
                spec,
                budget,
                steps,
                nfe,
                g,
                fd,
                interval,
                precision,
                recall,
                acc,
                time.perf_counter() - start,
                kid,
                kid_se,
            )
        rows.append(row)
        features.append(feats)
        if on_row:
            on_row(row)
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    compare_to_best(rows, features, ref)
    return rows


def compare_to_best(rows: list[ImageEvalRow], features: list, ref: ReferenceStats) -> None:
    """Fill each row's paired differences to the row of lowest FD (same seeds, so the differences are measured
    far more precisely than either FD; ``ReferenceStats.frechet_difference_interval``, ``kid_difference``)."""
    scored = [i for i, r in enumerate(rows) if r.fd is not None and features[i] is not None]
    if len(scored) < 2:
        return
    best = min(scored, key=lambda i: rows[i].fd)
    for i in scored:
        if i != best:
            rows[i].fd_vs_best = ref.frechet_difference_interval(features[i], features[best])
            rows[i].kid_vs_best = ref.kid_difference(features[i], features[best])


def format_image_eval(rows: list[ImageEvalRow], ref: ReferenceStats) -> str:
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    lines = [
        f"Fréchet distance to {ref.n_reference} training images; real-vs-real floor (held-out "
        f"{ref.n_held_out}): {ref.floor:.3f}"
        + (f"; classifier held-out accuracy {ref.held_out_accuracy:.3f}" if ref.held_out_accuracy is not None else ""),
        "",
        "| solver | NFE budget | steps | NFE | guidance | FD | FD 95 % interval | FD / floor | FD - best [95 %] "
        "| KID x 1e3 | KID - best x 1e3 | precision | recall | class acc. | s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ratio = None if r.fd is None else r.fd / ref.floor
        interval = "-" if r.fd_interval is None else f"{r.fd_interval[0]:.3f}-{r.fd_interval[1]:.3f}"
        kid = "-" if r.kid is None else f"{1e3 * r.kid:.2f} +- {1e3 * 1.96 * r.kid_se:.2f}"
        fd_diff = kid_diff = "-"
        if r.fd_vs_best is not None:
            d, lo, hi = r.fd_vs_best
            fd_diff = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" + ("" if lo > 0 or hi < 0 else " n.s.")
            kd, kse = r.kid_vs_best
            kid_diff = f"{1e3 * kd:+.2f} +- {1e3 * 1.96 * kse:.2f}" + ("" if abs(kd) > 1.96 * kse else " n.s.")
        elif r.fd is not None and any(o.fd_vs_best is not None for o in rows):
            fd_diff = kid_diff = "best"
        lines.append(
            f"| {r.solver} | {r.nfe_budget} | {f(r.steps, 'd')} | {f(r.nfe, 'd')} | {r.guidance:g} | "
            f"{f(r.fd, '.3f')} | {interval} | {f(ratio, '.2f')} | {fd_diff} | {kid} | {kid_diff} | "
            f"{f(r.precision, '.3f')} | "
            f"{f(r.recall, '.3f')} | "
            f"{f(r.class_accuracy, '.3f')} | {r.seconds:.1f} |"
        )
    lines += [
        "",
        "FD 95 % interval: FD +- 1.96 standard deviations across sample sets of this size (estimated from 200 "
        "half-samples); FDs whose intervals overlap are not told apart at this sample count. KID: unbiased kernel "
        "inception distance (cubic kernel) x 1000 +- 1.96 standard errors (jackknife over the samples); "
        "unbiased at any sample count, so it may dip below 0 when model and data agree. FD - best, KID - best: "
        "differences to the cell of lowest FD on the same seeds, with a 95 % interval from paired half-samples "
        "(FD) or +- 1.96 paired jackknife standard errors (KID); n.s.: the interval contains 0, the cells are "
        "not told apart. Paired differences are far more precise than the intervals of the FDs themselves.",
    ]
    if any(r.guidance != 1.0 for r in rows):
        lines += [
            "",
            "NFE counts guided denoiser calls; with guidance != 1 each is two network calls (cond and uncond).",
        ]
    return "\n".join(lines)


def evaluate_checkpoint(
    checkpoint,
    *,
    solvers: list[str] | None = None,
    nfes: list[int] | None = None,
    guidance: list[float] | None = None,
    samples: int | None = None,
    seed: int = 0,
    features: str | None = None,
    cache: str | None = None,
    progress: bool = False,
    grid: str | None = None,
    model_config: str | None = None,
    data: str | None = None,
    data_dir: str | None = None,
):
    """``evaluate_image_model`` on a checkpoint of ``samplerlab train``, or on a published checkpoint file
    (``adapters.published``; ``model_config`` for score_sde) with the data set it was trained on named by
    ``data`` / ``data_dir`` (split as samplerlab train splits it). The features are a TorchScript extractor
    (``features``) or a classifier trained (and cached) on the data's training split; the reference statistics
    are the training split's and the floor is the held-out split's. Returns (rows, ref, config)."""
    from ..data import load_dataset, split_dataset
    from ..metrics.features import (
        ClassifierFeatures,
        TorchScriptFeatures,
        load_or_train_classifier,
        reference_statistics,
    )
    from ..training import load_checkpoint

    if grid is not None and is_grid_file(grid):
        GridFile.read(grid)  # a bad grid file is named before any work
    if Path(checkpoint).is_file():
        model, meta, info = _published_with_data(checkpoint, model_config, data, data_dir)
    else:
        if data is not None:
            raise ValueError(f"--data is for published checkpoint files; {checkpoint} names the data it was trained on")
        model, meta = load_checkpoint(checkpoint)
        info = meta.get("data") or {}
    if len(meta.get("shape", ())) != 3 or "held_out" not in info:
        raise ValueError(f"{checkpoint}: eval needs an image model trained by `samplerlab train` on an image data set")
    train_set, held_out = split_dataset(
        load_dataset(info["name"], **info["params"]), info["held_out"], info["split_seed"]
    )
    if features:
        extractor, tag = TorchScriptFeatures(features), "ts-" + Path(features).stem
    else:
        if train_set.labels is None:
            raise ValueError(f"{info['name']} has no labels to train the feature classifier; give --features F.pt")
        extractor = ClassifierFeatures(
            load_or_train_classifier(train_set.data, train_set.labels, cache=cache, progress=progress)
        )
        tag = "classifier"
    ref = reference_statistics(
        extractor, train_set.data, held_out.data, tag=tag, cache=cache, held_out_labels=held_out.labels
    )
    if tuple(train_set.data.shape[1:]) != tuple(meta["shape"]):
        raise ValueError(
            f"{checkpoint} makes images of shape {tuple(meta['shape'])}, the data set {info['name']} has "
            f"{tuple(train_set.data.shape[1:])}"
        )
    defaults = ImageEvalConfig()
    lo, hi = sampling_range(meta)
    grid = grid or default_grid(meta)
    config = ImageEvalConfig(
        solvers=solvers or defaults.solvers,
        nfes=nfes or [5, 10, 20, 35],
        guidance=guidance or [1.0],
        samples=samples or len(held_out),
        seed=seed,
        grid=grid if is_grid_file(grid) else None,
        grid_name=defaults.grid_name if is_grid_file(grid) else grid,
        process=model_process(meta).name,
        sigma_min=lo,
        sigma_max=hi,
    )
    return evaluate_image_model(model, meta, ref, extractor, config, progress=progress), ref, config


def _published_with_data(checkpoint, model_config, data, data_dir):
    """A published checkpoint's denoiser and metadata, and the data facts a samplerlab checkpoint would hold."""
    from ..adapters.published import load_published
    from ..data.training import HELD_OUT

    if not data:
        raise ValueError(
            f"{checkpoint}: a published checkpoint does not name the data it was trained on; give --data NAME "
            "(cifar10, image-folder, fashion-mnist, digits) and --data-dir DIR"
        )
    if data != "digits" and not data_dir:
        raise ValueError(f"--data {data} reads local files: give --data-dir")
    published = load_published(checkpoint, config=model_config)
    params = {} if data == "digits" else {"root": data_dir}
    return published.denoiser, published.meta(), {"name": data, "params": params, "held_out": HELD_OUT, "split_seed": 0}


def write_image_eval(
    out, checkpoint, rows: list[ImageEvalRow], ref: ReferenceStats, config: ImageEvalConfig, table: str
) -> list:
    """table.md and results.json in ``out``, each written atomically."""
    import dataclasses
    import json

    from ..io import atomic_write_text

    out = Path(out)
    atomic_write_text(out / "table.md", table + "\n")
    atomic_write_text(
        out / "results.json",
        json.dumps(
            {
                "checkpoint": str(checkpoint),
                "floor": ref.floor,
                "n_reference": ref.n_reference,
                "n_held_out": ref.n_held_out,
                "config": dataclasses.asdict(config),
                "rows": [dataclasses.asdict(r) for r in rows],
            },
            indent=2,
        )
        + "\n",
    )
    return [out / "table.md", out / "results.json"]
