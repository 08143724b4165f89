"""A DDPM++-like U-Net F(x_in, c_noise, class_labels) for images.

Shape of Song et al. 2021 (DDPM++, App. H) as used by Karras et al. 2022 (Table 7, "DDPM++"):
residual blocks (GroupNorm, SiLU, 3x3 convolutions, the noise embedding added between the
convolutions, skip sums scaled by 1/sqrt(2)), self-attention at chosen resolutions, average-pool
downsampling and nearest-neighbour upsampling, skip connections from every encoder block to the
decoder, and a zero-initialised output convolution so that a fresh network gives F = 0 (then the
EDM-preconditioned denoiser starts as the exact denoiser of N(0, sigma_data^2)).

The noise embedding is positional (Vaswani et al. 2017 sinusoids of c_noise, as in DDPM++) or
Fourier (random fixed frequencies, NCSN++); an optional class embedding with one extra "no label"
index (``num_classes``) supports classifier-free guidance by label dropout. The network knows
nothing about schedules: ``EDMPrecond`` supplies c_in, c_noise and combines its output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import NETS

__all__ = ["UNetConfig", "UNet", "group_norm"]


@dataclass
class UNetConfig:
    """Widths and depths; ``channel_mult[i]`` scales ``channels`` at level i (resolution / 2^i)."""

    channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (4,)
    attention_heads: int = 1
    dropout: float = 0.1
    embedding: str = "positional"  # or "fourier"
    embedding_dim: int | None = None  # default 4 * channels

    def __post_init__(self):
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        self.attention_resolutions = tuple(int(r) for r in self.attention_resolutions)
        if self.channels < 1 or not self.channel_mult or min(self.channel_mult) < 1 or self.num_blocks < 1:
            raise ValueError(
                f"UNet: channels, channel_mult and num_blocks must be positive, got "
                f"{self.channels}, {self.channel_mult}, {self.num_blocks}"
            )
        if self.embedding not in ("positional", "fourier"):
            raise ValueError(f"UNet: unknown embedding {self.embedding!r}; valid: 'positional', 'fourier'")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"UNet: dropout must be in [0, 1), got {self.dropout}")


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with the most groups (up to 32) that divide ``channels`` and keep >= 4 channels each."""
    groups = next(g for g in range(min(32, max(1, channels // 4)), 0, -1) if channels % g == 0)
    return nn.GroupNorm(groups, channels, eps=1e-6)


class PositionalEmbedding(nn.Module):
    """sin / cos of c_noise at geometric frequencies 1 ... 1/10000 (Vaswani et al. 2017, Sec. 3.5)."""

    def __init__(self, dim: int, max_positions: int = 10000):
        super().__init__()
        self.dim, self.max_positions = dim, max_positions

    def forward(self, c: Tensor) -> Tensor:
        half = self.dim // 2
        freqs = (1 / self.max_positions) ** (torch.arange(half, device=c.device, dtype=torch.float32) / half)
        angles = c.float().reshape(-1, 1) * freqs
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class FourierEmbedding(nn.Module):
    """sin / cos of 2 pi f c_noise with fixed random frequencies f ~ N(0, scale^2) (Tancik et al. 2020)."""

    def __init__(self, dim: int, scale: float = 16.0):
        super().__init__()
        self.register_buffer("freqs", torch.randn(dim // 2) * scale)

    def forward(self, c: Tensor) -> Tensor:
        angles = 2 * math.pi * c.float().reshape(-1, 1) * self.freqs
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm0, self.conv0 = group_norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.affine = nn.Linear(emb_dim, 2 * cout)  # scale and shift of the second norm (adaptive GroupNorm)
        self.norm1, self.conv1 = group_norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv1.weight)
        nn.init.zeros_(self.conv1.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        scale, shift = self.affine(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(torch.addcmul(shift, self.norm1(h), scale + 1))
        h = self.conv1(self.dropout(h))
        return (h + self.skip(x)) / math.sqrt(2)


class SelfAttention(nn.Module):
    def __init__(self, channels: int, heads: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"UNet: {channels} channels do not split into {heads} attention heads")
        self.heads = heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        # (b, heads, tokens, head dim), contiguous: the layout torch's fused CPU attention kernel takes (a
        # strided view falls back to the unfused path, 1.1x slower for the whole speech network)
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2)
        q, k, v = qkv.contiguous().unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)
        # contiguous in NCHW: a channels-last-strided input would give proj's weight a channels-last gradient,
        # whose strides differ from the weight's (DDP's "grad strides do not match bucket view strides")
        out = out.transpose(-1, -2).contiguous().view(b, c, h, w)
        return (x + self.proj(out)) / math.sqrt(2)


class _Level(nn.Module):
    """Residual blocks of one resolution, each optionally followed by attention."""

    def __init__(self, blocks: list[ResBlock], attention: list[nn.Module]):
        super().__init__()
        self.blocks, self.attention = nn.ModuleList(blocks), nn.ModuleList(attention)


class UNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        resolution: int,
        config: UNetConfig | None = None,
        num_classes: int = 0,
        out_channels: int | None = None,
    ):
        super().__init__()
        cfg = self.config = config or UNetConfig()
        levels = len(cfg.channel_mult)
        if resolution % 2 ** (levels - 1):
            raise ValueError(
                f"UNet: resolution {resolution} is not divisible by 2^{levels - 1} "
                f"(channel_mult {cfg.channel_mult} has {levels} levels)"
            )
        self.num_classes = num_classes
        emb_dim = cfg.embedding_dim or 4 * cfg.channels
        self.noise_embedding = (PositionalEmbedding if cfg.embedding == "positional" else FourierEmbedding)(
            cfg.channels
        )
        self.embed = nn.Sequential(nn.Linear(cfg.channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_embedding = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None

        def attention(res: int, ch: int) -> nn.Module:
            return SelfAttention(ch, cfg.attention_heads) if res in cfg.attention_resolutions else nn.Identity()

        self.conv_in = nn.Conv2d(in_channels, cfg.channels, 3, padding=1)
        skips, ch, res = [cfg.channels], cfg.channels, resolution
        self.down = nn.ModuleList()
        for i, mult in enumerate(cfg.channel_mult):
            blocks, attn = [], []
            for _ in range(cfg.num_blocks):
                blocks.append(ResBlock(ch, cfg.channels * mult, emb_dim, cfg.dropout))
                ch = cfg.channels * mult
                attn.append(attention(res, ch))
                skips.append(ch)
            self.down.append(_Level(blocks, attn))
            if i < levels - 1:
                res //= 2
                skips.append(ch)  # the downsampled activation is a skip too
        self.mid = _Level(
            [ResBlock(ch, ch, emb_dim, cfg.dropout), ResBlock(ch, ch, emb_dim, cfg.dropout)],
            [SelfAttention(ch, cfg.attention_heads), nn.Identity()],
        )
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, mult in reversed(list(enumerate(cfg.channel_mult))):
            blocks, attn = [], []
            for _ in range(cfg.num_blocks + 1):
                blocks.append(ResBlock(ch + skips.pop(), cfg.channels * mult, emb_dim, cfg.dropout))
                ch = cfg.channels * mult
                attn.append(attention(res, ch))
            self.up.append(_Level(blocks, attn))
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
                res *= 2
        self.norm_out = group_norm(ch)
        self.conv_out = nn.Conv2d(ch, out_channels or in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, c_noise: Tensor, class_labels: Tensor | None = None) -> Tensor:
        emb = self.embed(self.noise_embedding(c_noise.expand(x.shape[0])).to(self.embed[0].weight.dtype))
        if self.label_embedding is not None:
            if class_labels is None:
                class_labels = torch.full((x.shape[0],), self.num_classes, device=x.device, dtype=torch.long)
            emb = emb + self.label_embedding(class_labels)
        emb = F.silu(emb).to(x.dtype)
        h = self.conv_in(x)
        skips = [h]
        for i, level in enumerate(self.down):
            for block, attn in zip(level.blocks, level.attention):
                h = attn(block(h, emb))
                skips.append(h)
            if i < len(self.down) - 1:
                h = F.avg_pool2d(h, 2)
                skips.append(h)
        for block, attn in zip(self.mid.blocks, self.mid.attention):
            h = attn(block(h, emb))
        for j, level in enumerate(self.up):
            for block, attn in zip(level.blocks, level.attention):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            if j < len(self.upsample):
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


@NETS.register("unet")
def build_unet(shape: tuple, num_classes: int, config) -> UNet:
    """The U-Net on square images (C, H, W) (``config.unet_config()``)."""
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"the U-Net takes square images (C, H, W), got examples of shape {shape}")
    return UNet(shape[0], shape[1], config.unet_config(), num_classes=num_classes)
