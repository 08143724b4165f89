
import pytest
import torch

from samplerlab.metrics import nll_gap, reference_ode_solution, rms_distance, sliced_wasserstein2
from samplerlab.problems import make_problem


def test_rms_distance():
    a = torch.zeros(4, 3)
    assert rms_distance(a, a) == 0.0
    assert rms_distance(a, a + 2.0) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="shapes differ"):
        rms_distance(a, torch.zeros(4, 2))


def test_sliced_w2_of_a_translation_is_exact():
    """For b = a + v, every projection shifts by theta.v, so SW2^2 = mean_theta (theta.v)^2 -> |v|^2 / d."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 4, generator=g, dtype=torch.float64)
    v = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    sw = sliced_wasserstein2(a + v, a, num_projections=20000)
    assert sw == pytest.approx(float(v.norm()) / 2.0, rel=0.02)
    # 1-D: exactly the shift
    x = torch.randn(100, 1, generator=g, dtype=torch.float64)
    assert sliced_wasserstein2(x + 0.3, x, num_projections=3) == pytest.approx(0.3)


def test_sliced_w2_floor_shrinks_with_samples():
    m = make_problem("ring").model
    small = sliced_wasserstein2(m.sample(200, torch.Generator().manual_seed(1)), m.sample(200, torch.Generator().manual_seed(2)))
    large = sliced_wasserstein2(m.sample(20000, torch.Generator().manual_seed(1)), m.sample(20000, torch.Generator().manual_seed(2)))
    assert large < small / 3


def test_nll_gap_is_zero_for_true_samples_and_positive_for_blur():
    m = make_problem("ring").model
    true = m.sample(5000, torch.Generator().manual_seed(1))
    assert nll_gap(m, true, true) == 0.0
    other = m.sample(5000, torch.Generator().manual_seed(2))
    assert abs(nll_gap(m, other, true)) < 0.1
    blurred = other + 0.05 * torch.randn(other.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert nll_gap(m, blurred, true) > 0.5


def test_reference_solution_against_closed_form_to_a_positive_level():
    g = make_problem("gauss16").model
    x = 80.0 * torch.randn(4, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref = reference_ode_solution(g, x, 80.0, 0.002)
    assert torch.allclose(ref, g.ode_flow(x, 80.0, 0.002), atol=1e-6)
    with pytest.raises(ValueError):
        reference_ode_solution(g, x, 1.0, 2.0)


def test_the_fd_interval_describes_fd_across_sample_sets_of_that_size():
    """On 359 Gaussian features in 64-d against exact reference statistics, the 95 % interval from one sample
    set must match the spread of FD over fresh sets of the same size: it contains the estimate, covers most
    fresh FDs, and is not several times wider. (A percentile bootstrap lies entirely above the estimate here.)"""
    import torch

    from samplerlab.metrics.distribution import feature_statistics
    from samplerlab.metrics.features import ReferenceStats

    g = torch.Generator().manual_seed(0)
    d, n = 64, 359
    a = torch.randn(d, d, generator=g, dtype=torch.float64) / 8
    cov = a @ a.T + 0.1 * torch.eye(d, dtype=torch.float64)
    chol = torch.linalg.cholesky(cov)
    ref = ReferenceStats(torch.zeros(d, dtype=torch.float64), cov, 0.0, 1000, n, None, torch.zeros(1, d))

    def draw():
        return torch.randn(n, d, generator=g, dtype=torch.float64) @ chol.T + 0.05

    fresh = torch.tensor([ref.frechet(draw()) for _ in range(200)])
    f = draw()
    lo, hi = ref.frechet_interval(f)
    assert lo < ref.frechet(f) < hi
    covered = float(((fresh >= lo) & (fresh <= hi)).double().mean())
    assert covered > 0.8, (lo, hi, covered)
    width_true = float(fresh.quantile(0.975) - fresh.quantile(0.025))
    assert 0.5 < (hi - lo) / width_true < 2.5, (hi - lo, width_true)
    assert feature_statistics(f)[0].shape == (d,)
