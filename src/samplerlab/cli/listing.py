"""``samplerlab list``: the registered solvers, grids, processes and problems, and the published score_sde
configs that ``--config`` takes."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="list solvers, grids, processes and problems")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..grids import GRIDS
    from ..problems import PROBLEMS
    from ..processes import PROCESSES
    from ..solvers import SOLVERS

    for title, reg in (("solvers", SOLVERS), ("grids", GRIDS), ("processes", PROCESSES), ("problems", PROBLEMS)):
        print(f"{title}:")
        for name in reg.names():
            obj = reg.get(name)
            doc = (obj.__doc__ or "").strip().splitlines()
            print(f"  {name:18s} {doc[0] if doc else ''}")
    from ..adapters.score_sde import SCORE_SDE_CONFIGS

    print("score_sde configs (--config, for score_sde checkpoints):")
    for name, cfg in SCORE_SDE_CONFIGS.items():
        net = cfg.net
        kind = "NCSN++" if net.fir else "DDPM++"
        print(
            f"  {name:38s} {kind} {net.image_size}x{net.image_size}, {cfg.sde}, "
            f"{'continuous' if cfg.continuous else 'discrete'}"
        )
    return 0
