import pytest
import torch

from samplerlab.grids import karras
from samplerlab.noise import SampleNoise, parse_seeds
from samplerlab.problems import make_problem
from samplerlab.processes import EDM, VPLinear
from samplerlab.sampling import StepRecord, generate, prior_sample, sample
from samplerlab.solvers import make_solver

RING = make_problem("ring").model


def test_callback_receives_typed_records_with_counted_nfe():
    records: list[StepRecord] = []
    grid = karras(4, EDM())
    r = generate(RING, (2,), grid, make_solver("heun"), range(5), callback=records.append, dtype=torch.float64)
    assert [rec.step for rec in records] == [0, 1, 2, 3]
    assert [rec.nfe for rec in records] == [2, 4, 6, 7] and r.nfe == 7
    assert records[-1].sigma_next == 0.0 and records[0].sigma == pytest.approx(80.0)
    assert torch.equal(records[-1].x, r.x)
    assert records[-1].x0_hat.shape == (5, 2)


def test_progress_bar_runs(capsys):
    r = generate(RING, (2,), karras(3, EDM()), make_solver("euler"), range(2), progress=True)
    assert r.nfe == 3


def test_prior_has_process_std_and_depends_only_on_the_seed():
    p = VPLinear()
    x = prior_sample(p, p.sigma_max, SampleNoise([4, 9], dtype=torch.float64), (3,))
    alone = prior_sample(p, p.sigma_max, SampleNoise([9], dtype=torch.float64), (3,))
    assert torch.equal(x[1:], alone)
    big = prior_sample(p, p.sigma_max, SampleNoise(range(20000), dtype=torch.float64), (2,))
    assert big.std().item() == pytest.approx(p.prior_std(), rel=0.02)


def test_noise_streams_do_not_depend_on_batch_across_block_boundaries():
    """Requests of varying sizes that cross the buffer's block boundary give each seed the same values."""
    shapes = [(3,), (1000,), (5000,), (7,), (4096,), (2, 2)]
    together = SampleNoise([5, 6, 7], dtype=torch.float64)
    alone = SampleNoise([6], dtype=torch.float64)
    for shape in shapes:
        assert torch.equal(together.randn(*shape)[1], alone.randn(*shape)[0])
    fresh = SampleNoise([6], dtype=torch.float64)
    assert not torch.equal(fresh.randn(3)[0], SampleNoise([8], dtype=torch.float64).randn(3)[0])


def test_seed_gives_same_sample_in_float32_and_float64():
    grid = karras(8, EDM())
    a = generate(RING.to(torch.float32), (2,), grid, make_solver("euler-maruyama"), [1, 2], dtype=torch.float32).x
    b = generate(RING, (2,), grid, make_solver("euler-maruyama"), [1, 2], dtype=torch.float64).x
    assert torch.allclose(a.double(), b, atol=1e-3)


def test_wall_and_model_time_are_reported():
    r = generate(RING, (2,), karras(5, EDM()), make_solver("euler"), range(4))
    assert r.wall_seconds > 0 and 0 <= r.model_seconds <= r.wall_seconds + 1e-6
    assert 0 <= r.overhead_share <= 1


def test_batch_and_seed_count_must_agree():
    noise = SampleNoise(range(3))
    with pytest.raises(ValueError, match="batch of 2 samples but 3 seeds"):
        sample(RING, torch.zeros(2, 2, dtype=torch.float64), karras(2, EDM()), make_solver("euler"), noise=noise)


@pytest.mark.parametrize("text, seeds", [("0-3", [0, 1, 2, 3]), ("1,5,9", [1, 5, 9]), ("3-5,10", [3, 4, 5, 10]), ("7", [7])])
def test_parse_seeds(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("bad", ["", "a-b", "5-3", "1,,x"])
def test_parse_seeds_rejects(bad):
    with pytest.raises(ValueError):
        parse_seeds(bad)
