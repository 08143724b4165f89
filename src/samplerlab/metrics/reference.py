"""A tight float64 reference solution of the probability-flow ODE."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

__all__ = ["reference_ode_solution"]


def reference_ode_solution(
    denoiser,
    x_hat: Tensor,
    sigma_from: float,
    sigma_to: float,
    *,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    sigma_stop: float = 1e-8,
) -> Tensor:
    """x_hat(sigma_to) of dx_hat/dsigma = (x_hat - D(x_hat, sigma)) / sigma from x_hat(sigma_from).

    Integrated by scipy's adaptive DOP853 (Hairer et al.) in log sigma,
    dx_hat/dlog(sigma) = x_hat - D, in float64, all samples as one system. For sigma_to = 0 the
    integration stops at ``sigma_stop`` where the remaining drift is O(sigma_stop^2) (the ODE is
    the identity as sigma -> 0 for data with positive-definite covariance). Works in x_hat; multiply
    by s(t(sigma_to)) for process coordinates.
    """
    if not sigma_from > sigma_to >= 0:
        raise ValueError(f"need sigma_from > sigma_to >= 0, got {sigma_from}, {sigma_to}")
    shape = x_hat.shape
    end = max(sigma_to, sigma_stop)
    x0 = x_hat.detach().to("cpu", torch.float64).reshape(-1).numpy()

    def rhs(log_sigma: float, y: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(y).reshape(shape)
        sig = torch.tensor(math.exp(log_sigma), dtype=torch.float64)
        d = denoiser(x, sig)
        return (x - d.to(torch.float64)).reshape(-1).numpy()

    sol = solve_ivp(rhs, (math.log(sigma_from), math.log(end)), x0, method="DOP853", rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"reference ODE solve failed: {sol.message}")
    out = torch.from_numpy(sol.y[:, -1].copy()).reshape(shape)
    return out.to(device=x_hat.device)
