import pytest
import torch

from samplerlab.metrics import frechet_distance, frechet_distance_gaussians, precision_recall


def test_frechet_closed_form():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    fd = frechet_distance_gaussians(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([3.0]), torch.tensor([[1.0]]))
    assert fd == pytest.approx(4.0 + 1.0)
    # commuting covariances: sum (sqrt(a) - sqrt(b))^2
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 4.0, 1.0])
    fd = frechet_distance_gaussians(torch.zeros(3), torch.diag(a), torch.zeros(3), torch.diag(b))
    assert fd == pytest.approx(float(((a.sqrt() - b.sqrt()) ** 2).sum()))
    # rotation-invariant, zero for identical Gaussians, including a singular covariance
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    c = q @ torch.diag(torch.tensor([2.0, 0.5, 0.0], dtype=torch.float64)) @ q.T
    assert frechet_distance_gaussians(torch.ones(3), c, torch.ones(3), c) == pytest.approx(0.0, abs=1e-6)


def test_frechet_from_samples():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20000, 4, generator=g, dtype=torch.float64)
    y = torch.randn(20000, 4, generator=g, dtype=torch.float64) + torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    assert frechet_distance(x, y) == pytest.approx(1.0, abs=0.03)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_precision_recall():
    g = torch.Generator().manual_seed(2)
    real = torch.randn(1000, 2, generator=g)
    same = torch.randn(1000, 2, generator=g)
    p, r = precision_recall(real, same)
    assert p > 0.9 and r > 0.9
    far = torch.randn(1000, 2, generator=g) + 50
    assert precision_recall(real, far) == (0.0, 0.0)
    collapsed = 0.05 * torch.randn(1000, 2, generator=g)  # mode collapse: precise, low recall
    p, r = precision_recall(real, collapsed)
    assert p > 0.8 and r < 0.2  # measured: 0.88 and 0.0x
    with pytest.raises(ValueError, match="more than k"):
        precision_recall(real[:3], same[:3])
