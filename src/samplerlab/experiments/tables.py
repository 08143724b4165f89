"""Mean ± std tables (Markdown, CSV) and plots for experiment runs, and schedule drawings."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import torch

from ..io import atomic_path, atomic_write_text

__all__ = ["write_tables", "format_study_tables", "plot_schedules"]


def _columns(cells) -> list[tuple[str, int]]:
    cols = []
    for c in cells:
        col = ("steps", c.steps) if c.steps is not None else ("nfe", c.nfe_budget)
        if col not in cols:
            cols.append(col)
    return cols


def _col_of(cell):
    return ("steps", cell.steps) if cell.steps is not None else ("nfe", cell.nfe_budget)


def _study_grid(study: str, cells, done: dict):
    rows: dict[str, dict] = {}
    mine = [c for c in cells if c.study == study]
    for c in mine:
        rec = done.get(c.key)
        if rec is not None and "metrics" in rec:
            rows.setdefault(c.config_label, {})[_col_of(c)] = rec
    return _columns(mine), rows


def format_study_tables(config, cells, done: dict, baselines: dict) -> tuple[str, list[dict]]:
    """Markdown for every study x metric, and the flat CSV rows. '**' marks the best mean per column
    among the samplers (baseline rows: noisy input and exact posterior mean, are references, not ranked)."""
    from .runner import HIGHER_IS_BETTER, METRICS

    md = io.StringIO()
    flat = []
    for study in dict.fromkeys(c.study for c in cells):
        cols, rows = _study_grid(study, cells, done)
        for metric in config.metrics:
            sign = 1 if metric in HIGHER_IS_BETTER else -1
            best = {}
            for col in cols:
                vals = [(sign * r[col]["metrics"][metric]["mean"], label) for label, r in rows.items()
                        if col in r and math.isfinite(r[col]["metrics"][metric]["mean"])]
                if vals:
                    best[col] = max(vals)[1]
            md.write(f"\n### {study}: {metric}\n\n{METRICS[metric]}; mean ± std over {_n(rows, metric)} samples\n\n")
            header = ["configuration (solver / schedule / transform)"] + [f"{k} = {v}" for k, v in cols]
            md.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
            for label, r in rows.items():
                line = [label]
                for col in cols:
                    if col not in r:
                        line.append("—")
                        continue
                    s = r[col]["metrics"][metric]
                    text = f"{s['mean']:.3f} ± {s['std']:.3f}"
                    line.append(f"**{text}**" if best.get(col) == label else text)
                    flat.append({"study": study, "configuration": label, "column": f"{col[0]}={col[1]}",
                                 "metric": metric, "mean": s["mean"], "std": s["std"], "n": s["n"],
                                 "nfe": r[col].get("nfe"), "best": best.get(col) == label})
                md.write("| " + " | ".join(line) + " |\n")
            for label, scores in baselines.items():
                s = scores[metric]
                md.write("| " + " | ".join([f"*{label}*"] + [f"{s['mean']:.3f} ± {s['std']:.3f}"] * len(cols)) + " |\n")
    return md.getvalue(), flat


def _n(rows, metric) -> int:
    for r in rows.values():
        for rec in r.values():
            return rec["metrics"][metric]["n"]
    return 0


def write_tables(config, cells, done: dict, baselines: dict, out_dir: Path) -> list[Path]:
    text, flat = format_study_tables(config, cells, done, baselines)
    atomic_write_text(out_dir / "tables.md", f"# {config.name}\n{text}")
    buf = io.StringIO()
    fields = ["study", "configuration", "column", "metric", "mean", "std", "n", "nfe", "best"]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(flat)
    atomic_write_text(out_dir / "tables.csv", buf.getvalue())
    files = [out_dir / "tables.md", out_dir / "tables.csv"]
    files += _plot_metrics(config, cells, done, out_dir)
    files += _plot_study_schedules(config, cells, done, out_dir)
    return files


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")


def _plot_metrics(config, cells, done, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for study in dict.fromkeys(c.study for c in cells):
        cols, rows = _study_grid(study, cells, done)
        if not rows:
            continue
        fig, axes = plt.subplots(1, len(config.metrics), figsize=(5 * len(config.metrics), 3.8), squeeze=False)
        for ax, metric in zip(axes[0], config.metrics):
            for k, (label, r) in enumerate(rows.items()):
                pts = [(col[1], r[col]["metrics"][metric]) for col in cols if col in r]
                ax.errorbar([p[0] for p in pts], [p[1]["mean"] for p in pts], yerr=[p[1]["std"] for p in pts],
                            marker="os^vDxP*"[k % 8], capsize=3, label=label, alpha=0.85)
            ax.set_xlabel(cols[0][0] if cols else "")
            ax.set_title(metric, fontsize=10)
            ax.grid(True, alpha=0.3)
        axes[0][0].legend(fontsize=6)
        fig.suptitle(study)
        fig.tight_layout()
        path = out_dir / f"{_slug(study)}-metrics.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
        paths.append(path)
    return paths


def _plot_study_schedules(config, cells, done, out_dir: Path) -> list[Path]:
    from ..processes import make_process
    from .runner import _process_for

    base = make_process(config.process, **config.process_params)
    paths = []
    for study in dict.fromkeys(c.study for c in cells):
        entries, seen = [], set()
        for c in cells:
            if c.study != study or c.config_label in seen or c.key not in done or "sigmas" not in done[c.key]:
                continue
            # the largest step count of this configuration shows its steps best
            same = [d for d in cells if d.study == study and d.config_label == c.config_label and d.key in done]
            last = max(same, key=lambda d: d.steps or d.nfe_budget or 0)
            process, _ = _process_for(c, base)
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
        line, = ax.plot(t.numpy(), process.sigma(t).numpy(), label=label, linewidth=1.4)
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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
