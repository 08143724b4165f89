"""The image networks of EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
Models", Table 7 and App. F.2), written here from the papers with the parameter names of EDM's published
pickles, so that their state dicts load strictly (``adapters.edm.load_edm``).

- ``SongUNet``: DDPM++ and NCSN++ of Song et al. 2021 ("Score-based generative modeling through SDEs", App. H)
  as EDM re-expressed them: residual blocks (GroupNorm, SiLU, 3 x 3 convolutions, the embedding added between
  them, sums scaled by sqrt(1/2)), single-head self-attention at the listed resolutions and in the
  bottleneck, an embedding of the noise level that is positional (DDPM++; Vaswani et al. 2017) or random
  Fourier (NCSN++; Tancik et al. 2020), box-filter ([1, 1], DDPM++) or FIR [1, 3, 3, 1] (NCSN++; Zhang 2019)
  resampling, and for NCSN++ a "residual" encoder pyramid: the input, downsampled by a strided convolution,
  averaged into the trunk at every resolution.
- ``DhariwalUNet``: ADM of Dhariwal & Nichol 2021 ("Diffusion models beat GANs", Sec. 3): wider residual
  blocks with adaptive group normalisation (the embedding gives a per-channel scale and shift after the
  second normalisation), multi-head attention (64 channels a head) at 32, 16 and 8 pixels, positional
  embedding, a class embedding added to the noise embedding.

Both take ``forward(x, noise_labels, class_labels, augment_labels=None)`` with one-hot ``class_labels``
(B, label_dim) and return the raw output F; the preconditioners (``nets.edm_precond``) turn it into a
denoiser. The order in which the encoder / decoder dictionaries hold their blocks is the order they run in.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SongUNet", "DhariwalUNet", "UNetBlock", "Conv2d", "PositionalEmbedding", "FourierEmbedding"]


def _group_norm(channels: int, eps: float = 1e-5) -> nn.GroupNorm:
    """At most 32 groups and at least 4 channels a group (EDM's convention)."""
    return nn.GroupNorm(min(32, channels // 4), channels, eps=eps)


class Conv2d(nn.Module):
    """A k x k convolution (k = 0: none, only the resampling) with optional 2x up- or downsampling by the
    separable filter ``resample_filter`` (normalised to unit sum; [1, 1] is nearest / box, [1, 3, 3, 1] the
    anti-aliasing filter). ``fused_resample`` convolves first and filters second when downsampling (the
    order of EDM's NCSN++ input pyramid); the two orders differ at the borders, so it is a parameter."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel,
        bias=True,
        up=False,
        down=False,
        resample_filter=(1, 1),
        fused_resample=False,
    ):
        super().__init__()
        if up and down:
            raise ValueError("Conv2d: up and down at once")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.up, self.down, self.fused_resample = up, down, fused_resample
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, kernel, kernel)) if kernel else None
        self.bias = nn.Parameter(torch.zeros(out_channels)) if kernel and bias else None
        f = torch.as_tensor(resample_filter, dtype=torch.float32)
        f = torch.outer(f, f)[None, None] / f.sum() ** 2
        self.register_buffer("resample_filter", f if up or down else None)

    def _upsample(self, x: Tensor, f: Tensor) -> Tensor:
        # zero insertion + filtering with gain 4 (a constant image stays constant), as a transposed convolution
        c = x.shape[1]
        return F.conv_transpose2d(x, (4 * f).tile(c, 1, 1, 1), groups=c, stride=2, padding=(f.shape[-1] - 1) // 2)

    def _downsample(self, x: Tensor, f: Tensor, padding: int) -> Tensor:
        c = x.shape[1]
        return F.conv2d(x, f.tile(c, 1, 1, 1), groups=c, stride=2, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.to(x.dtype) if self.weight is not None else None
        f = self.resample_filter.to(x.dtype) if self.resample_filter is not None else None
        w_pad = w.shape[-1] // 2 if w is not None else 0
        f_pad = (f.shape[-1] - 1) // 2 if f is not None else 0
        if self.fused_resample and self.down and w is not None:
            x = self._downsample(F.conv2d(x, w, padding=w_pad + f_pad), f, 0)
        elif self.fused_resample and self.up and w is not None:
            c = x.shape[1]
            x = F.conv_transpose2d(x, (4 * f).tile(c, 1, 1, 1), groups=c, stride=2, padding=max(f_pad - w_pad, 0))
            x = F.conv2d(x, w, padding=max(w_pad - f_pad, 0))
        else:
            if self.up:
                x = self._upsample(x, f)
            if self.down:
                x = self._downsample(x, f, f_pad)
            if w is not None:
                x = F.conv2d(x, w, padding=w_pad)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype)[None, :, None, None]
        return x


class UNetBlock(nn.Module):
    """Pre-activation residual block with optional resampling and self-attention, the union of the DDPM++,
    NCSN++ and ADM blocks: h = conv1(dropout(SiLU(norm1(conv0(SiLU(norm0(x))), emb)))), out = (h + skip(x)) *
    skip_scale, then attention out = (proj(attention(norm2(out))) + out) * skip_scale. The embedding enters
    as a bias before norm1 (``adaptive_scale`` False: DDPM++ / NCSN++) or as scale and shift after it (ADM's
    adaptive group normalisation)."""

    def __init__(
        self,
        in_channels,
        out_channels,
        emb_channels,
        *,
        up=False,
        down=False,
        attention=False,
        num_heads=None,
        channels_per_head=64,
        dropout=0.0,
        skip_scale=1.0,
        eps=1e-5,
        resample_filter=(1, 1),
        resample_proj=False,
        adaptive_scale=True,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_heads = 0 if not attention else num_heads or out_channels // channels_per_head
        self.dropout, self.skip_scale, self.adaptive_scale = dropout, skip_scale, adaptive_scale
        self.norm0 = _group_norm(in_channels, eps)
        self.conv0 = Conv2d(in_channels, out_channels, 3, up=up, down=down, resample_filter=resample_filter)
        self.affine = nn.Linear(emb_channels, out_channels * (2 if adaptive_scale else 1))
        self.norm1 = _group_norm(out_channels, eps)
        self.conv1 = Conv2d(out_channels, out_channels, 3)
        self.skip = None
        if out_channels != in_channels or up or down:
            kernel = 1 if resample_proj or out_channels != in_channels else 0
            self.skip = Conv2d(in_channels, out_channels, kernel, up=up, down=down, resample_filter=resample_filter)
        if self.num_heads:
            self.norm2 = _group_norm(out_channels, eps)
            self.qkv = Conv2d(out_channels, out_channels * 3, 1)
            self.proj = Conv2d(out_channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        params = self.affine(emb)[:, :, None, None].to(h.dtype)
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            h = F.silu(shift + self.norm1(h) * (scale + 1))
        else:
            h = F.silu(self.norm1(h + params))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        x = (h + (self.skip(x) if self.skip is not None else x)) * self.skip_scale
        if self.num_heads:
            b, c, height, width = x.shape
            # channels of qkv are grouped as (head, channel, {q, k, v})
            q, k, v = self.qkv(self.norm2(x)).reshape(b * self.num_heads, c // self.num_heads, 3, -1).unbind(2)
            scale = 1 / math.sqrt(k.shape[1])
            weights = torch.softmax(torch.einsum("ncq,nck->nqk", q.float(), (k * scale).float()), dim=2).to(q.dtype)
            attended = torch.einsum("nqk,nck->ncq", weights, v)
            x = (self.proj(attended.reshape(b, c, height, width)) + x) * self.skip_scale
        return x


class PositionalEmbedding(nn.Module):
    """[cos(x w_j), sin(x w_j)] with w_j = max_positions^(-j / (n/2 - endpoint)), j < n/2 (Vaswani et al.
    2017, as DDPM++ and ADM embed the noise label)."""

    def __init__(self, num_channels: int, max_positions: int = 10000, endpoint: bool = False):
        super().__init__()
        self.num_channels, self.max_positions, self.endpoint = num_channels, max_positions, endpoint

    def forward(self, x: Tensor) -> Tensor:
        half = self.num_channels // 2
        j = torch.arange(half, dtype=torch.float32, device=x.device) / (half - (1 if self.endpoint else 0))
        angle = torch.outer(x, ((1 / self.max_positions) ** j).to(x.dtype))
        return torch.cat([angle.cos(), angle.sin()], dim=1)


class FourierEmbedding(nn.Module):
    """[cos(2 pi f x), sin(2 pi f x)] with fixed random frequencies f ~ N(0, scale^2) (Tancik et al. 2020)."""

    def __init__(self, num_channels: int, scale: float = 16):
        super().__init__()
        self.register_buffer("freqs", torch.randn(num_channels // 2) * scale)

    def forward(self, x: Tensor) -> Tensor:
        angle = torch.outer(x, (2 * math.pi * self.freqs).to(x.dtype))
        return torch.cat([angle.cos(), angle.sin()], dim=1)


class SongUNet(nn.Module):
    """DDPM++ (``embedding_type="positional"``, ``encoder_type="standard"``, filter [1, 1]) and NCSN++
    (``"fourier"``, ``channel_mult_noise=2``, ``"residual"``, [1, 3, 3, 1]) with EDM's argument names; the
    defaults are EDM's CIFAR-10 DDPM++ (Table 7)."""

    def __init__(
        self,
        img_resolution,
        in_channels,
        out_channels,
        label_dim=0,
        augment_dim=0,
        model_channels=128,
        channel_mult=(1, 2, 2, 2),
        channel_mult_emb=4,
        num_blocks=4,
        attn_resolutions=(16,),
        dropout=0.10,
        label_dropout=0,
        embedding_type="positional",
        channel_mult_noise=1,
        encoder_type="standard",
        decoder_type="standard",
        resample_filter=(1, 1),
    ):
        super().__init__()
        _choose("embedding_type", embedding_type, ("positional", "fourier"))
        _choose("encoder_type", encoder_type, ("standard", "skip", "residual"))
        _choose("decoder_type", decoder_type, ("standard", "skip"))
        self.label_dropout = label_dropout
        emb_channels, noise_channels = model_channels * channel_mult_emb, model_channels * channel_mult_noise
        block = dict(
            emb_channels=emb_channels,
            num_heads=1,
            dropout=dropout,
            skip_scale=math.sqrt(0.5),
            eps=1e-6,
            resample_filter=resample_filter,
            resample_proj=True,
            adaptive_scale=False,
        )
        self.map_noise = (
            PositionalEmbedding(noise_channels, endpoint=True)
            if embedding_type == "positional"
            else FourierEmbedding(noise_channels)
        )
        self.map_label = nn.Linear(label_dim, noise_channels) if label_dim else None
        self.map_augment = nn.Linear(augment_dim, noise_channels, bias=False) if augment_dim else None
        self.map_layer0 = nn.Linear(noise_channels, emb_channels)
        self.map_layer1 = nn.Linear(emb_channels, emb_channels)

        self.enc = nn.ModuleDict()
        cout = caux = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                cout, cin = model_channels, cout
                self.enc[f"{res}x{res}_conv"] = Conv2d(cin, cout, 3)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **block)
                if encoder_type == "skip":
                    self.enc[f"{res}x{res}_aux_down"] = Conv2d(
                        caux, caux, 0, down=True, resample_filter=resample_filter
                    )
                    self.enc[f"{res}x{res}_aux_skip"] = Conv2d(caux, cout, 1)
                if encoder_type == "residual":
                    self.enc[f"{res}x{res}_aux_residual"] = Conv2d(
                        caux, cout, 3, down=True, resample_filter=resample_filter, fused_resample=True
                    )
                    caux = cout
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=res in attn_resolutions, **block)
        skips = [b.out_channels for name, b in self.enc.items() if "aux" not in name]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **block)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **block)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                attention = idx == num_blocks and res in attn_resolutions
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=attention, **block)
            if decoder_type == "skip" or level == 0:
                if decoder_type == "skip" and level < len(channel_mult) - 1:
                    self.dec[f"{res}x{res}_aux_up"] = Conv2d(
                        out_channels, out_channels, 0, up=True, resample_filter=resample_filter
                    )
                self.dec[f"{res}x{res}_aux_norm"] = _group_norm(cout, eps=1e-6)
                self.dec[f"{res}x{res}_aux_conv"] = Conv2d(cout, out_channels, 3)

    def forward(self, x: Tensor, noise_labels: Tensor, class_labels: Tensor | None, augment_labels=None) -> Tensor:
        emb = self.map_noise(noise_labels)
        emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(emb.shape)  # [sin, cos], the order it was trained in
        if self.map_label is not None:
            labels = _drop_labels(class_labels, self.label_dropout if self.training else 0.0)
            emb = emb + self.map_label(labels * math.sqrt(self.map_label.in_features))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))

        skips, aux = [], x
        for name, block in self.enc.items():
            if "aux_down" in name:
                aux = block(aux)
            elif "aux_skip" in name:
                x = skips[-1] = x + block(aux)
            elif "aux_residual" in name:
                x = skips[-1] = aux = (x + block(aux)) / math.sqrt(2)
            else:
                x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
                skips.append(x)

        out = tmp = None
        for name, block in self.dec.items():
            if "aux_up" in name:
                out = block(out)
            elif "aux_norm" in name:
                tmp = block(x)
            elif "aux_conv" in name:
                tmp = block(F.silu(tmp))
                out = tmp if out is None else tmp + out
            else:
                if "_block" in name:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = block(x, emb)
        return out


class DhariwalUNet(nn.Module):
    """ADM with EDM's argument names; defaults: EDM's ImageNet-64 network (Table 7)."""

    def __init__(
        self,
        img_resolution,
        in_channels,
        out_channels,
        label_dim=0,
        augment_dim=0,
        model_channels=192,
        channel_mult=(1, 2, 3, 4),
        channel_mult_emb=4,
        num_blocks=3,
        attn_resolutions=(32, 16, 8),
        dropout=0.10,
        label_dropout=0,
    ):
        super().__init__()
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        block = dict(emb_channels=emb_channels, channels_per_head=64, dropout=dropout)
        self.map_noise = PositionalEmbedding(model_channels)
        self.map_augment = nn.Linear(augment_dim, model_channels, bias=False) if augment_dim else None
        self.map_layer0 = nn.Linear(model_channels, emb_channels)
        self.map_layer1 = nn.Linear(emb_channels, emb_channels)
        self.map_label = nn.Linear(label_dim, emb_channels, bias=False) if label_dim else None

        self.enc = nn.ModuleDict()
        cout = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_conv"] = Conv2d(cin, cout, 3)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **block)
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=res in attn_resolutions, **block)
        skips = [b.out_channels for b in self.enc.values()]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **block)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **block)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=res in attn_resolutions, **block)
        self.out_norm = _group_norm(cout)
        self.out_conv = Conv2d(cout, out_channels, 3)

    def forward(self, x: Tensor, noise_labels: Tensor, class_labels: Tensor | None, augment_labels=None) -> Tensor:
        emb = self.map_noise(noise_labels)
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = self.map_layer1(F.silu(self.map_layer0(emb)))
        if self.map_label is not None:
            emb = emb + self.map_label(_drop_labels(class_labels, self.label_dropout if self.training else 0.0))
        emb = F.silu(emb)
        skips = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
            skips.append(x)
        for name, block in self.dec.items():
            if "_block" in name:
                x = torch.cat([x, skips.pop()], dim=1)
            x = block(x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))


def _drop_labels(labels: Tensor, rate: float) -> Tensor:
    """Each sample's one-hot label zeroed with probability ``rate`` (classifier-free guidance training)."""
    if not rate:
        return labels
    keep = torch.rand(labels.shape[0], 1, device=labels.device) >= rate
    return labels * keep.to(labels.dtype)


def _choose(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name} {value!r} is not one of {', '.join(valid)}")
