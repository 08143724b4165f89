"""``samplerlab list``: the registered solvers, grids, processes and problems."""

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
    return 0
