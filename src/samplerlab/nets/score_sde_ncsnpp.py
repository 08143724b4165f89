"""NCSN++ and DDPM++ for images as Song et al. 2021 ("Score-based generative modeling through stochastic
differential equations", App. H) published them, with the parameter names of their PyTorch checkpoints
(score_sde_pytorch), so that ``adapters.score_sde.load_score_sde`` loads them strictly.

Both are one U-Net of BigGAN-type residual blocks (Brock et al. 2019) with 1 / sqrt(2)-rescaled sums and
DDPM attention at 16 x 16; they differ in four switches (App. H, Table 4 and the published configs):

- resampling: the FIR filter [1, 3, 3, 1] (NCSN++, Zhang 2019) or nearest / mean (DDPM++);
- the noise embedding: random Fourier features of log sigma (continuous VE) or sinusoids of the time label
  (Vaswani et al. 2017; VP, sub-VP and the discrete VE models);
- pyramids: an input pyramid (``input_skip``: the FIR-downsampled image added through a 1 x 1 projection;
  ``residual``: downsampled by a strided convolution and averaged into the trunk) and an output pyramid
  (``output_skip``: every resolution's projection, upsampled and summed), or neither;
- ``scale_by_sigma``: the output divided by the noise level, making it a score for VE models.

The layers sit in one ``all_modules`` list in the order they are used (the checkpoints' layout), plus the
``sigmas`` buffer (the discrete VE noise levels, geometric from sigma_max to sigma_min) that the positional
models read their noise level from. ``forward(x, time_cond)`` returns the raw network output; what it means
(score, or minus the noise) depends on the SDE and is the adapter's business.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ncsnpp import (
    AttentionBlock,
    BigGANBlock,
    Combine,
    FourierFeatures,
    _fir_kernel,
    _norm,
    _upfirdn,
    fir_downsample,
    fir_upsample,
)

__all__ = ["ScoreSDENetConfig", "ScoreSDENCSNpp", "timestep_embedding"]


def timestep_embedding(t: Tensor, dim: int, max_positions: int = 10000) -> Tensor:
    """[sin(t w_j), cos(t w_j)], w_j = max_positions^(-j / (dim/2 - 1)), j < dim/2 (DDPM's sinusoids); odd
    ``dim`` padded with one zero."""
    half = dim // 2
    w = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * (-math.log(max_positions) / (half - 1)))
    angle = t.float()[:, None] * w[None, :]
    emb = torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


@dataclass(frozen=True)
class ScoreSDENetConfig:
    """The architecture fields of a score_sde config (``config.model`` and ``config.data``)."""

    image_size: int = 32
    num_channels: int = 3
    nf: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 4
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    fir: bool = True
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    progressive: str = "none"  # or "output_skip"
    progressive_input: str = "residual"  # or "none", "input_skip"
    embedding_type: str = "fourier"  # or "positional"
    fourier_scale: float = 16.0
    scale_by_sigma: bool = True
    centered: bool = False  # data in [-1, 1]; else [0, 1], mapped to [-1, 1] at the input
    sigma_min: float = 0.01  # the `sigmas` buffer: num_scales levels from sigma_max down to sigma_min
    sigma_max: float = 50.0
    num_scales: int = 1000

    def __post_init__(self):
        for name, value, valid in (
            ("progressive", self.progressive, ("none", "output_skip")),
            ("progressive_input", self.progressive_input, ("none", "input_skip", "residual")),
            ("embedding_type", self.embedding_type, ("fourier", "positional")),
        ):
            if value not in valid:
                raise ValueError(f"score_sde NCSN++: {name} {value!r} is not supported; valid: {', '.join(valid)}")
        if self.nf < 4 or self.nf % 4 or not self.ch_mult or self.num_res_blocks < 1:
            raise ValueError(
                f"score_sde NCSN++: bad nf={self.nf}, ch_mult={self.ch_mult}, num_res_blocks={self.num_res_blocks}"
            )


class _PyramidDownsample(nn.Module):
    """The ``residual`` input pyramid's strided 3 x 3 convolution: FIR-filtered then strided (StyleGAN2's
    fused conv-downsample; parameters ``Conv2d_0.weight / bias``) or, without FIR, padded right / bottom by
    one and strided (``Conv_0``)."""

    def __init__(self, channels_in: int, channels_out: int, taps):
        super().__init__()
        self.taps = taps
        if taps:
            self.Conv2d_0 = _RawConv(channels_in, channels_out)
        else:
            self.Conv_0 = nn.Conv2d(channels_in, channels_out, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        if not self.taps:
            return self.Conv_0(F.pad(x, (0, 1, 0, 1)))
        conv = self.Conv2d_0
        k = _fir_kernel(self.taps, 1.0)
        p = (k.shape[0] - 2) + (conv.weight.shape[-1] - 1)
        x = _upfirdn(x, k, 1, 1, ((p + 1) // 2, p // 2))
        return F.conv2d(x, conv.weight, stride=2) + conv.bias[None, :, None, None]


class _RawConv(nn.Module):
    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels_out, channels_in, 3, 3))
        self.bias = nn.Parameter(torch.zeros(channels_out))


class ScoreSDENCSNpp(nn.Module):
    """score_sde's ``ncsnpp`` model (NCSN++ and DDPM++). ``forward(x, time_cond)``: x (B, C, H, W) in the
    data's range, time_cond the noise level sigma (Fourier embedding) or the time label (positional)."""

    def __init__(self, config: ScoreSDENetConfig | None = None, **settings):
        super().__init__()
        self.config = cfg = config or ScoreSDENetConfig(**settings)
        nf, channels = cfg.nf, cfg.num_channels
        taps = tuple(cfg.fir_kernel) if cfg.fir else ()
        levels = len(cfg.ch_mult)
        resolutions = [cfg.image_size // 2**i for i in range(levels)]
        sigmas = torch.exp(torch.linspace(math.log(cfg.sigma_max), math.log(cfg.sigma_min), cfg.num_scales))
        self.register_buffer("sigmas", sigmas)

        def block(cin, cout=None, **kw):
            return BigGANBlock(cin, cout or cin, 4 * nf, taps=taps, dropout=cfg.dropout, **kw)

        m: list[nn.Module] = []
        if cfg.embedding_type == "fourier":
            m.append(FourierFeatures(nf, cfg.fourier_scale))
        m += [nn.Linear(2 * nf if cfg.embedding_type == "fourier" else nf, 4 * nf), nn.Linear(4 * nf, 4 * nf)]
        m.append(nn.Conv2d(channels, nf, 3, padding=1))
        skips, c, pyramid_c = [nf], nf, channels
        for level in range(levels):
            for _ in range(cfg.num_res_blocks):
                m.append(block(c, nf * cfg.ch_mult[level]))
                c = nf * cfg.ch_mult[level]
                if resolutions[level] in cfg.attn_resolutions:
                    m.append(AttentionBlock(c))
                skips.append(c)
            if level != levels - 1:
                m.append(block(c, down=True))
                if cfg.progressive_input == "input_skip":
                    m.append(Combine(pyramid_c, c))
                elif cfg.progressive_input == "residual":
                    m.append(_PyramidDownsample(pyramid_c, c, taps))
                    pyramid_c = c
                skips.append(c)
        m += [block(c), AttentionBlock(c), block(c)]
        for level in reversed(range(levels)):
            for _ in range(cfg.num_res_blocks + 1):
                m.append(block(c + skips.pop(), nf * cfg.ch_mult[level]))
                c = nf * cfg.ch_mult[level]
            if resolutions[level] in cfg.attn_resolutions:
                m.append(AttentionBlock(c))
            if cfg.progressive == "output_skip":
                m += [_norm(c), nn.Conv2d(c, channels, 3, padding=1)]
            if level != 0:
                m.append(block(c, up=True))
        if cfg.progressive != "output_skip":
            m += [_norm(c), nn.Conv2d(c, channels, 3, padding=1)]
        self.all_modules = nn.ModuleList(m)

    def forward(self, x: Tensor, time_cond: Tensor) -> Tensor:
        cfg, m = self.config, iter(self.all_modules)
        taps = tuple(cfg.fir_kernel) if cfg.fir else ()
        levels = len(cfg.ch_mult)
        if cfg.embedding_type == "fourier":
            used_sigmas = time_cond
            emb = next(m)(torch.log(time_cond))
        else:
            used_sigmas = self.sigmas[time_cond.long()]
            emb = timestep_embedding(time_cond, cfg.nf)
        emb = next(m)(emb)
        emb = next(m)(F.silu(emb))
        if not cfg.centered:
            x = 2 * x - 1
        pyramid_in = x
        hs = [next(m)(x)]
        for level in range(levels):
            for _ in range(cfg.num_res_blocks):
                h = next(m)(hs[-1], emb)
                if h.shape[-1] in cfg.attn_resolutions:
                    h = next(m)(h)
                hs.append(h)
            if level != levels - 1:
                h = next(m)(hs[-1], emb)
                if cfg.progressive_input == "input_skip":
                    pyramid_in = fir_downsample(pyramid_in, taps) if taps else F.avg_pool2d(pyramid_in, 2)
                    h = next(m)(pyramid_in, h)
                elif cfg.progressive_input == "residual":
                    pyramid_in = h = (next(m)(pyramid_in) + h) / math.sqrt(2.0)
                hs.append(h)
        h = next(m)(hs[-1], emb)
        h = next(m)(h)
        h = next(m)(h, emb)
        pyramid = None
        for level in reversed(range(levels)):
            for _ in range(cfg.num_res_blocks + 1):
                h = next(m)(torch.cat([h, hs.pop()], dim=1), emb)
            if h.shape[-1] in cfg.attn_resolutions:
                h = next(m)(h)
            if cfg.progressive == "output_skip":
                norm, project = next(m), next(m)
                out = project(F.silu(norm(h)))
                if pyramid is not None:
                    up = fir_upsample(pyramid, taps) if taps else F.interpolate(pyramid, scale_factor=2.0)
                    out = up + out
                pyramid = out
            if level != 0:
                h = next(m)(h, emb)
        if cfg.progressive == "output_skip":
            h = pyramid
        else:
            norm, project = next(m), next(m)
            h = project(F.silu(norm(h)))
        if cfg.scale_by_sigma:
            h = h / used_sigmas.reshape(-1, 1, 1, 1)
        return h
