"""The published SGMSE+ sampler study's findings next to a samplerlab run of the same experiments.

    samplerlab --threads 2 run examples/sgmse_speech_study_network.toml --out runs/speech-study-net
    python examples/seed000_side_by_side.py runs/speech-study-net [--out side-by-side.md]

For every configuration of the four experiments and every N the study printed, the study's change against
its baseline (Lavrinovics, "Role of Samplers in Diffusion Based Generative Models", ../shared/seeds/000:
means over 35 files, one sampling seed, no intervals) next to the run's paired per-file difference against
its baseline with a 95 % bootstrap interval (``tables.paired_difference``), for PESQ and, as directions,
STOI, WARP-Q and DNSMOS OVRL. WARP-Q's scale differs between the study's implementation (about 0.75-1.0)
and the ``warpq`` package's (about 2), so only its direction is compared; lower is better in both.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from samplerlab.experiments.tables import paired_difference
from samplerlab.io import atomic_write_text

METRICS = ("pesq", "stoi", "warpq", "dnsmos_ovrl")  # the study's four, in its column order
SIGN = {"pesq": 1, "stoi": 1, "warpq": -1, "dnsmos_ovrl": 1}

# The study's tables (PESQ, STOI, WARP-Q, DNSMOS means), read from the seed's slides. Experiment 1's row
# labels are garbled in the text; the order of the slide (linear, sub-VP, VE, VP, NVIDIA = EDM, baseline)
# is used. Experiment 4 printed one non-uniform configuration; power = 2 is set beside it.
BASE = {10: (1.49, 0.884, 0.896, 2.561), 15: (1.93, 0.911, 0.805, 2.858), 30: (2.175, 0.922, 0.765, 2.927)}
PUBLISHED = {
    "1 interchanged schedules": {
        "linear": {10: (2.147, 0.911, 0.776, 2.909), 30: (2.287, 0.923, 0.755, 2.934)},
        "subvp": {10: (1.503, 0.891, 0.884, 2.549), 30: (2.202, 0.923, 0.775, 2.898)},
        "ve": {10: (1.62, 0.885, 0.907, 2.619), 30: (2.13, 0.92, 0.774, 2.861)},
        "vp": {10: (2.122, 0.907, 0.774, 2.925), 30: (2.31, 0.92, 0.748, 2.96)},
        "edm": {10: (1.883, 0.908, 0.812, 2.824), 30: (2.249, 0.923, 0.759, 2.909)},
    },
    "2 steepness": {
        "steepness=1.05": {10: (1.498, 0.882, 0.905, 2.563), 30: (2.17, 0.921, 0.764, 2.928)},
        "steepness=1.1": {10: (1.513, 0.881, 0.913, 2.566), 30: (2.167, 0.921, 0.768, 2.912)},
        "steepness=1.2": {10: (1.548, 0.879, 0.928, 2.586), 30: (2.156, 0.921, 0.767, 2.912)},
        "steepness=1.5": {10: (1.504, 0.864, 1.017, 2.498), 30: (2.089, 0.916, 0.782, 2.888)},
    },
    "3 timestep offset": {
        "offset=0.8": {
            10: (1.945, 0.903, 0.834, 2.809),
            15: (2.135, 0.915, 0.779, 2.918),
            30: (2.211, 0.923, 0.759, 2.944),
        },
    },
    "4 non-uniform steps": {
        "power=2": {
            10: (1.464, 0.878, 0.912, 2.567),
            15: (2.1, 0.91, 0.791, 2.884),
            30: (2.187, 0.922, 0.761, 2.936),
        },
    },
}


def configuration(record: dict) -> str:
    """The label the study's tables use for a run record: its schedule, or its transform on the base."""
    return record["schedule"] if record["schedule"] != "base" else record["transform"]


def side_by_side(records: list[dict]) -> str:
    by_key = {(r["study"], configuration(r), r["steps"]): r for r in records if "metrics" in r}
    # the plain base is one cell whichever experiment lists it; the runner records it once
    plain_base = {
        r["steps"]: r for r in records if "metrics" in r and (r["schedule"], r["transform"]) == ("base", "none")
    }
    lines = [
        "| experiment | configuration | N | PESQ: study | PESQ: samplerlab, paired [95 % CI] | files improved |"
        " same sign (PESQ / STOI / WARP-Q / DNSMOS) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for study, configs in PUBLISHED.items():
        for config, by_n in configs.items():
            for n, published in sorted(by_n.items()):
                run, base = by_key.get((study, config, n)), plain_base.get(n)
                if run is None or base is None:
                    continue
                signs, pesq = [], None
                for k, metric in enumerate(METRICS):
                    values = run["metrics"].get(metric, {}).get("values")
                    ref = base["metrics"].get(metric, {}).get("values")
                    if not values or not ref:
                        signs.append("—")
                        continue
                    p = paired_difference(ref, values, SIGN[metric])
                    study_delta = published[k] - BASE[n][k]
                    significant = not (p["low"] <= 0 <= p["high"])
                    agree = (study_delta > 0) == (p["mean"] > 0)
                    signs.append(("yes" if agree else "no") + ("" if significant else " (n.s.)"))
                    if metric == "pesq":
                        pesq = p
                mark = "" if pesq["low"] <= 0 <= pesq["high"] else " *"
                lines.append(
                    f"| {study} | {config} | {n} | {published[0] - BASE[n][0]:+.3f} | {pesq['mean']:+.3f} "
                    f"[{pesq['low']:+.3f}, {pesq['high']:+.3f}]{mark} | {100 * pesq['improved']:.0f} % | "
                    + " / ".join(signs)
                    + " |"
                )
    return "\n".join(lines) + "\n\n(*: the interval excludes 0; n.s.: the run's interval contains 0)\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a samplerlab run folder of the four experiments (results.jsonl)")
    ap.add_argument("--out", type=Path, default=None, help="also write the table to this Markdown file")
    args = ap.parse_args()
    results = args.run / "results.jsonl"
    if not results.is_file():
        raise SystemExit(f"{results}: no such file (run the study first: samplerlab run ... --out {args.run})")
    records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    table = side_by_side(records)
    print(table)
    if args.out:
        atomic_write_text(args.out, table)


if __name__ == "__main__":
    main()
