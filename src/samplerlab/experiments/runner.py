"""The experiment runner: the grid of solver x schedule x transform x steps of a TOML file, cell by cell.

    samplerlab run examples/sgmse_schedule_study.toml --out runs/study

The file's schema lives in ``config``, scoring in ``evaluation`` (analytic problems) and
``speech_evaluation`` (recordings), results in ``store`` (resumable JSONL), the report in ``tables``
and ``plots``. This module only orchestrates: it runs each unfinished cell, records it, and writes the
report at the end: a mean ± std table per metric (Markdown and CSV, best per column marked),
metric-vs-steps plots and the sigma(t) curves with each configuration's steps.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path
from typing import Callable

from ..distributed import barrier, rank_and_world
from ..grids import GridFile, is_grid_file, time_steps
from ..io import atomic_write_text
from ..processes import make_process
from ..solvers import solver_from_spec
from .config import Cell, ExperimentConfig, TransformKind, cells_of, process_for
from .evaluation import AnalyticEvaluation
from .plots import plot_metrics, plot_study_schedules
from .speech_evaluation import SpeechEvaluation
from .store import RESULTS_FILE, append_record, read_results, shard_path
from .tables import write_tables

__all__ = ["run_cell", "run_experiment", "write_report"]


def run_cell(cell: Cell, evaluation: "AnalyticEvaluation | SpeechEvaluation") -> dict:
    """Sample and score one cell; a budget the solver cannot meet is recorded as skipped."""
    process, tr = process_for(cell, evaluation.base)
    solver = solver_from_spec(cell.solver)
    steps = cell.steps if cell.steps is not None else solver.steps_for_nfe(cell.nfe_budget)
    if steps is None:
        return {"skipped": f"{cell.solver} cannot run within {cell.nfe_budget} NFE"}
    if is_grid_file(cell.schedule):
        grid_file = GridFile.read(cell.schedule)
        if grid_file.num_steps != steps:
            return {"skipped": f"the grid file {cell.schedule} has {grid_file.num_steps} steps, not {steps}"}
        misfit = grid_file.misfit(solver, steps)
        if misfit:
            return {"skipped": f"{cell.schedule}: {misfit}"}
        grid = grid_file.tensor(process)
        result = evaluation.run(process, grid, grid_file.configure(solver), model_sigmas=grid_file.model_sigmas)
        return {"steps": steps, "sigmas": grid.tolist(), **result}
    grid = time_steps(
        steps,
        process,
        offset=tr.value if tr.kind is TransformKind.OFFSET else 1.0,
        power=tr.value if tr.kind is TransformKind.POWER else 1.0,
    )
    return {"steps": steps, "sigmas": grid.tolist(), **evaluation.run(process, grid, solver)}


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    on_cell: Callable[[Cell, dict], None] | None = None,
) -> dict:
    """Run every unfinished cell, then write tables and plots. Returns {'computed': n, 'reused': n, ...}.

    Under torch.distributed (e.g. ``torchrun --nproc_per_node 2 -m samplerlab.cli run FILE``), rank r takes
    every world-th unfinished cell and appends to results.rank{r}.jsonl; after a barrier rank 0 writes
    the tables. Other ranks return without files.
    """
    config.validate()
    rank, world = rank_and_world()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a folder")
    created = not out_dir.exists()
    try:
        return _run(config, out_dir, rank, world, progress, on_cell)
    except BaseException:
        # a run that fails before its first result leaves no folder behind; one with results stays resumable
        if created and rank == 0 and not any(out_dir.glob("results*.jsonl")):
            shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _run(config, out_dir: Path, rank: int, world: int, progress: bool, on_cell) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        atomic_write_text(out_dir / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
    results_path = out_dir / RESULTS_FILE
    done = read_results(results_path)
    cells = cells_of(config)
    unfinished = [c for c in cells if c.key not in done]
    # a configuration that several studies list (e.g. each experiment's baseline) is computed once
    computed = {_work_key(rec): rec for rec in done.values() if "key" in rec}
    distinct = list({c.work_key: c for c in reversed(unfinished) if c.work_key not in computed}.values())[::-1]
    barrier()  # every rank must split the same list: read before anyone writes
    todo = distinct[rank::world]
    own_path = shard_path(results_path, rank, world)
    base = make_process(config.process, **config.process_params)
    evaluation = SpeechEvaluation(config, base) if config.speech else AnalyticEvaluation(config, base)
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=config.name, unit="cell", file=sys.stderr)
    for cell in todo:
        record = {"key": cell.key, **dataclasses.asdict(cell), **run_cell(cell, evaluation)}
        append_record(own_path, record)
        done[cell.key] = record
        if bar:
            bar.set_postfix_str(cell.key[-48:])
            bar.update(1)
        if on_cell:
            on_cell(cell, record)
    if bar:
        bar.close()
    counts = {"computed": len(todo), "reused": len(cells) - len(unfinished), "cells": len(cells)}
    if world > 1:
        barrier()
        if rank != 0:
            return {**counts, "files": []}
        done = read_results(results_path)
    shared = _share_results(cells, done, own_path)
    counts["shared"] = shared
    return {**counts, "files": write_report(config, cells, done, evaluation.baselines(), out_dir)}


def _work_key(record: dict) -> str:
    """The work key of a recorded cell, as ``Cell.work_key`` computes it (the plain base under any
    normalisation is one configuration): from the record's cell fields, not its key, whose normalisation
    suffix would keep a baseline computed in a "diffusion" study from being shared with a "marginal" one.
    Records older than the normalisation field get its default."""
    return Cell(**{name: record[name] for name in Cell.__dataclass_fields__ if name in record}).work_key


def _share_results(cells: list[Cell], done: dict, path) -> int:
    """Record, for every cell still without a result, the result of the same configuration in another study."""
    by_work = {_work_key(rec): rec for rec in done.values() if "key" in rec}
    shared = 0
    for cell in cells:
        if cell.key in done or cell.work_key not in by_work:
            continue
        source = by_work[cell.work_key]
        result = {k: v for k, v in source.items() if k not in ("key", "shared_from", *Cell.__dataclass_fields__)}
        record = {"key": cell.key, **dataclasses.asdict(cell), **result, "shared_from": source["key"]}
        append_record(path, record)
        done[cell.key] = record
        shared += 1
    return shared


def write_report(config: ExperimentConfig, cells: list[Cell], done: dict, baselines: dict, out_dir: Path) -> list[Path]:
    """Tables and plots of the finished cells; returns the files written."""
    return (
        write_tables(config, cells, done, baselines, out_dir)
        + plot_metrics(config, cells, done, out_dir)
        + plot_study_schedules(config, cells, done, out_dir)
    )
