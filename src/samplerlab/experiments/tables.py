"""Mean ± std tables (Markdown, CSV) of an experiment run; the best mean per column marked."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ..io import atomic_write_text
from ..metrics.registry import metric as metric_spec

__all__ = ["write_tables", "format_study_tables", "study_grid"]


def _columns(cells) -> list[tuple[str, int]]:
    cols = []
    for c in cells:
        col = ("steps", c.steps) if c.steps is not None else ("nfe", c.nfe_budget)
        if col not in cols:
            cols.append(col)
    return cols


def _col_of(cell):
    return ("steps", cell.steps) if cell.steps is not None else ("nfe", cell.nfe_budget)


def study_grid(study: str, cells, done: dict):
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
    md = io.StringIO()
    flat = []
    for study in dict.fromkeys(c.study for c in cells):
        cols, rows = study_grid(study, cells, done)
        for metric in config.metrics:
            spec = metric_spec(metric)
            sign = spec.direction.sign
            best = {}
            for col in cols:
                vals = [
                    (sign * r[col]["metrics"][metric]["mean"], label)
                    for label, r in rows.items()
                    if col in r and math.isfinite(r[col]["metrics"][metric]["mean"])
                ]
                if vals:
                    best[col] = max(vals)[1]
            md.write(f"\n### {study}: {metric}\n\n{spec.caption()}; mean ± std over {_n(rows, metric)} samples\n\n")
            header = ["configuration (solver / schedule / transform)"] + [f"{k} = {v}" for k, v in cols]
            md.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
            for label, r in rows.items():
                line = [label]
                for col in cols:
                    if col not in r:
                        line.append("—")
                        continue
                    s = r[col]["metrics"][metric]
                    text = _mean_std(s)
                    line.append(f"**{text}**" if best.get(col) == label else text)
                    flat.append(
                        {
                            "study": study,
                            "configuration": label,
                            "column": f"{col[0]}={col[1]}",
                            "metric": metric,
                            "mean": s["mean"],
                            "std": s["std"],
                            "n": s["n"],
                            "nfe": r[col].get("nfe"),
                            "best": best.get(col) == label,
                        }
                    )
                md.write("| " + " | ".join(line) + " |\n")
            for label, scores in baselines.items():
                s = scores[metric]
                md.write("| " + " | ".join([f"*{label}*"] + [_mean_std(s)] * len(cols)) + " |\n")
    return md.getvalue(), flat


def _mean_std(s: dict) -> str:
    """'mean ± std'; a set statistic (sliced W2) has no per-sample spread and shows its value alone."""
    return (
        f"{s['mean']:.3f}"
        if math.isnan(s["std"]) and not math.isnan(s["mean"])
        else f"{s['mean']:.3f} ± {s['std']:.3f}"
    )


def _n(rows, metric) -> int:
    for r in rows.values():
        for rec in r.values():
            return rec["metrics"][metric]["n"]
    return 0


def write_tables(config, cells, done: dict, baselines: dict, out_dir: Path) -> list[Path]:
    """tables.md and tables.csv, each written atomically."""
    text, flat = format_study_tables(config, cells, done, baselines)
    atomic_write_text(out_dir / "tables.md", f"# {config.name}\n{text}")
    buf = io.StringIO()
    fields = ["study", "configuration", "column", "metric", "mean", "std", "n", "nfe", "best"]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(flat)
    atomic_write_text(out_dir / "tables.csv", buf.getvalue())
    return [out_dir / "tables.md", out_dir / "tables.csv"]
