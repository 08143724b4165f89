"""Few-step speech enhancement: probability-flow ODE solvers at <= 10 NFE against SGMSE+'s default sampler.

    samplerlab speech make-corpus --out data/speech-corpus
    samplerlab speech train --corpus data/speech-corpus --out runs/speech-net
    python examples/speech_few_step.py --corpus data/speech-corpus --model runs/speech-net --out runs/few-step

Two stages, so that the choice is not made on the files it is reported on:

1. **select** on the corpus's valid split: every candidate (deterministic solver x grid x NFE budget, the
   final step to sigma = 0 counted) enhances the valid files; the best candidate per budget by mean PESQ
   (ties: SI-SDR) goes on;
2. **report** on the test split: SGMSE+'s default sampler (reverse-diffusion predictor + annealed-Langevin
   corrector, snr 0.5, 30 levels uniform in t from 1 to 0.03, then the denoising step: 59-61 NFE) and the
   selected few-step samplers, with every metric as mean +- std, each metric's per-file difference to the
   default with a 95 % bootstrap interval, the counted NFE and the real-time factor.

Every (split, configuration) is cached as JSON in --out (written atomically), so an interrupted run resumes
where it stopped. The tables go to OUT/few-step.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from samplerlab.experiments.tables import paired_difference
from samplerlab.grids import GridFile
from samplerlab.io import atomic_write_text
from samplerlab.metrics.registry import metric
from samplerlab.metrics.speech import available_metrics, min_samples_for, speech_metrics
from samplerlab.processes import OUVE
from samplerlab.speech.data import find_speech_pairs, load_pair
from samplerlab.speech.enhance import enhance, enhancement_grid, enhancement_solver, load_enhancement_model

DEFAULT = ("pc", 30, "uniform-time")  # SGMSE+'s sampler
SOLVERS = ["euler", "heun", "dpm-solver++", "dpm-solver++:order=3", "ipndm", "unipc:order=3", "deis-tab:order=3"]
GRIDS = ["uniform-time", "karras", "logsnr"]


def _steps_for(spec: str, budget: int) -> int | None:
    return enhancement_solver(spec).steps_for_nfe(budget)


def run_config(model, process, signals, spec: str, steps: int, grid_name: str, metrics, dnsmos) -> dict:
    # a registered grid, or a calibrated grid file with its solver settings and model levels
    denoiser, grid, solver = enhancement_grid(grid_name, steps, model, enhancement_solver(spec))
    per_file, nfe, seconds, audio = [], 0, 0.0, 0.0
    for i, (clean, noisy) in enumerate(signals):
        r = enhance(
            noisy,
            denoiser,
            solver,
            grid=grid,
            process=process,
            seed=i,
            spec=model.spec,
            pad_multiple=model.pad_multiple,
            dtype=model.dtype,
        )
        per_file.append(speech_metrics(clean, r.wav, metrics, dnsmos=dnsmos))
        nfe, seconds, audio = r.nfe, seconds + r.seconds, audio + r.audio_seconds
    return {
        "solver": spec,
        "steps": steps,
        "grid": grid_name,
        "nfe": nfe,
        "rtf": seconds / audio,
        "values": {m: [p[m] for p in per_file] for m in metrics},
    }


def cached(path: Path, compute) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    result = compute()
    atomic_write_text(path, json.dumps(result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--model", required=True, help="a samplerlab speech train folder or an SGMSE+ .ckpt")
    parser.add_argument("--out", required=True)
    parser.add_argument("--files", type=int, default=30, help="test files (default 30)")
    parser.add_argument("--budgets", default="5,10", help="NFE budgets of the few-step samplers")
    parser.add_argument("--grids", default="", help="calibrated grid files (comma-separated) to add as candidates")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_enhancement_model(args.model)
    process = model.process or OUVE()
    dnsmos = None
    metrics = [m for m in ("pesq", "stoi", "estoi", "si_sdr", "warpq") if m in available_metrics()]
    try:
        from samplerlab.metrics.dnsmos import DNSMOS, bundled_model_dir

        if bundled_model_dir() is not None:
            dnsmos = DNSMOS(None)
            metrics += ["dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"]
    except ImportError:
        pass
    rate = model.spec.sample_rate

    def signals(split, n=None):
        pairs = find_speech_pairs(args.corpus, split)[:n]
        return [load_pair(p, rate, min_samples=min_samples_for(metrics)) for p in pairs]

    valid, test = signals("valid"), signals("test", args.files)
    budgets = [int(b) for b in args.budgets.split(",")]
    chosen = []
    for budget in budgets:
        scores = []
        for spec in SOLVERS:
            steps = _steps_for(spec, budget)
            if steps is None:
                continue
            files = [
                g for g in args.grids.split(",") if g and not GridFile.read(g).misfit(enhancement_solver(spec), steps)
            ]
            for grid in GRIDS + files:
                key = f"valid-{spec}-{Path(grid).stem}-{steps}".replace(":", "_").replace("=", "")
                r = cached(
                    out / f"{key}.json",
                    lambda: run_config(model, process, valid, spec, steps, grid, ["pesq", "si_sdr"], None),
                )
                pesq, sdr = (sum(r["values"][m]) / len(valid) for m in ("pesq", "si_sdr"))
                scores.append((pesq, sdr, spec, steps, grid, r["nfe"]))
                print(f"valid  {spec:22s} {grid:13s} {r['nfe']:3d} NFE  PESQ {pesq:.3f}  SI-SDR {sdr:6.2f}", flush=True)
        best = max(scores)
        chosen.append(best[2:5])
        print(f"budget {budget}: {best[2]} on {best[4]}, {best[3]} steps", flush=True)

    rows = {}
    for spec, steps, grid in [DEFAULT, *chosen]:
        key = f"test{len(test)}-{spec}-{Path(grid).stem}-{steps}".replace(":", "_").replace("=", "")
        rows[(spec, steps, grid)] = cached(
            out / f"{key}.json", lambda: run_config(model, process, test, spec, steps, grid, metrics, dnsmos)
        )
        print(f"test   {spec} {grid} {steps} steps: {rows[(spec, steps, grid)]['nfe']} NFE", flush=True)
    atomic_write_text(out / "few-step.md", tables(rows, metrics, len(test), args))
    print((out / "few-step.md").read_text())


def tables(rows: dict, metrics, n: int, args) -> str:
    base = rows[DEFAULT]
    lines = [
        f"{n} test files of {args.corpus}, model {args.model}. Mean ± std over files; below, each sampler's "
        "per-file difference to SGMSE+'s default (sampler minus default; WARP-Q is better lower, the others "
        "higher) with a 95 % bootstrap interval and the share of files improved.",
        "",
        "| sampler | NFE | RTF | " + " | ".join(metrics) + " |",
        "|" + "---|" * (3 + len(metrics)),
    ]
    for (spec, steps, grid), r in rows.items():
        cells = []
        for m in metrics:
            v = torch.tensor(r["values"][m], dtype=torch.float64)
            cells.append(f"{float(v.mean()):.3f} ± {float(v.std()):.3f}")
        lines.append(f"| {spec}, {grid}, {steps} steps | {r['nfe']} | {r['rtf']:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "| difference to the default | " + " | ".join(metrics) + " |", "|" + "---|" * (1 + len(metrics))]
    for (spec, steps, grid), r in list(rows.items())[1:]:
        cells = []
        for m in metrics:
            sign = 1 if metric(m).higher_is_better else -1
            p = paired_difference(base["values"][m], r["values"][m], sign)
            mark = "" if p["low"] <= 0 <= p["high"] else " *"
            cells.append(f"{p['mean']:+.3f} [{p['low']:+.3f}, {p['high']:+.3f}]{mark}, {100 * p['improved']:.0f} %")
        lines.append(f"| {spec}, {grid}, {r['nfe']} NFE | " + " | ".join(cells) + " |")
    lines += ["", "(*: the interval excludes 0)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
