"""Exact analytic data distributions: Gaussian mixtures with closed-form denoisers.

For data x_0 ~ sum_k w_k N(mu_k, C_k) and x_hat = x_0 + sigma z, the noisy
marginal is sum_k w_k N(mu_k, C_k + sigma^2 I) and the ideal denoiser is

    D(x_hat, sigma) = E[x_0 | x_hat] = sum_k r_k(x_hat) [mu_k + C_k (C_k + sigma^2 I)^{-1} (x_hat - mu_k)],

with r_k the posterior component probabilities (e.g. Karras et al. 2022,
eq. 3 for the ideal denoiser; the Gaussian conditioning is standard). With
C_k = U_k diag(lambda_k) U_k^T every quantity is diagonal in U_k's basis, so one
eigendecomposition serves all sigma. Because this D is exact, a sampler's
error against it is pure discretisation error.

Works for any process: D is defined on the scaled variable x_hat = x / s(t).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["GaussianMixture", "JointGaussianMixture", "ResidualDenoiser"]

_LOG_2PI = math.log(2 * math.pi)


class GaussianMixture:
    """Gaussian mixture with exact denoiser, score, log-density and sampling.

    Args:
        weights: (K,) mixture weights, or (B, K) per-sample weights (conditional models).
        means: (K, d), or (B, K, d) per-sample means.
        covs: (K, d) diagonal variances or (K, d, d) full covariances (positive definite).
    """

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor, dtype: torch.dtype | None = None):
        dtype = dtype or (means.dtype if means.is_floating_point() else torch.float64)
        weights = torch.as_tensor(weights, dtype=dtype)
        means = torch.as_tensor(means, dtype=dtype)
        covs = torch.as_tensor(covs, dtype=dtype)
        if means.ndim < 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        K, d = means.shape[-2], means.shape[-1]
        if weights.shape[-1] != K or bool((weights < 0).any()) or not bool(torch.isfinite(weights).all()):
            raise ValueError(
                f"weights must be finite and non-negative with last dimension K={K}, got {weights.tolist()}"
                if weights.numel() <= 16
                else f"weights must be finite and non-negative with last dimension K={K}, got shape {tuple(weights.shape)}"
            )
        if not bool((weights.sum(-1) > 0).all()):
            raise ValueError(
                f"the weights sum to 0: at least one component needs a positive weight, got {weights.tolist()}"
            )
        for name, value in (("means", means), ("covs", covs)):
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"{name} must be finite; {int((~torch.isfinite(value)).sum())} entries are NaN or inf")
        self.log_weights = torch.log(weights / weights.sum(-1, keepdim=True))
        self.means = means
        if covs.shape == (K, d):
            if bool((covs <= 0).any()):
                raise ValueError("diagonal covariances must be positive")
            self.evals, self.evecs = covs, None
        elif covs.shape == (K, d, d):
            # eigh in float64 for accuracy whatever the working dtype
            evals, evecs = torch.linalg.eigh(covs.to(torch.float64))
            if bool((evals <= 0).any()):
                raise ValueError("covariances must be positive definite")
            self.evals, self.evecs = evals.to(dtype), evecs.to(dtype)
        else:
            raise ValueError(f"covs must have shape (K, d)=({K}, {d}) or (K, d, d), got {tuple(covs.shape)}")
        self.dim = d
        self.num_components = K

    # -- construction helpers ------------------------------------------------
    @classmethod
    def gaussian(cls, mean: Tensor, cov: Tensor) -> "GaussianMixture":
        mean = torch.as_tensor(mean)
        return cls(torch.ones(1, dtype=mean.dtype), mean[None], torch.as_tensor(cov)[None])

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    def to(self, dtype: torch.dtype) -> "GaussianMixture":
        new = object.__new__(GaussianMixture)
        new.__dict__.update(self.__dict__)
        for name in ("log_weights", "means", "evals", "evecs"):
            value = getattr(self, name)
            setattr(new, name, None if value is None else value.to(dtype))
        return new

    def covariances(self) -> Tensor:
        """Full (K, d, d) covariances."""
        if self.evecs is None:
            return torch.diag_embed(self.evals)
        return self.evecs @ torch.diag_embed(self.evals) @ self.evecs.transpose(-1, -2)

    # -- per-component quantities in eigen coordinates ------------------------
    def _rotate(self, v: Tensor) -> Tensor:
        """(B, K, d) vectors into each component's eigenbasis."""
        return v if self.evecs is None else torch.einsum("bkd,kde->bke", v, self.evecs)

    def _unrotate(self, v: Tensor) -> Tensor:
        return v if self.evecs is None else torch.einsum("bke,kde->bkd", v, self.evecs)

    def _parts(self, x: Tensor, sigma):
        """Centered eigen-coordinates y, noisy variances and component log-posteriors."""
        x = x.reshape(x.shape[0], -1).to(self.dtype)
        if x.shape[1] != self.dim:
            raise ValueError(
                f"this mixture is {self.dim}-dimensional: samples of shape ({self.dim},) are needed, got "
                f"{x.shape[1]} values per sample"
            )
        sigma = torch.as_tensor(sigma, dtype=self.dtype, device=x.device).reshape(-1, 1, 1)
        diff = x[:, None, :] - self.means  # (B, K, d)
        y = self._rotate(diff)
        var = self.evals + sigma**2  # (B or 1, K, d)
        log_comp = -0.5 * ((y**2 / var).sum(-1) + torch.log(var).sum(-1) + self.dim * _LOG_2PI)
        log_joint = self.log_weights + log_comp  # (B, K)
        return y, var, log_joint

    # -- the exact model --------------------------------------------------------
    def __call__(self, x: Tensor, sigma, **cond) -> Tensor:
        return self.denoise(x, sigma)

    def denoise(self, x: Tensor, sigma) -> Tensor:
        """E[x_0 | x_hat = x] at noise level sigma (scalar or per sample)."""
        y, var, log_joint = self._parts(x, sigma)
        resp = torch.softmax(log_joint, dim=-1)  # (B, K)
        shrunk = self._unrotate(y * (self.evals / var))  # C (C + sigma^2)^-1 (x - mu)
        post_means = self.means + shrunk
        out = (resp[..., None] * post_means).sum(1)
        return out.reshape(x.shape).to(x.dtype)

    def log_prob(self, x: Tensor, sigma=0.0) -> Tensor:
        """log p(x_hat; sigma), the density of x_0 + sigma z (sigma = 0: the data density)."""
        _, _, log_joint = self._parts(x, sigma)
        return torch.logsumexp(log_joint, dim=-1)

    def score(self, x: Tensor, sigma) -> Tensor:
        """grad log p(x_hat; sigma) = (D(x_hat, sigma) - x_hat) / sigma^2 (Tweedie)."""
        y, var, log_joint = self._parts(x, sigma)
        resp = torch.softmax(log_joint, dim=-1)
        g = -self._unrotate(y / var)
        return (resp[..., None] * g).sum(1).reshape(x.shape).to(x.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Exact samples of the data distribution (n must equal B for per-sample mixtures)."""
        probs = torch.exp(self.log_weights.to(torch.float64))
        if probs.ndim == 1:
            k = torch.multinomial(probs, n, replacement=True, generator=generator)
            means = self.means[k]
        else:
            if probs.shape[0] != n:
                raise ValueError(f"this mixture has per-sample weights for {probs.shape[0]} samples; asked for {n}")
            k = torch.multinomial(probs, 1, generator=generator)[:, 0]
            means = self.means[torch.arange(n), k]
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64).to(self.dtype)
        noise = z * torch.sqrt(self.evals[k])
        if self.evecs is not None:
            noise = torch.einsum("be,bde->bd", noise, self.evecs[k])
        return means + noise

    def flow_velocity(self, x_t: Tensor, t: float) -> Tensor:
        """The exact rectified-flow velocity v(x_t, t) = E[eps - x_0 | x_t] of this data under x_t = (1 - t) x_0 +
        t eps (Liu et al. 2022): (x_t - D(x_t / (1 - t), t / (1 - t))) / t, and its limit x_t - E[x_0] at t = 1,
        where flow pipelines start. The mixture as a flow model, for a peer's scheduler to call."""
        t = float(t)
        if t >= 1.0:
            return x_t - self.mean().to(x_t.dtype)
        return (x_t - self(x_t / (1 - t), torch.tensor(t / (1 - t), dtype=x_t.dtype))) / t

    def mean(self) -> Tensor:
        w = torch.exp(self.log_weights)
        return (w[..., None] * self.means).sum(-2)

    def covariance(self) -> Tensor:
        """Covariance of the whole mixture (unconditional mixtures only)."""
        if self.means.ndim != 2:
            raise ValueError("covariance() is defined for mixtures without per-sample parameters")
        w = torch.exp(self.log_weights)
        m = self.mean()
        dm = self.means - m
        return (w[:, None, None] * (self.covariances() + dm[:, :, None] * dm[:, None, :])).sum(0)

    def ode_flow(self, x: Tensor, sigma_from: float, sigma_to: float) -> Tensor:
        """Exact probability-flow ODE map x_hat(sigma_from) -> x_hat(sigma_to), single Gaussian only.

        dx/dsigma = (x - D)/sigma is linear for one Gaussian; in its eigenbasis
        x_i(sigma) - mu_i = sqrt((lambda_i + sigma^2) / (lambda_i + sigma_from^2)) (x_i(sigma_from) - mu_i).
        """
        if self.num_components != 1 or self.means.ndim != 2:
            raise ValueError("the closed-form ODE flow exists for a single Gaussian only")
        xf = x.reshape(x.shape[0], -1).to(self.dtype)
        y = self._rotate(xf[:, None, :] - self.means)
        ratio = torch.sqrt((self.evals + sigma_to**2) / (self.evals + sigma_from**2))
        out = self.means + self._unrotate(y * ratio)
        return out[:, 0].reshape(x.shape).to(x.dtype)


@dataclass
class JointGaussianMixture:
    """Joint mixture over (x_0, y), each of dimension d: the conditional (e.g. OUVE) exact model.

    Component k is N((mu_x, mu_y), [[C_xx, C_xy], [C_yx, C_yy]]). Given y, x_0 | y is again a
    Gaussian mixture with per-sample weights w_k N(y; mu_y, C_yy) and means
    mu_x + C_xy C_yy^-1 (y - mu_y), covariance C_xx - C_xy C_yy^-1 C_yx (Gaussian conditioning).
    """

    weights: Tensor  # (K,)
    means: Tensor  # (K, 2d)
    covs: Tensor  # (K, 2d, 2d)

    @classmethod
    def clean_plus_noise(cls, clean: GaussianMixture, noise_cov: Tensor) -> "JointGaussianMixture":
        """y = x_0 + n with n ~ N(0, noise_cov) independent of x_0 (a noisy recording)."""
        C = clean.covariances()
        N = torch.as_tensor(noise_cov, dtype=C.dtype)
        N = torch.diag_embed(N) if N.ndim == 1 else N
        top = torch.cat([C, C], dim=-1)
        bottom = torch.cat([C, C + N], dim=-1)
        means = torch.cat([clean.means, clean.means], dim=-1)
        return cls(torch.exp(clean.log_weights), means, torch.cat([top, bottom], dim=-2))

    @property
    def dim(self) -> int:
        return self.means.shape[-1] // 2

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        joint = GaussianMixture(self.weights, self.means, self.covs).sample(n, generator)
        return joint[:, : self.dim], joint[:, self.dim :]

    def posterior(self, y: Tensor) -> GaussianMixture:
        """p(x_0 | y) as a per-sample Gaussian mixture."""
        d = self.dim
        C = self.covs.to(torch.float64)
        Cxx, Cxy, Cyy = C[:, :d, :d], C[:, :d, d:], C[:, d:, d:]
        mx, my = self.means[:, :d].to(torch.float64), self.means[:, d:].to(torch.float64)
        y64 = y.to(torch.float64)
        gain = Cxy @ torch.linalg.inv(Cyy)  # (K, d, d)
        dy = y64[:, None, :] - my  # (B, K, d)
        means = mx + torch.einsum("kij,bkj->bki", gain, dy)
        covs = Cxx - gain @ Cxy.transpose(-1, -2)
        covs = 0.5 * (covs + covs.transpose(-1, -2))
        marg_y = GaussianMixture(self.weights.to(torch.float64), my, Cyy)
        _, _, log_joint = marg_y._parts(y64, 0.0)
        weights = torch.softmax(log_joint, dim=-1)
        return GaussianMixture(weights, means, covs).to(y.dtype)

    def residual_posterior(self, y: Tensor) -> GaussianMixture:
        """p(u_0 | y) for the residual u_0 = x_0 - y, the variable the OUVE process noises."""
        post = self.posterior(y)
        shifted = post.to(post.dtype)
        shifted.means = post.means - y[:, None, :].to(post.dtype)
        return shifted

    def residual_denoiser(self, dtype: torch.dtype = torch.float64) -> "ResidualDenoiser":
        """The exact denoiser of u_0 = x_0 - y with y passed as conditioning, D(u, sigma, y=y): the way every
        conditional model (the speech models too) receives y."""
        return ResidualDenoiser(self, dtype)


class ResidualDenoiser:
    """D(u_hat, sigma, y=...) of the OUVE residual under a ``JointGaussianMixture``. p(u_0 | y) is computed
    once per y tensor (a sampler passes the same y at every step)."""

    def __init__(self, joint: JointGaussianMixture, dtype: torch.dtype = torch.float64):
        self.joint, self.dtype = joint, dtype
        self._y: Tensor | None = None
        self._posterior: GaussianMixture | None = None

    def to(self, dtype: torch.dtype) -> "ResidualDenoiser":
        return ResidualDenoiser(self.joint, dtype)

    def __call__(self, u: Tensor, sigma, *, y: Tensor) -> Tensor:
        if self._y is not y:
            self._posterior, self._y = self.joint.residual_posterior(y).to(self.dtype), y
        return self._posterior(u, sigma)
