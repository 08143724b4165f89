"""Plots of an experiment run: each study's metrics against steps, and the sigma(t) curves of its
configurations with their steps marked; ``plot_schedules`` draws any processes' curves."""

from __future__ import annotations

from pathlib import Path

import torch

from ..imaging import save_figure
from ..metrics.registry import metric as metric_spec
from ..processes import make_process
from .config import process_for
from .tables import paired_difference, study_grid

__all__ = ["plot_metrics", "plot_study_schedules", "plot_schedules", "plot_schedule_family"]


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")


def _metric_panels(plt, n: int):
    """A figure with one panel per metric in rows of three (nine metrics stay readable); unused panels hidden."""
    ncols = min(3, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def plot_metrics(config, cells, done, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for study in dict.fromkeys(c.study for c in cells):
        cols, rows = study_grid(study, cells, done)
        if not rows:
            continue
        fig, axes = _metric_panels(plt, len(config.metrics))
        for ax, metric in zip(axes, config.metrics):
            for k, (label, r) in enumerate(rows.items()):
                pts = [(col[1], r[col]["metrics"][metric]) for col in cols if col in r]
                ax.errorbar(
                    [p[0] for p in pts],
                    [p[1]["mean"] for p in pts],
                    yerr=[p[1]["std"] for p in pts],
                    marker="os^vDxP*"[k % 8],
                    capsize=3,
                    label=label,
                    alpha=0.85,
                )
            ax.set_xlabel(cols[0][0] if cols else "")
            ax.set_xticks(sorted({col[1] for col in cols}))  # the measured budgets, not a generic spacing
            ax.set_title(metric_spec(metric).label, fontsize=10)
            ax.grid(True, alpha=0.3)
        axes[0].legend(fontsize=6)
        fig.suptitle(study)
        fig.tight_layout()
        path = out_dir / f"{_slug(study)}-metrics.png"
        save_figure(fig, path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths + plot_paired(config, cells, done, out_dir)


def plot_paired(config, cells, done, out_dir: Path) -> list[Path]:
    """Per study, each configuration's mean per-file difference to the study's baseline (its first
    configuration) with the 95 % bootstrap interval (``tables.paired_difference``), where per-file scores
    exist: an effect is where the bar clears 0, however large the spread between files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for study in dict.fromkeys(c.study for c in cells):
        cols, rows = study_grid(study, cells, done)
        labels = list(rows)
        if len(labels) < 2 or not any(
            "values" in m for r in rows.values() for rec in r.values() for m in rec["metrics"].values()
        ):
            continue
        base = rows[labels[0]]
        fig, axes = _metric_panels(plt, len(config.metrics))
        for ax, metric in zip(axes, config.metrics):
            sign = metric_spec(metric).direction.sign
            for k, label in enumerate(labels[1:]):
                xs, ys, lo, hi = [], [], [], []
                for col in cols:
                    a, b = base.get(col), rows[label].get(col)
                    va = a and a["metrics"][metric].get("values")
                    vb = b and b["metrics"][metric].get("values")
                    if not va or not vb or len(va) != len(vb):
                        continue
                    p = paired_difference(va, vb, sign)
                    xs.append(col[1])
                    ys.append(p["mean"])
                    lo.append(p["mean"] - p["low"])
                    hi.append(p["high"] - p["mean"])
                if xs:
                    ax.errorbar(xs, ys, yerr=[lo, hi], marker="s^vDxP*o"[k % 8], capsize=3, label=label, alpha=0.85)
            ax.axhline(0.0, color="black", linewidth=0.8)
            ax.set_xticks(sorted({col[1] for col in cols}))
            ax.set_xlabel(cols[0][0] if cols else "")
            ax.set_title(f"{metric_spec(metric).label}", fontsize=9)
            ax.grid(True, alpha=0.3)
        axes[0].legend(fontsize=6)
        fig.suptitle(f"{study}: paired differences to {labels[0]}, 95 % bootstrap intervals", fontsize=10)
        fig.tight_layout()
        path = out_dir / f"{_slug(study)}-paired.png"
        save_figure(fig, path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_study_schedules(config, cells, done, out_dir: Path) -> list[Path]:
    base = make_process(config.process, **config.process_params)
    paths = []
    for study in dict.fromkeys(c.study for c in cells):
        entries, seen = [], set()
        for c in cells:
            if c.study != study or c.config_label in seen or c.key not in done or "sigmas" not in done[c.key]:
                continue
            # the largest step count of this configuration shows its steps best
            same = [
                d
                for d in cells
                if d.study == study and d.config_label == c.config_label and "sigmas" in done.get(d.key, {})
            ]  # skipped cells (a budget a solver or a grid file cannot meet) have none
            last = max(same, key=lambda d: d.steps or d.nfe_budget or 0)
            process, _ = process_for(c, base)
            entries.append((c.config_label.split(" / ", 1)[1], process, done[last.key]["sigmas"]))
            seen.add(c.config_label)
        if entries:
            path = out_dir / f"{_slug(study)}-schedules.png"
            plot_schedules(entries, path, title=study)
            paths.append(path)
    return paths


def plot_schedules(entries, path: str | Path, title: str = "") -> None:
    """sigma(t) of each (label, process, grid sigmas or None), with the grid's steps marked at their times."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for k, (label, process, sigmas) in enumerate(entries):
        t = torch.linspace(process.t_min, process.t_max, 400, dtype=torch.float64)
        (line,) = ax.plot(t.numpy(), process.sigma(t).numpy(), label=label, linewidth=1.4)
        if sigmas:
            pos = torch.tensor([s for s in sigmas if s > 0], dtype=torch.float64)
            ax.plot(process.t_of_sigma(pos).numpy(), pos.numpy(), "o", color=line.get_color(), markersize=3.5)
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("sigma(t)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_schedule_family(
    base,
    shapes: list[str],
    path: str | Path,
    *,
    steepness: list[float] | None = None,
    steps: int = 0,
    offset: float = 1.0,
    power: float = 1.0,
) -> None:
    """sigma(t) of each schedule shape ('base': the process's own) at each steepness, on ``base``'s range and
    time, with ``steps`` time steps (timestep offset ``offset``, power warp ``power``) marked when > 0."""
    from ..grids import time_steps
    from ..schedules import ScheduledProcess

    entries = []
    for shape in shapes:
        for alpha in steepness or [1.0]:
            process = (
                base
                if shape == "base" and alpha == 1.0
                else ScheduledProcess.swap(base, base.name if shape == "base" else shape, alpha)
            )
            grid = time_steps(steps, process, offset=offset, power=power).tolist() if steps else None
            label = shape + ("" if alpha == 1.0 else f", steepness {alpha:g}")
            entries.append((label, process, grid))
    plot_schedules(entries, path, title=f"schedules on the {base.name} process's range")
