"""Tables, files and plots for benchmark results."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict
from pathlib import Path

from ..imaging import save_figure
from ..io import atomic_write_text
from ..metrics.registry import BENCH_METRICS
from ..metrics.registry import metric as metric_spec
from .bench import BenchConfig, BenchRow, ProblemSummary

__all__ = ["format_bench", "write_bench_outputs", "plot_bench"]

METRICS = {name: f"{name}: {metric_spec(name).caption()}" for name in BENCH_METRICS}


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return f"{value:.2e}"


def alias_groups(rows: list[BenchRow]) -> dict[str, list[str]]:
    """Fixed-step solver specs that are one sampler under several names on every problem (``same_as``: their
    samples agree, ``bench.same_samples``), e.g. Euler and DDIM (eta 0), or Euler ancestral and CRASH, under
    EDM. Maps the first of each group to all its names, in the order of the rows."""
    specs = list(dict.fromkeys(r.solver for r in rows if r.tolerance is None))
    heads_of: dict[str, set[str]] = {}
    for r in rows:
        if r.tolerance is None:
            heads_of.setdefault(r.solver, set()).add(r.same_as)
    groups: dict[str, list[str]] = {}
    for spec in specs:
        heads = heads_of[spec]
        head = next(iter(heads)) if len(heads) == 1 else ""
        if head and head in groups:
            groups[head].append(spec)
        else:
            groups[spec] = [spec]
    return groups


def _aliased(aliases: dict[str, str]) -> set[str]:
    """Every name that is a later member of an alias group (its row is shown under the group's first)."""
    return {n for label in aliases.values() for n in label.split(" = ")[1:]}


def format_bench(config: BenchConfig, summaries: list[ProblemSummary], rows: list[BenchRow]) -> str:
    """One block per problem: for each metric a solver x NFE table; '(9)' marks a counted NFE
    that differs from the budget, '—' a cell that does not apply or was skipped. Solvers that gave the same
    results everywhere are one row, labelled with all their names ('euler = ddim')."""
    out = io.StringIO()
    budgets = list(config.nfes)
    groups = alias_groups(rows)
    solvers = list(groups)
    adaptive = list(dict.fromkeys(r.solver for r in rows if r.tolerance is not None))
    width = max(len(s) for s in [" = ".join(g) for g in groups.values()] + adaptive + ["solver"]) + 2
    grid = config.grid + (
        f"({', '.join(f'{k}={v}' for k, v in config.grid_params.items())})" if config.grid_params else ""
    )
    for summary in summaries:
        out.write(
            f"\n== {summary.name}: {summary.description}; {summary.num_samples} samples, "
            f"grid {grid}, process {config.process}, {config.dtype} ==\n"
        )
        cells = {(r.solver, r.nfe_budget): r for r in rows if r.problem == summary.name and r.tolerance is None}
        for metric, title in METRICS.items() if solvers else ():
            extra = f"  [floor {summary.sw2_floor:.4f}: two exact sample sets]" if metric == "sw2" else ""
            out.write(f"{title}{extra}\n")
            out.write("solver".ljust(width) + "".join(f"NFE {b}".rjust(14) for b in budgets) + "\n")
            for s in solvers:
                line = " = ".join(groups[s]).ljust(width)
                for b in budgets:
                    r = cells.get((s, b))
                    text = "—" if r is None else _fmt(getattr(r, metric))
                    if r is not None and r.nfe is not None and r.nfe != b and text != "—":
                        text += f" ({r.nfe})"
                    line += text.rjust(14)
                out.write(line + "\n")
            out.write("\n")
        tuned = [r for r in rows if r.problem == summary.name and r.tolerance is not None]
        if tuned:
            out.write("adaptive solvers: NFE set by the tolerance (dopri5: rtol, atol = rtol / 10; ggf: reltol)\n")
            out.write(
                "solver".ljust(width) + "tol".rjust(8) + "NFE".rjust(8) + "".join(m.rjust(12) for m in METRICS) + "\n"
            )
            for r in tuned:
                out.write(
                    r.solver.ljust(width)
                    + f"{r.tolerance:8.0e}"
                    + f"{r.nfe:8d}"
                    + "".join(_fmt(getattr(r, m)).rjust(12) for m in METRICS)
                    + "\n"
                )
            out.write("\n")
        timed = [r for r in rows if r.problem == summary.name and r.wall_seconds is not None]
        if timed:
            total = sum(r.wall_seconds for r in timed)
            share = sum(r.overhead_share * r.wall_seconds for r in timed) / total if total else 0.0
            out.write(
                f"sampling {total:.2f} s in all, {100 * share:.0f}% outside the model; "
                f"reference ODE solve {summary.reference_seconds:.2f} s\n"
            )
    skipped = [r for r in rows if r.note.startswith("skipped")]
    for r in skipped:
        out.write(f"note: {r.problem} {r.solver} NFE {r.nfe_budget}: {r.note}\n")
    if any(r.nfe is not None and r.nfe_budget is not None and r.nfe != r.nfe_budget for r in rows):
        out.write("(n): the solver's steps cannot use the budget exactly; n is the counted NFE it used\n")
    return out.getvalue()


def _csv_text(rows: list[BenchRow]) -> str:
    buf = io.StringIO()
    fields = list(asdict(rows[0]).keys()) if rows else []
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for r in rows:
        writer.writerow(asdict(r))
    return buf.getvalue()


def write_bench_outputs(
    out_dir: str | Path, config: BenchConfig, summaries: list[ProblemSummary], rows: list[BenchRow], table: str
) -> list[Path]:
    """results.csv, results.json, table.txt and quality_vs_nfe.png, each written atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "results.csv", _csv_text(rows))
    payload = {
        "config": config.to_dict(),
        "problems": [asdict(s) for s in summaries],
        "rows": [asdict(r) for r in rows],
    }
    atomic_write_text(out_dir / "results.json", json.dumps(payload, indent=2) + "\n")
    atomic_write_text(out_dir / "table.txt", table)
    plot_bench(out_dir / "quality_vs_nfe.png", summaries, rows)
    return [out_dir / n for n in ("results.csv", "results.json", "table.txt", "quality_vs_nfe.png")]


def plot_bench(path: str | Path, summaries: list[ProblemSummary], rows: list[BenchRow]) -> None:
    """A row of panels per problem: each metric against counted NFE, one line per solver."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    metrics = list(METRICS)
    fig, axes = plt.subplots(
        len(summaries), len(metrics), figsize=(5.0 * len(metrics), 4.2 * len(summaries)), squeeze=False
    )
    aliases = {name: " = ".join(names) for name, names in alias_groups(rows).items()}
    for i, summary in enumerate(summaries):
        prow = [r for r in rows if r.problem == summary.name and r.nfe is not None]
        solvers = [s for s in dict.fromkeys(r.solver for r in prow) if s in aliases or s not in _aliased(aliases)]
        for j, metric in enumerate(metrics):
            ax = axes[i][j]
            for k, s in enumerate(solvers):
                pts = sorted(
                    (r.nfe, getattr(r, metric)) for r in prow if r.solver == s and getattr(r, metric) is not None
                )
                pts = [(n, v) for n, v in pts if math.isfinite(v)]
                if pts:
                    ax.plot(
                        [p[0] for p in pts],
                        [abs(p[1]) for p in pts],
                        label=aliases.get(s, s),
                        marker="os^vDxP*"[k % 8],
                        linestyle=["-", "--", ":", "-."][k % 4],
                        alpha=0.85,
                        color=plt.cm.tab20(k % 20),
                    )
            if metric == "sw2":
                ax.axhline(summary.sw2_floor, color="gray", linestyle="--", linewidth=1, label="floor")
            ax.set_xscale("log")
            ax.set_yscale("log")
            top = max((r.nfe for r in prow), default=1)
            ticks = sorted(
                {r.nfe_budget for r in prow if r.nfe_budget is not None}
                | {t for t in (100, 300, 1000, 3000) if t <= top}
            )
            ax.set_xticks(ticks)
            ax.set_xticklabels([str(t) for t in ticks], fontsize=7)
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_xlabel("NFE (counted)")
            ax.set_title(f"{summary.name}: {metric}" + (" (|gap|)" if metric == "nll_gap" else ""), fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
        axes[i][0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
