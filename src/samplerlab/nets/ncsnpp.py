"""NCSN++ (Song et al. 2021, "Score-based generative modeling through stochastic differential equations",
Appendix H) as SGMSE+ uses it (Richter et al. 2023, Sec. III-C): the speech enhancement backbone over complex
spectrograms, with parameter names that match SGMSE+'s checkpoints so that their state dicts load strictly.

The architecture (App. H, "NCSN++"): a U-Net of BigGAN-type residual blocks (Brock et al. 2019) whose up- and
down-sampling use the FIR filter [1, 3, 3, 1] (Zhang 2019, anti-aliased resampling), residual and skip sums
rescaled by 1 / sqrt(2), self-attention at the listed resolutions, an input pyramid that adds the
FIR-downsampled input at every resolution ("input_skip") and an output pyramid that sums each resolution's
projection, upsampled ("output_skip"); the noise level enters through Gaussian Fourier features of
log(sigma) (Tancik et al. 2020), two dense layers, and a per-block bias. SGMSE+ feeds it [Re x, Im x, Re y,
Im y] and reads the score, divided by the noise level, through a 1 x 1 output layer as (Re, Im).

The parameters sit in one flat ``all_modules`` list in the order the layers are used (the checkpoints' key
layout); ``forward`` walks it with a cursor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["NCSNppConfig", "NCSNpp", "NCSNppV2", "fir_upsample", "fir_downsample", "naive_upsample", "naive_downsample"]


# --- FIR resampling (upfirdn: upsample by zero insertion, pad, filter, downsample) ---------------------------


def _fir_kernel(taps, gain: float) -> Tensor:
    k = torch.as_tensor(taps, dtype=torch.float64)
    k = torch.outer(k, k)
    return k / k.sum() * gain


def _upfirdn(x: Tensor, kernel: Tensor, up: int, down: int, pad: tuple[int, int]) -> Tensor:
    """Each channel separately: insert up - 1 zeros after every sample, pad (before, after) in both dimensions,
    convolve with ``kernel`` (a true convolution: the kernel is flipped for torch's correlation), keep every
    ``down``-th sample."""
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(b, c, h * up, w * up)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    weight = torch.flip(kernel, [0, 1]).to(x.dtype).to(x.device)
    weight = weight[None, None].expand(c, 1, *kernel.shape)
    return F.conv2d(x, weight, stride=down, groups=c)


def fir_upsample(x: Tensor, taps=(1, 3, 3, 1), factor: int = 2) -> Tensor:
    """2x upsampling with the normalised separable FIR filter ``taps`` (gain factor^2 keeps a constant image
    constant); output exactly factor times the input's size."""
    k = _fir_kernel(taps, factor**2)
    p = k.shape[0] - factor
    return _upfirdn(x, k, factor, 1, ((p + 1) // 2 + factor - 1, p // 2))


def fir_downsample(x: Tensor, taps=(1, 3, 3, 1), factor: int = 2) -> Tensor:
    """2x anti-aliased downsampling: filter with the normalised ``taps``, keep every second sample."""
    k = _fir_kernel(taps, 1.0)
    p = k.shape[0] - factor
    return _upfirdn(x, k, 1, factor, ((p + 1) // 2, p // 2))


def naive_upsample(x: Tensor, factor: int = 2) -> Tensor:
    """Nearest-neighbour upsampling: every pixel repeated factor x factor times."""
    return x.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def naive_downsample(x: Tensor, factor: int = 2) -> Tensor:
    """The mean of every factor x factor block."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // factor, factor, w // factor, factor).mean(dim=(3, 5))


# --- blocks (attribute names as in the checkpoints) ----------------------------------------------------------


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(channels // 4, 32), channels, eps=1e-6)


class FourierFeatures(nn.Module):
    """[sin(2 pi W s), cos(2 pi W s)] of a scalar s per sample, W ~ N(0, scale^2) fixed (Tancik et al. 2020)."""

    def __init__(self, size: int, scale: float):
        super().__init__()
        self.W = nn.Parameter(torch.randn(size) * scale, requires_grad=False)

    def forward(self, s: Tensor) -> Tensor:
        angle = s[:, None] * self.W[None, :] * (2 * math.pi)
        return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


class NIN(nn.Module):
    """A 1 x 1 linear map over channels, y = x W + b (DDPM's "network in network")."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.W = nn.Parameter(torch.zeros(channels_in, channels_out))
        self.b = nn.Parameter(torch.zeros(channels_out))

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("bchw,cd->bdhw", x, self.W) + self.b[None, :, None, None]


class AttentionBlock(nn.Module):
    """Self-attention over all positions (DDPM), residual sum scaled by 1 / sqrt(2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.GroupNorm_0 = _norm(channels)
        self.NIN_0, self.NIN_1, self.NIN_2, self.NIN_3 = (NIN(channels, channels) for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        n = self.GroupNorm_0(x)
        q, k, v = self.NIN_0(n), self.NIN_1(n), self.NIN_2(n)
        logits = torch.einsum("bcp,bcq->bpq", q.reshape(b, c, h * w), k.reshape(b, c, h * w)) / math.sqrt(c)
        out = torch.einsum("bpq,bcq->bcp", torch.softmax(logits, dim=-1), v.reshape(b, c, h * w))
        return (x + self.NIN_3(out.reshape(b, c, h, w))) / math.sqrt(2.0)


class BigGANBlock(nn.Module):
    """BigGAN-type residual block: norm, SiLU, (resample), conv, + dense(time embedding), norm, SiLU, dropout,
    conv; the shortcut resampled and 1 x 1-projected when the shape changes; sum / sqrt(2). ``taps`` empty:
    nearest-neighbour up- and 2 x 2 mean downsampling (DDPM++) instead of the FIR filter."""

    def __init__(self, channels_in: int, channels_out: int, emb_dim: int, *, up=False, down=False, taps, dropout):
        super().__init__()
        self.up, self.down, self.taps = up, down, taps
        self.GroupNorm_0 = _norm(channels_in)
        self.Conv_0 = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.Dense_0 = nn.Linear(emb_dim, channels_out)
        self.GroupNorm_1 = _norm(channels_out)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        self.project = channels_in != channels_out or up or down
        if self.project:
            self.Conv_2 = nn.Conv2d(channels_in, channels_out, 1)

    def _resample(self, x: Tensor) -> Tensor:
        if self.up:
            return fir_upsample(x, self.taps) if self.taps else naive_upsample(x)
        if self.down:
            return fir_downsample(x, self.taps) if self.taps else naive_downsample(x)
        return x

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self._resample(F.silu(self.GroupNorm_0(x)))
        h = self.Conv_0(h) + self.Dense_0(F.silu(emb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(F.silu(self.GroupNorm_1(h))))
        x = self._resample(x)
        if self.project:
            x = self.Conv_2(x)
        return (x + h) / math.sqrt(2.0)


class Combine(nn.Module):
    """The input pyramid joins the trunk: a 1 x 1 projection of the pyramid, added."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.Conv_0 = nn.Conv2d(channels_in, channels_out, 1)

    def forward(self, pyramid: Tensor, h: Tensor) -> Tensor:
        return self.Conv_0(pyramid) + h


# --- the network ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NCSNppConfig:
    """SGMSE+'s NCSN++ settings (its defaults: the published 16 kHz models). ``image_size`` is the frequency
    size the attention resolutions refer to (256 bins: n_fft 510)."""

    nf: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    image_size: int = 256
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    fourier_scale: float = 16.0
    dropout: float = 0.0
    centered: bool = True
    scale_by_sigma: bool = True  # the score is the network's output divided by sigma
    output_skip: bool = True  # the output pyramid (else one final norm + conv after the up path)
    input_skip: bool = True  # the input pyramid
    scale_after_output: bool = False  # divide by sigma after the output layer (ncsnpp_48k) instead of before

    @classmethod
    def for_backbone(cls, backbone: str, **settings) -> "NCSNppConfig":
        """The settings of SGMSE+'s backbone ``backbone`` (ncsnpp, ncsnpp_48k, ncsnpp_v2) updated by
        ``settings`` (a checkpoint's hyperparameters)."""
        presets = {
            "ncsnpp": {},
            # 48 kHz (EARS): no attention, no pyramids, the output layer before the division by sigma
            "ncsnpp_48k": dict(attn_resolutions=(), output_skip=False, input_skip=False, scale_after_output=True),
            # v2: EDM-style scaling outside the network (c_in, c_out, c_skip in SGMSE+'s ScoreModel)
            "ncsnpp_v2": dict(scale_by_sigma=False),
        }
        if backbone not in presets:
            raise ValueError(f"unknown NCSN++ backbone {backbone!r}; valid: {', '.join(presets)}")
        return cls(**{**presets[backbone], **settings})

    def __post_init__(self):
        if self.nf < 4 or self.nf % 4 or not self.ch_mult or min(self.ch_mult) < 1 or self.num_res_blocks < 1:
            raise ValueError(
                f"bad NCSN++ settings: nf={self.nf} (a multiple of 4), ch_mult={self.ch_mult}, "
                f"num_res_blocks={self.num_res_blocks}"
            )


class NCSNpp(nn.Module):
    """SGMSE+'s NCSN++: ``forward(x, t)`` with x complex (B, 2, F, T) = [x, y] and t the noise level per sample
    (B,) (SGMSE+ conditions on sigma(t) through log of it); returns the complex score (B, 1, F, T). F and T
    must be divisible by 2^(levels - 1)."""

    def __init__(self, config: NCSNppConfig | None = None, **settings):
        super().__init__()
        self.config = cfg = config or NCSNppConfig(**settings)
        nf, taps = cfg.nf, tuple(cfg.fir_kernel)
        emb = 4 * nf
        levels = len(cfg.ch_mult)
        resolutions = [cfg.image_size // 2**i for i in range(levels)]

        def block(cin, cout=None, **kw):
            return BigGANBlock(cin, cout or cin, emb, taps=taps, dropout=cfg.dropout, **kw)

        m: list[nn.Module] = [FourierFeatures(nf, cfg.fourier_scale), nn.Linear(2 * nf, emb), nn.Linear(emb, emb)]
        channels = 4  # Re x, Im x, Re y, Im y
        m.append(nn.Conv2d(channels, nf, 3, padding=1))
        skips, c = [nf], nf
        for level in range(levels):
            for _ in range(cfg.num_res_blocks):
                m.append(block(c, nf * cfg.ch_mult[level]))
                c = nf * cfg.ch_mult[level]
                if resolutions[level] in cfg.attn_resolutions:
                    m.append(AttentionBlock(c))
                skips.append(c)
            if level != levels - 1:
                m.append(block(c, down=True))
                if cfg.input_skip:
                    m.append(Combine(channels, c))
                skips.append(c)
        m += [block(c), AttentionBlock(c), block(c)]
        for level in reversed(range(levels)):
            for _ in range(cfg.num_res_blocks + 1):
                m.append(block(c + skips.pop(), nf * cfg.ch_mult[level]))
                c = nf * cfg.ch_mult[level]
            if resolutions[level] in cfg.attn_resolutions:
                m.append(AttentionBlock(c))
            if cfg.output_skip:
                m += [_norm(c), nn.Conv2d(c, channels, 3, padding=1)]  # this resolution's output projection
            if level != 0:
                m.append(block(c, up=True))
        assert not skips
        if not cfg.output_skip:
            m += [_norm(c), nn.Conv2d(c, channels, 3, padding=1)]
        self.all_modules = nn.ModuleList(m)
        self.output_layer = nn.Conv2d(channels, 2, 1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.score(torch.cat([x[:, :1].real, x[:, :1].imag, x[:, 1:2].real, x[:, 1:2].imag], dim=1), t)

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        """The complex score from the four real channels [Re x, Im x, Re y, Im y]."""
        cfg, m = self.config, iter(self.all_modules)
        levels = len(cfg.ch_mult)
        emb = next(m)(torch.log(t))  # Fourier features of log sigma
        emb = next(m)(emb)
        emb = next(m)(F.silu(emb))
        if not cfg.centered:
            x = 2 * x - 1
        pyramid_in = x
        hs = [next(m)(x)]
        for level in range(levels):
            for _ in range(cfg.num_res_blocks):
                h = next(m)(hs[-1], emb)
                if h.shape[-2] in cfg.attn_resolutions:
                    h = next(m)(h)
                hs.append(h)
            if level != levels - 1:
                h = next(m)(hs[-1], emb)
                if cfg.input_skip:
                    pyramid_in = fir_downsample(pyramid_in, cfg.fir_kernel)
                    h = next(m)(pyramid_in, h)
                hs.append(h)
        h = hs[-1]
        h = next(m)(h, emb)
        h = next(m)(h)
        h = next(m)(h, emb)
        pyramid = None
        for level in reversed(range(levels)):
            for _ in range(cfg.num_res_blocks + 1):
                h = next(m)(torch.cat([h, hs.pop()], dim=1), emb)
            if h.shape[-2] in cfg.attn_resolutions:
                h = next(m)(h)
            if cfg.output_skip:
                norm, project = next(m), next(m)
                out = project(F.silu(norm(h)))
                pyramid = out if pyramid is None else fir_upsample(pyramid, cfg.fir_kernel) + out
            if level != 0:
                h = next(m)(h, emb)
        if cfg.output_skip:
            h = pyramid
        else:
            norm, project = next(m), next(m)
            h = project(F.silu(norm(h)))
        sigma = t.reshape(-1, 1, 1, 1)
        if cfg.scale_by_sigma and not cfg.scale_after_output:
            h = h / sigma
        h = self.output_layer(h)
        if cfg.scale_by_sigma and cfg.scale_after_output:
            h = h / sigma
        return torch.view_as_complex(h.permute(0, 2, 3, 1).contiguous())[:, None]


class NCSNppV2(NCSNpp):
    """``ncsnpp_v2``: the same network called as ``forward(x, y, t)`` with x and y complex (B, 1, F, T), and no
    division by sigma (SGMSE+ scales its input and output outside, EDM-style)."""

    def __init__(self, config: NCSNppConfig | None = None, **settings):
        super().__init__(config or NCSNppConfig.for_backbone("ncsnpp_v2", **settings))

    def forward(self, x: Tensor, y: Tensor, t: Tensor) -> Tensor:  # type: ignore[override]
        return self.score(torch.cat([x.real, x.imag, y.real, y.imag], dim=1), t)
