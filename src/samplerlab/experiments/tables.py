"""Mean ± std tables (Markdown, CSV) of an experiment run; the best mean per column marked."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ..io import atomic_write_text
from ..metrics.registry import metric as metric_spec

__all__ = ["write_tables", "format_study_tables", "study_grid", "paired_difference"]


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
            md.write(_paired_table(rows, cols, metric, sign))
    return md.getvalue(), flat


def paired_difference(base: list[float], other: list[float], sign: int, resamples: int = 2000, seed: int = 0) -> dict:
    """Per-file differences other - base: their mean, a 95 % percentile bootstrap interval of the mean (files
    resampled with replacement, pairs kept; Efron & Tibshirani 1993, ch. 13) and the fraction of files the
    other configuration improves (``sign``: +1 when higher is better, -1 when lower is; ties count half)."""
    import numpy as np

    d = np.asarray(other, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    better = np.mean(np.where(sign * d > 0, 1.0, np.where(d == 0, 0.5, 0.0)))
    return {"mean": float(d.mean()), "low": float(lo), "high": float(hi), "improved": float(better), "n": int(d.size)}


def _paired_table(rows: dict, cols, metric: str, sign: int) -> str:
    """Each configuration against the study's first (its baseline), file by file, where per-file scores exist."""
    labels = list(rows)
    if len(labels) < 2:
        return ""
    base = rows[labels[0]]
    if not any("values" in r[col]["metrics"][metric] for r in rows.values() for col in r):
        return ""
    out = io.StringIO()
    out.write(
        f"\nPaired against {labels[0]}: mean per-file difference [95 % bootstrap interval], share of "
        "files improved. An interval that contains 0 is not an effect at this number of files.\n\n"
    )
    header = ["configuration"] + [f"{k} = {v}" for k, v in cols]
    out.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
    for label in labels[1:]:
        line = [label]
        for col in cols:
            a, b = base.get(col), rows[label].get(col)
            va = a and a["metrics"][metric].get("values")
            vb = b and b["metrics"][metric].get("values")
            if not va or not vb or len(va) != len(vb):
                line.append("—")
                continue
            p = paired_difference(va, vb, sign)
            mark = "" if p["low"] <= 0 <= p["high"] else " *"
            line.append(f"{p['mean']:+.3f} [{p['low']:+.3f}, {p['high']:+.3f}]{mark}, {100 * p['improved']:.0f} %")
        out.write("| " + " | ".join(line) + " |\n")
    return out.getvalue() + "\n(*: the interval excludes 0)\n"


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
