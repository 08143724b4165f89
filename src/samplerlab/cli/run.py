"""``samplerlab run FILE``: a TOML experiment (solver x schedule x transform x steps), resumable."""

from __future__ import annotations

from pathlib import Path

from .common import add_no_progress, output_dir


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run an experiment file (solver x schedule x transform x steps), resumable")
    p.add_argument("experiment", help="TOML file, e.g. examples/sgmse_schedule_study.toml")
    p.add_argument("--out", type=output_dir, help="run folder (default: runs/NAME); re-running resumes it")
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..distributed import init_from_env
    from ..experiments.config import load_experiment
    from ..experiments.runner import run_experiment

    config = load_experiment(args.experiment)
    out = args.out or str(Path("runs") / config.name)
    init_from_env()
    summary = run_experiment(config, out, progress=not args.no_progress)
    if not summary["files"]:  # a non-zero rank of a sharded run
        return 0
    print((Path(out) / "tables.md").read_text())
    print(f"{summary['computed']} cells computed, {summary['reused']} reused from {Path(out) / 'results.jsonl'}")
    for path in summary["files"]:
        print(f"wrote {path}")
    return 0
