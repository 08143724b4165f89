"""docs/writing-a-solver.md stays true: its code blocks run as written (registering the example solver and
checking its fitted convergence order), and the example then passes the samplers' contract."""

import re
from pathlib import Path

import torch

from samplerlab.grids import karras
from samplerlab.problems import make_problem
from samplerlab.processes import EDM
from samplerlab.sampling import generate
from samplerlab.solvers import SOLVERS, make_solver

DOC = Path(__file__).resolve().parents[1] / "docs" / "writing-a-solver.md"


def test_the_guide_runs_and_its_solver_has_its_order():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 2
    if "midpoint" not in SOLVERS:
        exec(compile(blocks[0], str(DOC), "exec"), {"__name__": "writing_a_solver"})
    exec(compile(blocks[1], str(DOC), "exec"), {"__name__": "writing_a_solver"})  # asserts the fitted order
    solver = make_solver("midpoint")
    model = make_problem("ring").model.to(torch.float64)
    for steps in (1, 3, 5):
        r = generate(model, (2,), karras(steps, EDM()), solver, range(4), dtype=torch.float64)
        assert r.nfe == solver.nfe(steps) and bool(torch.isfinite(r.x).all())
