"""KID: the unbiased MMD^2 estimate against a brute-force sum, unbiasedness, and an honest standard error."""

from __future__ import annotations

import math

import pytest
import torch

from samplerlab.metrics.distribution import kernel_inception_distance, kid_reference_term


def _k(a, b):
    return (a @ b.T / a.shape[1] + 1) ** 3


def _brute(x, y, yy=None):
    m, n = len(x), len(y)
    kxx = _k(x, x)
    if yy is None:
        kyy = _k(y, y)
        yy = (kyy.sum() - kyy.diag().sum()) / (n * (n - 1))
    return float((kxx.sum() - kxx.diag().sum()) / (m * (m - 1)) + yy - 2 * _k(x, y).mean())


def test_kid_and_its_jackknife_match_brute_force_sums():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(25, 6, generator=g, dtype=torch.float64)
    y = torch.randn(4200, 6, generator=g, dtype=torch.float64) + 0.2  # more than one 4096-row block
    kid, se = kernel_inception_distance(x, y)
    assert kid == pytest.approx(_brute(x, y), rel=1e-6)  # sums of 2.5e7 terms, added in another order
    kyy = _k(y, y)
    yy = (kyy.sum() - kyy.diag().sum()) / (len(y) * (len(y) - 1))
    loo = torch.tensor([_brute(torch.cat([x[:i], x[i + 1 :]]), y, yy) for i in range(len(x))])
    assert se == pytest.approx(math.sqrt((len(x) - 1) / len(x) * float(((loo - loo.mean()) ** 2).sum())), rel=1e-6)
    assert kernel_inception_distance(x, y, kid_reference_term(y)) == (kid, se)


def test_kid_is_unbiased_and_its_standard_error_is_the_spread_across_sample_sets():
    """Same distribution: the mean over 200 sample sets of 50 is 0 within its own error (FD at 50 samples is
    far above its limit); different distributions: the jackknife SE is the spread of KID across sets."""
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(2000, 8, generator=g, dtype=torch.float64)
    term = kid_reference_term(ref)
    same = torch.tensor(
        [
            kernel_inception_distance(torch.randn(50, 8, generator=g, dtype=torch.float64), ref, term)[0]
            for _ in range(200)
        ]
    )
    assert abs(float(same.mean())) < 3 * float(same.std()) / math.sqrt(200)
    shifted = [
        kernel_inception_distance(torch.randn(50, 8, generator=g, dtype=torch.float64) * 1.3 + 0.3, ref, term)
        for _ in range(200)
    ]
    values = torch.tensor([v for v, _ in shifted])
    mean_se = sum(se for _, se in shifted) / len(shifted)
    assert float(values.mean()) > 10 * float(values.std()) / math.sqrt(200)  # a real difference is seen
    assert 0.7 < mean_se / float(values.std()) < 1.4


def test_kid_names_bad_inputs():
    with pytest.raises(ValueError, match="at least 3 generated and 2 reference samples, got 2 and 10"):
        kernel_inception_distance(torch.zeros(2, 3), torch.zeros(10, 3))
    with pytest.raises(ValueError, match=r"feature sizes differ \(3 generated, 4 reference\)"):
        kernel_inception_distance(torch.zeros(5, 3), torch.zeros(10, 4))


def test_paired_differences_tell_apart_what_the_unpaired_intervals_cannot():
    """Two 'samplers' on the same 300 seeds, one slightly off: the one's FD / KID interval covers the other's
    estimate, the paired difference excludes 0. The paired KID standard error is the
    jackknife of the per-seed differences."""
    from samplerlab.metrics.distribution import kid_leave_one_out, paired_kid_difference
    from samplerlab.metrics.features import ReferenceStats, feature_statistics

    g = torch.Generator().manual_seed(3)
    ref_feats = torch.randn(3000, 8, generator=g, dtype=torch.float64)
    mu, cov = feature_statistics(ref_feats)
    ref = ReferenceStats(mu, cov, 0.0, 3000, 0, None, ref_feats)
    z = torch.randn(300, 8, generator=g, dtype=torch.float64)
    a, b = z, z * 1.04 + 0.03
    lo_a, hi_a = ref.frechet_interval(a)
    assert lo_a < ref.frechet(b) < hi_a  # unpaired: not told apart
    diff, lo, hi = ref.frechet_difference_interval(b, a)
    assert diff == pytest.approx(ref.frechet(b) - ref.frechet(a)) and lo > 0  # paired: b is worse
    b = z * 1.1  # KID is blind to small shifts at this size; a wider spread it sees, paired
    (kid_a, _), (kid_b, se_b) = ref.kid(a), ref.kid(b)
    assert abs(kid_b - kid_a) < 1.96 * se_b
    kd, kse = ref.kid_difference(b, a)
    assert kd == pytest.approx(kid_b - kid_a) and kd > 1.96 * kse
    _, loo_a = kid_leave_one_out(a, ref_feats)
    _, loo_b = kid_leave_one_out(b, ref_feats)
    d = loo_b - loo_a
    assert paired_kid_difference(b, a, ref_feats)[1] == pytest.approx(
        math.sqrt((len(d) - 1) / len(d) * float(((d - d.mean()) ** 2).sum())), rel=1e-9
    )
    with pytest.raises(ValueError, match="same seeds, got 300 and 299"):
        ref.frechet_difference_interval(a, b[:-1])
