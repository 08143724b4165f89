"""A small MLP network for 2-D and low-dimensional data."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .registry import NETS

__all__ = ["MLPDenoiserNet", "fourier_features"]


def fourier_features(c_noise: Tensor, num: int, scale: float = 16.0) -> Tensor:
    """[cos, sin](2 pi f c_noise) at ``num // 2`` fixed log-spaced frequencies up to ``scale``."""
    half = num // 2
    freqs = torch.exp(torch.linspace(0, math.log(scale), half, device=c_noise.device, dtype=c_noise.dtype))
    angles = 2 * math.pi * c_noise.reshape(-1, 1) * freqs
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class MLPDenoiserNet(nn.Module):
    """F(x_in, c_noise, class_labels): residual SiLU MLP with a Fourier noise embedding and an optional
    class embedding (index ``num_classes`` is the "no label" token used for guidance dropout)."""

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, emb: int = 32, num_classes: int = 0):
        if min(dim, hidden, emb) < 1 or depth < 0 or num_classes < 0:
            raise ValueError(
                f"MLP: dim, hidden and emb must be >= 1, depth and num_classes >= 0; got dim={dim}, "
                f"hidden={hidden}, depth={depth}, emb={emb}, num_classes={num_classes}"
            )
        super().__init__()
        self.dim, self.emb, self.num_classes = dim, emb, num_classes
        self.inp = nn.Linear(dim + emb, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            for _ in range(depth)
        )
        self.noise_proj = nn.ModuleList(nn.Linear(emb, hidden) for _ in range(depth))
        self.label_emb = nn.Embedding(num_classes + 1, emb) if num_classes else None
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, c_noise: Tensor, class_labels: Tensor | None = None) -> Tensor:
        e = fourier_features(c_noise.to(x.dtype).expand(x.shape[0]), self.emb)
        if self.label_emb is not None:
            if class_labels is None:
                class_labels = torch.full((x.shape[0],), self.num_classes, device=x.device, dtype=torch.long)
            e = e + self.label_emb(class_labels)
        h = self.inp(torch.cat([x.reshape(x.shape[0], -1), e], dim=1))
        for block, proj in zip(self.blocks, self.noise_proj):
            h = h + block(h + proj(e))
        return self.out(h).reshape(x.shape)


@NETS.register("mlp")
def build_mlp(shape: tuple, num_classes: int, config) -> MLPDenoiserNet:
    """The MLP on flattened examples (``config.hidden``, ``config.depth``)."""
    return MLPDenoiserNet(math.prod(shape), config.hidden, config.depth, num_classes=num_classes)
