"""A trainable score network for speech enhancement and its training examples.

The network is samplerlab's U-Net (``nets.unet``, DDPM++ / NCSN++-like blocks) on the [Re, Im] channels of
the noisy state and of y (4 channels in, 2 out), as in SGMSE+ (Richter et al. 2023, Sec. IV-B), here
behind EDM preconditioning so it is a denoiser of the OUVE residual u = x - y like the Gaussian-prior
model. Training (``training.edm.train`` with ``sigma_distribution = "ouve"``) draws t ~ U(t_eps, 1),
i.e. SGMSE+'s denoising score matching with the EDM loss weight, on random crops of the training pairs.

The network registers as ``speech-unet`` in ``nets.NETS`` (through the ``samplerlab.nets`` entry point, so
training and checkpoint loading find it without importing this package).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..nets import NETS
from ..nets.unet import UNet, UNetConfig
from .frontend import SpecConfig, normalise_pair, wav_to_spec
from .gaussian import complex_to_channels

__all__ = ["SpeechScoreNet", "SpeechCropSource", "build_speech_unet", "speech_train_config"]


class SpeechScoreNet(nn.Module):
    """F(x_in, c_noise; y): a U-Net on cat([x_in, y]) over (frequency, frame)."""

    def __init__(self, freq_bins: int, config: UNetConfig | None = None):
        super().__init__()
        self.unet = UNet(4, freq_bins, config, out_channels=2)
        self.down_factor = 2 ** (len(self.unet.config.channel_mult) - 1)

    def forward(self, x: Tensor, c_noise: Tensor, y: Tensor | None = None) -> Tensor:
        if y is None:
            raise ValueError("the speech score network is conditioned on the noisy spectrogram: pass y=...")
        return self.unet(torch.cat([x, y.to(x.dtype)], dim=1), c_noise)


@NETS.register("speech-unet")
def build_speech_unet(shape: tuple, num_classes: int, config) -> SpeechScoreNet:
    """The y-conditioned U-Net for examples of shape (2, frequency bins, frames)."""
    return SpeechScoreNet(shape[1], config.unet_config())


def speech_train_config(
    source: "SpeechCropSource",
    *,
    steps: int = 8000,
    batch_size: int = 8,
    lr: float = 5e-4,
    seed: int = 0,
    checkpoint_every: int = 500,
    **unet,
):
    """``samplerlab speech train``'s recipe: SGMSE+'s noise levels (t ~ U(t_eps, 1) of OUVE), EMA 0.999, no
    dropout, sigma_data = the std of the training residuals; ``unet``: the U-Net's TrainConfig fields."""
    from ..training import TrainConfig

    return TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup=400,  # fixed: runs can be extended
        ema_decay=0.999,
        sigma_data=round(source.residual_std(), 4),
        label_dropout=0.0,
        sigma_distribution="ouve",
        net="speech-unet",
        dropout=0.0,
        seed=seed,
        checkpoint_every=checkpoint_every,
        log_every=min(100, steps),
        **unet,
    )


class SpeechCropSource:
    """Random ``crop_frames``-frame crops of the training pairs' compressed spectrograms (each pair peak-
    normalised by its noisy recording): the example is u_0 = x - y, the conditioning y."""

    def __init__(self, pairs, crop_frames: int = 128, spec: SpecConfig = SpecConfig(), progress: bool = False):
        from .data import load_pair

        self.crop = crop_frames
        self.examples: list[tuple[Tensor, Tensor]] = []
        it = pairs
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(pairs, desc="spectrograms", unit="file")
        for pair in it:
            clean, noisy = load_pair(pair, spec.sample_rate)
            clean, noisy, _ = normalise_pair(clean, noisy)
            x, y = complex_to_channels(wav_to_spec(clean, spec)), complex_to_channels(wav_to_spec(noisy, spec))
            self.examples.append(((x - y).float(), y.float()))
        if not self.examples:
            raise ValueError("no training pairs")
        self.shape = (2, self.examples[0][0].shape[-2], crop_frames)
        self.num_classes = 0

    def residual_std(self) -> float:
        """std of u_0 over the training set (EDM's sigma_data)."""
        total = sum(float(u.pow(2).sum()) for u, _ in self.examples)
        count = sum(u.numel() for u, _ in self.examples)
        return (total / count) ** 0.5

    def draw(self, batch_size: int, g: torch.Generator) -> tuple[Tensor, dict]:
        us, ys = [], []
        for _ in range(batch_size):
            u, y = self.examples[int(torch.randint(len(self.examples), (1,), generator=g))]
            frames = u.shape[-1]
            start = int(torch.randint(max(1, frames - self.crop + 1), (1,), generator=g))
            u, y = u[..., start : start + self.crop], y[..., start : start + self.crop]
            if u.shape[-1] < self.crop:  # short files: zero-pad (silence) to the crop length
                pad = self.crop - u.shape[-1]
                u, y = nn.functional.pad(u, (0, pad)), nn.functional.pad(y, (0, pad))
            us.append(u)
            ys.append(y)
        return torch.stack(us), {"y": torch.stack(ys)}
