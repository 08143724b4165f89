"""The four preconditionings of EDM (Karras et al. 2022, Table 1): each wraps a raw network F as a denoiser

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma))

on the noise variable sigma of x = y + sigma n (data y in [-1, 1]). The modules hold the network as
``model`` (and iDDPM its table ``u``), the layout of EDM's pickles, so their state dicts load strictly.

===========  =====================  ==============  =====================  ==================================
             c_skip                 c_out           c_in                   c_noise
===========  =====================  ==============  =====================  ==================================
VP (Song)    1                      -sigma          1 / sqrt(sigma^2 + 1)  (M - 1) sigma^-1(sigma)
VE (Song)    1                      sigma           1                      ln(sigma / 2)
iDDPM        1                      -sigma          1 / sqrt(sigma^2 + 1)  M - 1 - argmin_j |u_j - sigma|
EDM          sd^2/(sigma^2 + sd^2)  sigma sd / ..   1 / sqrt(sigma^2+sd^2)  ln(sigma) / 4
===========  =====================  ==============  =====================  ==================================

VP's sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1) (Table 1); iDDPM's levels u_j follow Nichol &
Dhariwal 2021's cosine schedule with the recursion of Karras et al. 2022, App. C.3.4 (eq. 129). The network
runs in float32 (its weights' type) whatever the state's dtype; D comes back in the state's dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["VPPrecond", "VEPrecond", "IDDPMPrecond", "EDMPrecondModule", "PRECONDITIONERS", "one_hot_labels"]


def one_hot_labels(class_labels, label_dim: int, batch: int, device) -> Tensor | None:
    """EDM's class input: one-hot rows (B, label_dim). Integer labels (B,) are encoded; float rows pass
    through; ``None`` (the unconditional call) is all zeros, as EDM feeds its conditional networks."""
    if not label_dim:
        return None
    if class_labels is None:
        return torch.zeros(batch, label_dim, device=device)
    labels = torch.as_tensor(class_labels, device=device)
    if labels.dtype.is_floating_point and labels.ndim == 2:
        return labels.float()
    if labels.ndim != 1 or labels.numel() not in (1, batch):
        raise ValueError(
            f"class labels must be (B,) integers or (B, {label_dim}) one-hot rows, got {tuple(labels.shape)}"
        )
    if labels.min() < 0 or labels.max() >= label_dim:
        raise ValueError(f"class labels must be in 0..{label_dim - 1}, got {labels.tolist()[:8]}")
    return torch.nn.functional.one_hot(labels.long().expand(batch), label_dim).float()


class _Precond(nn.Module):
    """Shared: the label input, float32 evaluation and the combination with c_skip, c_out, c_in, c_noise."""

    out_channels_factor = 1

    def __init__(self, model: nn.Module, img_channels: int, label_dim: int, sigma_min: float, sigma_max: float):
        super().__init__()
        self.model = model
        self.img_channels, self.label_dim = img_channels, label_dim
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def coefficients(self, sigma: Tensor) -> tuple:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor, sigma, class_labels=None, **_) -> Tensor:
        dtype = x.dtype
        x32 = x.float()
        sigma = torch.as_tensor(sigma, device=x.device).float().reshape(-1)
        sigma = sigma.expand(x.shape[0]).reshape(-1, 1, 1, 1)
        labels = one_hot_labels(class_labels, self.label_dim, x.shape[0], x.device)
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        f = self.model(c_in * x32, c_noise.reshape(-1), labels)[:, : self.img_channels]
        return (c_skip * x32 + c_out * f).to(dtype)


class VPPrecond(_Precond):
    """Song et al.'s VP preconditioning (Karras et al. 2022, Table 1, "VP")."""

    def __init__(self, model, img_channels, label_dim=0, beta_d=19.9, beta_min=0.1, M=1000, epsilon_t=1e-5):
        self.beta_d, self.beta_min, self.M = float(beta_d), float(beta_min), int(M)
        super().__init__(model, img_channels, label_dim, self.sigma(epsilon_t), self.sigma(1.0))

    def sigma(self, t) -> float | Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        value = torch.sqrt(torch.exp(0.5 * self.beta_d * t**2 + self.beta_min * t) - 1)
        return float(value) if value.ndim == 0 else value

    def sigma_inv(self, sigma: Tensor) -> Tensor:
        return (torch.sqrt(self.beta_min**2 + 2 * self.beta_d * torch.log1p(sigma**2)) - self.beta_min) / self.beta_d

    def coefficients(self, sigma):
        return 1.0, -sigma, 1 / torch.sqrt(sigma**2 + 1), (self.M - 1) * self.sigma_inv(sigma)


class VEPrecond(_Precond):
    """Song et al.'s VE preconditioning (Table 1, "VE")."""

    def __init__(self, model, img_channels, label_dim=0, sigma_min=0.02, sigma_max=100.0):
        super().__init__(model, img_channels, label_dim, sigma_min, sigma_max)

    def coefficients(self, sigma):
        return 1.0, sigma, 1.0, torch.log(0.5 * sigma)


class IDDPMPrecond(_Precond):
    """Improved DDPM's preconditioning (Table 1, "iDDPM"): the network sees the index of the nearest of its
    M training levels; it predicts 2 x channels (noise and variance), of which the noise is used."""

    out_channels_factor = 2

    def __init__(self, model, img_channels, label_dim=0, C_1=0.001, C_2=0.008, M=1000):
        self.C_1, self.C_2, self.M = float(C_1), float(C_2), int(M)
        u = torch.zeros(self.M + 1)
        for j in range(self.M, 0, -1):  # eq. 129: u_{j-1} = sqrt((u_j^2 + 1) / max(abar_{j-1} / abar_j, C_1) - 1)
            ratio = max(self._alpha_bar(j - 1) / self._alpha_bar(j), self.C_1)
            u[j - 1] = math.sqrt((float(u[j]) ** 2 + 1) / ratio - 1)
        super().__init__(model, img_channels, label_dim, float(u[self.M - 1]), float(u[0]))
        self.register_buffer("u", u)

    def _alpha_bar(self, j: int) -> float:
        return math.sin(0.5 * math.pi * j / self.M / (self.C_2 + 1)) ** 2

    def coefficients(self, sigma):
        index = torch.argmin((sigma.reshape(-1, 1) - self.u.to(sigma).reshape(1, -1)).abs(), dim=1)
        return 1.0, -sigma, 1 / torch.sqrt(sigma**2 + 1), (self.M - 1 - index).float()


class EDMPrecondModule(_Precond):
    """Karras et al.'s own preconditioning (Table 1, "EDM"; sigma_data = 0.5 for images in [-1, 1]). Its
    supported range is EDM's sampling range (0.002, 80), sec. 5."""

    def __init__(self, model, img_channels, label_dim=0, sigma_min=0.002, sigma_max=80.0, sigma_data=0.5):
        sigma_min = 0.002 if not sigma_min else sigma_min  # EDM stores 0 and inf: "no limit"
        sigma_max = 80.0 if math.isinf(sigma_max) else sigma_max
        super().__init__(model, img_channels, label_dim, sigma_min, sigma_max)
        self.sigma_data = float(sigma_data)

    def coefficients(self, sigma):
        sd = self.sigma_data
        return (
            sd**2 / (sigma**2 + sd**2),
            sigma * sd / torch.sqrt(sigma**2 + sd**2),
            1 / torch.sqrt(sd**2 + sigma**2),
            (torch.log(sigma) / 4),
        )


#: EDM's class names -> (preconditioner, the keyword arguments it takes from the pickle)
PRECONDITIONERS: dict[str, tuple[type, tuple[str, ...]]] = {
    "VPPrecond": (VPPrecond, ("beta_d", "beta_min", "M", "epsilon_t")),
    "VEPrecond": (VEPrecond, ("sigma_min", "sigma_max")),
    "iDDPMPrecond": (IDDPMPrecond, ("C_1", "C_2", "M")),
    "EDMPrecond": (EDMPrecondModule, ("sigma_min", "sigma_max", "sigma_data")),
}
