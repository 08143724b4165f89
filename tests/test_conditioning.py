import pytest
import torch

from samplerlab.analytic import GaussianMixture
from samplerlab.conditioning import Inpaint
from samplerlab.denoisers import ClassifierFreeGuidance, NFECounter
from samplerlab.grids import karras
from samplerlab.noise import SampleNoise
from samplerlab.processes import EDM, VPLinear
from samplerlab.sampling import generate, prior_sample, sample
from samplerlab.solvers import make_solver

COND = GaussianMixture.gaussian(torch.tensor([1.0, 1.0], dtype=torch.float64), torch.tensor([0.1, 0.1], dtype=torch.float64))
UNCOND = GaussianMixture.gaussian(torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64))


def _pair(x, sigma, label=None):
    return (UNCOND if label is None else COND)(x, sigma)


def test_guidance_interval_applies_only_inside():
    counted = NFECounter(_pair)
    cfg = ClassifierFreeGuidance(counted, 3.0, {"label": None}, interval=(0.5, 2.0))
    x = torch.randn(4, 2, dtype=torch.float64)
    inside = cfg(x, 1.0, label=1)
    assert torch.allclose(inside, UNCOND(x, 1.0) + 3.0 * (COND(x, 1.0) - UNCOND(x, 1.0))) and counted.calls == 2
    outside = cfg(x, 5.0, label=1)
    assert torch.allclose(outside, COND(x, 5.0)) and counted.calls == 3  # one call outside the interval
    # per-sample sigmas: each sample gets its own scale
    sig = torch.tensor([0.1, 1.0, 1.5, 9.0], dtype=torch.float64)
    mixed = cfg(x, sig, label=1)
    for i, s in enumerate(sig.tolist()):
        want = cfg(x[i : i + 1], s, label=1)
        assert torch.allclose(mixed[i : i + 1], want)
    with pytest.raises(ValueError, match="guidance interval"):
        ClassifierFreeGuidance(_pair, 2.0, interval=(2.0, 1.0))


@pytest.mark.parametrize("solver", ["euler", "dpm-solver++", "heun", "euler-maruyama"])
def test_inpainting_keeps_known_entries_and_leaves_independent_ones_alone(solver):
    """Independent coordinates: the known ones come back exactly; the unknown ones evolve as without the hook
    (identically for deterministic solvers, in distribution for stochastic ones)."""
    var = torch.tensor([0.3, 0.05, 0.2, 0.1], dtype=torch.float64)
    mean = torch.tensor([0.5, -1.0, 0.2, 0.0], dtype=torch.float64)
    model = GaussianMixture.gaussian(mean, var)
    n = 3000
    known = torch.tensor([9.0, 0.0, -9.0, 0.0], dtype=torch.float64).expand(n, 4)
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    grid = karras(200, EDM())

    def run(hooks):
        noise = SampleNoise(range(n), dtype=torch.float64)
        x_T = prior_sample(EDM(), float(grid[0]), noise, (4,))
        return sample(model, x_T, grid, make_solver(solver), noise=noise, hooks=hooks).x

    x, free = run([Inpaint(known, mask)]), run([])
    assert torch.equal(x[:, 0], known[:, 0]) and torch.equal(x[:, 2], known[:, 2])
    if make_solver(solver).stochastic:
        assert abs(float(x[:, 1].mean()) - (-1.0)) < 5 * (0.05 / n) ** 0.5
        assert float(x[:, 3].var()) == pytest.approx(float(free[:, 3].var()), rel=0.12)
    else:
        assert torch.allclose(x[:, [1, 3]], free[:, [1, 3]], atol=1e-12)


def test_inpainting_needs_noise_and_a_binary_mask():
    model = GaussianMixture.gaussian(torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    hook = Inpaint(torch.zeros(3, 2, dtype=torch.float64), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="Inpaint draws noise"):
        sample(model, torch.zeros(3, 2, dtype=torch.float64), karras(3, EDM()), make_solver("euler"), hooks=[hook])
    with pytest.raises(ValueError, match="only 0"):
        Inpaint(torch.zeros(2), torch.tensor([0.5, 1.0]))
    # VP coordinates: the known entry is rescaled by s at each level and exact at the end
    r = generate(model, (2,), karras(5, VPLinear()), make_solver("ddim"), range(3), process=VPLinear(),
                 dtype=torch.float64, hooks=[Inpaint(torch.full((3, 2), 0.7, dtype=torch.float64), torch.tensor([1.0, 0.0]))])
    assert torch.allclose(r.x[:, 0], torch.full((3,), 0.7, dtype=torch.float64))
