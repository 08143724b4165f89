import math

import pytest
import torch

from samplerlab.cli import main
from samplerlab.metrics import bits_per_dim, ode_log_likelihood, uniform_dequantise
from samplerlab.problems import make_problem


@pytest.mark.parametrize("problem", ["ring", "gauss16"])
def test_exact_divergence_matches_the_closed_form_log_density(problem):
    model = make_problem(problem).model
    x = model.sample(32, torch.Generator().manual_seed(0))
    exact = model.log_prob(x)
    # with the exact sigma_max marginal as prior, only the ODE solve and divergence remain: 1e-3 nats
    r = ode_log_likelihood(model, x, prior_log_prob=lambda z: model.log_prob(z, 80.0))
    assert float((r.log_prob - exact).abs().max()) < 1e-3
    assert r.probe_std_error is None and r.nfe > 10
    # with Song et al.'s N(0, sigma_max^2) prior the mismatch stays below 0.1 nats here
    assert float((ode_log_likelihood(model, x).log_prob - exact).abs().max()) < 0.1


@pytest.mark.parametrize("kind", ["hutchinson-rademacher", "hutchinson-gaussian"])
def test_hutchinson_estimate_is_unbiased_within_its_standard_error(kind):
    model = make_problem("gauss16").model
    x = model.sample(64, torch.Generator().manual_seed(1))
    exact = model.log_prob(x)
    r = ode_log_likelihood(model, x, divergence=kind, probes=4, prior_log_prob=lambda z: model.log_prob(z, 80.0))
    diff = r.log_prob - exact
    assert abs(float(diff.mean())) < 4 * float(diff.std()) / math.sqrt(len(diff))
    assert r.probe_std_error is not None and float(r.probe_std_error.mean()) > 0
    assert math.isfinite(r.nll_std_error)


def test_bits_per_dim_and_dequantisation():
    # uniform 8-bit data: the dequantised density is uniform on [-1, 1)^d, nll = d log 2, i.e. 8 bits/dim
    d = 5
    assert bits_per_dim(d * math.log(2.0), d) == pytest.approx(8.0)
    assert bits_per_dim(d * math.log(2.0), d, eight_bit=False) == pytest.approx(1.0)
    v = torch.arange(256)
    x = uniform_dequantise(v, torch.Generator().manual_seed(0))
    assert float(x.min()) >= -1 and float(x.max()) < 1
    assert torch.all((x + 1) * 128 - v >= 0) and torch.all((x + 1) * 128 - v < 1)
    with pytest.raises(ValueError):
        uniform_dequantise(torch.tensor([256]))


def test_dequantising_digits_with_their_own_bins():
    """Digits are stored as v / 8 - 1 for v in 0..16: 17 levels, bins of 1/8. Uniform data on those bins
    has density 1 / (17 / 8)^d, i.e. log2(17) bits/dim for the discrete values."""
    from samplerlab.data import load_digits

    digits = load_digits()
    v = digits.integer_values()
    assert int(v.min()) == 0 and int(v.max()) == 16 and torch.equal(v.double() / 8 - 1, digits.data.double())
    x = uniform_dequantise(v, torch.Generator().manual_seed(0), levels=17, bin_width=1 / 8)
    assert torch.all((x + 1) * 8 - v >= 0) and torch.all((x + 1) * 8 - v < 1)
    d = 64
    assert bits_per_dim(d * math.log(17 / 8), d, bin_width=1 / 8) == pytest.approx(math.log2(17))
    with pytest.raises(ValueError, match="bin_width must be positive"):
        bits_per_dim(1.0, d, bin_width=0.0)
    with pytest.raises(ValueError, match="integers in \\[0, 16\\]"):
        uniform_dequantise(torch.tensor([0.5]), levels=17, bin_width=1 / 8)


def test_cli_likelihood(capsys):
    assert main(["likelihood", "--problem", "ring", "--samples", "16"]) == 0
    out = capsys.readouterr().out
    assert "closed form" in out and "bits/dim" in out
