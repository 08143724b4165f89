"""Scoring folders of recordings against clean references: mean ± std per metric over files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..metrics.registry import metric as metric_spec
from ..metrics.speech import check_metrics, min_samples_for, speech_metrics
from .data import SpeechPair, load_pair

__all__ = ["score_folders", "format_scores", "scores_to_json"]


def score_folders(
    clean_dir, folders: dict[str, str | None], which: list[str], *, dnsmos=None, progress: bool = False
) -> dict[str, dict[str, tuple[float, float, int]]]:
    """{label: {metric: (mean, std, files)}} for each labelled folder of .wav files (matched to
    ``clean_dir`` by file name); folders given as None are skipped."""
    check_metrics(which, dnsmos)
    clean_dir = Path(clean_dir)
    shortest = min_samples_for(which)
    listed = {}
    for label, folder in folders.items():
        if not folder:
            continue
        files = sorted(Path(folder).glob("*.wav"))
        if not files:
            raise ValueError(f"{folder}: no .wav files")
        for f in files:  # every file checked (readable, whole, finite, long enough) before any scoring
            load_pair(SpeechPair(f.stem, clean_dir / f.name, f), min_samples=shortest)
        listed[label] = files
    rows = {}
    for label, files in listed.items():
        values = {m: [] for m in which}
        if progress and len(files) > 1:
            from tqdm.auto import tqdm

            files = tqdm(files, desc=f"score {label}", unit="file", leave=False)
        for f in files:
            clean, est = load_pair(SpeechPair(f.stem, clean_dir / f.name, f), min_samples=shortest)
            for m, v in speech_metrics(clean, est, which, dnsmos=dnsmos).items():
                values[m].append(v)
        rows[label] = {m: (float(np.mean(v)), float(np.std(v)), len(v)) for m, v in values.items()}
    return rows


def format_scores(rows: dict, which: list[str]) -> str:
    """A Markdown table: one row per folder, one column per metric (its direction from the registry)."""
    header = [m if metric_spec(m).higher_is_better else f"{m} (lower is better)" for m in which]
    lines = ["| signal | " + " | ".join(header) + " |", "| --- |" + " --- |" * len(which)]
    for label, r in rows.items():
        lines.append(
            f"| {label} ({next(iter(r.values()))[2]} files) | "
            + " | ".join(f"{r[m][0]:.3f} ± {r[m][1]:.3f}" for m in which)
            + " |"
        )
    return "\n".join(lines)


def scores_to_json(rows: dict) -> dict:
    return {k: {m: {"mean": v[0], "std": v[1], "n": v[2]} for m, v in r.items()} for k, r in rows.items()}
