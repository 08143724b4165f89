"""SGMSE+ checkpoints (Richter et al. 2023, "Speech enhancement and dereverberation with diffusion-based
generative models"; Welker et al. 2022) read safely, in plain torch, without their training stack.

What a published checkpoint is (read from the format, verified by the tests on files written the same way):
a Lightning ``.ckpt`` written by ``torch.save``, a dict with

- ``state_dict``: the ScoreModel's tensors; the score network's under ``dnn.`` (others, e.g. ``pesq_loss.``
  of a PESQ-loss training run, are not the model's and are dropped);
- ``ema``: the ``torch_ema`` state, ``shadow_params`` an *unnamed* list in the order of the network's
  parameters (buffers are not in it; non-trainable parameters such as the Fourier-feature weight are);
- ``hyper_parameters``: the model's constructor arguments (backbone and SDE names and their settings), with a
  reference to the data-module *class* (``sgmse.data_module.SpecsDataModule``) and, in older files, inside a
  Lightning ``AttributeDict`` -- which is why ``torch.load(weights_only=True)`` refuses such a file as it is.

``read_sgmse_checkpoint`` loads it through ``safe_load.safe_torch_load`` with stand-ins for exactly those
classes (a class reference becomes its name, an ``AttributeDict`` a dict); any other global is refused with
an error naming the file and the global, and nothing is executed. The EMA list is given names by walking the
``dnn.`` tensors in order and matching shapes (a buffer is skipped where a parameter's shape does not fit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..io import CheckpointError
from ..processes import OUVE
from .safe_load import ClassReference, class_reference, safe_torch_load

__all__ = [
    "SGMSE_STAND_INS",
    "SGMSECheckpoint",
    "read_sgmse_checkpoint",
    "build_sgmse_network",
    "sgmse_process",
    "SGMSEScore",
    "SGMSEScoreDenoiser",
]

# the classes an SGMSE+ checkpoint names, and what samplerlab reads in their place
SGMSE_STAND_INS: dict[str, object] = {
    "pytorch_lightning.utilities.parsing.AttributeDict": dict,
    "lightning.fabric.utilities.data.AttributeDict": dict,
    "lightning_fabric.utilities.data.AttributeDict": dict,
    "sgmse.data_module.SpecsDataModule": class_reference("sgmse.data_module.SpecsDataModule"),
}

NETWORK_PREFIX = "dnn."


@dataclass
class SGMSECheckpoint:
    """The parts of an SGMSE+ checkpoint a sampler needs, as plain data."""

    path: Path
    hyperparameters: dict  # class references replaced by their qualified names
    weights: dict[str, Tensor]  # the network's tensors as trained (``dnn.`` stripped)
    ema: dict[str, Tensor] | None  # the EMA of the network's parameters by name (None: the file has none)
    extra: dict = field(default_factory=dict)  # epoch, global_step, Lightning version

    @property
    def backbone(self) -> str:
        return str(self.hyperparameters.get("backbone", ""))

    @property
    def sde(self) -> str:
        return str(self.hyperparameters.get("sde", ""))

    def network_weights(self, use_ema: bool = True) -> dict[str, Tensor]:
        """The network's state dict: the EMA parameters over the trained ones (buffers from the trained)."""
        if not use_ema or self.ema is None:
            return dict(self.weights)
        return {**self.weights, **self.ema}


def read_sgmse_checkpoint(path: str | Path) -> SGMSECheckpoint:
    """Read an SGMSE+ ``.ckpt`` without executing anything (module docstring); every problem is a
    ``CheckpointError`` naming the file."""
    path = Path(path)
    raw = safe_torch_load(path, SGMSE_STAND_INS)
    if not isinstance(raw, dict) or not isinstance(raw.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not an SGMSE+ (Lightning) checkpoint: no 'state_dict'")
    hyper = raw.get("hyper_parameters")
    if not isinstance(hyper, dict) or "backbone" not in hyper:
        raise CheckpointError(f"{path}: no 'hyper_parameters' with the backbone's name: not an SGMSE+ checkpoint")
    weights = {
        k[len(NETWORK_PREFIX) :]: v
        for k, v in raw["state_dict"].items()
        if isinstance(k, str) and k.startswith(NETWORK_PREFIX) and isinstance(v, Tensor)
    }
    if not weights:
        raise CheckpointError(f"{path}: its state_dict holds no '{NETWORK_PREFIX}' tensors (the score network)")
    extra = {k: raw[k] for k in ("epoch", "global_step", "pytorch-lightning_version") if k in raw}
    return SGMSECheckpoint(path, _plain(hyper), weights, _named_ema(path, raw.get("ema"), weights), extra)


def _plain(value):
    """Hyperparameters as plain data: class references by name, containers recursively."""
    if isinstance(value, type) and issubclass(value, ClassReference):
        return value.qualified_name
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _named_ema(path: Path, ema, weights: dict[str, Tensor]) -> dict[str, Tensor] | None:
    if ema is None:
        return None
    shadow = ema.get("shadow_params") if isinstance(ema, dict) else None
    if not isinstance(shadow, (list, tuple)) or not all(isinstance(t, Tensor) for t in shadow):
        raise CheckpointError(f"{path}: its 'ema' has no list of tensors 'shadow_params'")
    named, k = {}, 0
    for name, tensor in weights.items():  # state-dict order: each module's parameters, then its buffers
        if k < len(shadow) and shadow[k].shape == tensor.shape and tensor.is_floating_point():
            named[name] = shadow[k].to(tensor.dtype)
            k += 1
    if k != len(shadow):
        raise CheckpointError(
            f"{path}: {len(shadow)} EMA parameters, but only {k} of the network's tensors match them in order "
            "and shape: the EMA belongs to another network"
        )
    return named


# the backbones of SGMSE+ that samplerlab builds, and their constructor settings a checkpoint may carry
_NCSNPP_SETTINGS = (
    "nf",
    "ch_mult",
    "num_res_blocks",
    "attn_resolutions",
    "image_size",
    "fir_kernel",
    "fourier_scale",
    "dropout",
    "centered",
    "scale_by_sigma",
)


def build_sgmse_network(checkpoint: SGMSECheckpoint, use_ema: bool = True):
    """The checkpoint's score network, built here (``nets.ncsnpp``) from its hyperparameters and loaded
    strictly (EMA weights by default); a backbone samplerlab does not build, or weights that do not fit the
    architecture the hyperparameters describe, is a ``CheckpointError`` naming the file."""
    from ..nets.ncsnpp import NCSNpp, NCSNppConfig, NCSNppV2

    backbones = {"ncsnpp": NCSNpp, "ncsnpp_48k": NCSNpp, "ncsnpp_v2": NCSNppV2}
    if checkpoint.backbone not in backbones:
        raise CheckpointError(
            f"{checkpoint.path}: backbone {checkpoint.backbone!r} is not built by samplerlab; valid: "
            f"{', '.join(backbones)}"
        )
    hp = checkpoint.hyperparameters
    settings = {k: (tuple(hp[k]) if isinstance(hp[k], list) else hp[k]) for k in _NCSNPP_SETTINGS if k in hp}
    if checkpoint.backbone == "ncsnpp" and "centered" not in hp:
        # SGMSE+'s NCSN++ had centered=False until 1 Nov 2022 (then the default became True and was saved with
        # the hyperparameters): a checkpoint without the key is an older one, trained with the input mapped 2x - 1
        settings["centered"] = False
    fourier = checkpoint.weights.get("all_modules.0.W")
    if "nf" not in settings and fourier is not None and fourier.ndim == 1:
        settings["nf"] = int(fourier.shape[0])  # the width, where the file does not say it: the embedding's size
    try:
        net = backbones[checkpoint.backbone](NCSNppConfig.for_backbone(checkpoint.backbone, **settings))
        net.load_state_dict(checkpoint.network_weights(use_ema), strict=True)
    except (RuntimeError, ValueError, TypeError) as err:
        raise CheckpointError(
            f"{checkpoint.path}: its weights do not fit the NCSN++ its hyperparameters describe ({settings}): "
            f"{str(err).splitlines()[0][:300]}"
        ) from None
    return net.eval()


# --- the network behind samplerlab's denoiser contract -------------------------------------------------------

SQRT2 = math.sqrt(2.0)


def sgmse_process(hyperparameters: dict) -> OUVE:
    """samplerlab's OUVE process for an SGMSE+ model: the checkpoint's theta, t_eps and sigma range, the
    latter divided by sqrt(2).

    The sqrt(2): SGMSE+ perturbs the complex spectrogram with ``randn_like`` of a complex tensor, whose real
    and imaginary parts have variance 1/2 each, so its std(t) is the standard deviation of the *complex*
    noise; samplerlab's noise is per real channel (Re and Im are two channels of unit variance). The same
    training distribution is therefore samplerlab's OUVE with sigma_min / sqrt(2) and sigma_max / sqrt(2)
    (the variance is proportional to sigma_min^2 at a fixed sigma_max / sigma_min); then samplerlab's time t
    is SGMSE+'s t, which the network is conditioned on."""
    hp = hyperparameters
    return OUVE(
        theta=float(hp.get("theta", 1.5)),
        sigma_lo=float(hp.get("sigma_min", 0.05)) / SQRT2,
        sigma_hi=float(hp.get("sigma_max", 0.5)) / SQRT2,
        t_min=float(hp.get("t_eps", 0.03)),
        t_max=1.0,
    )


def _channels_to_complex(x: Tensor) -> Tensor:
    """(B, 2, F, T) real [Re, Im] -> (B, 1, F, T) complex."""
    return torch.complex(x[:, :1], x[:, 1:2])


class SGMSEScore:
    """SGMSE+'s score S(x, y, t) of a checkpoint's network on complex (B, 1, F, T) spectrograms, as its
    ScoreModel computes it (Richter et al. 2023; Richter, de Oliveira & Gerkmann 2024 for ``ncsnpp_v2``):

    - ncsnpp, ncsnpp_48k: S = -net([x, y], t);
    - ncsnpp_v2: F = net(c_in x, c_in y, t), optionally divided by std(t) or t (``network_scaling``), then
      S = c_skip x + c_out F (loss "score_matching") or S = (F - x) / std^2 (loss "denoiser"), with
      c_in in {1, 1 / sqrt(std^2 + sigma_data^2)}, c_out in {1, std, 1 / std, std sigma_data / sqrt(...)},
      c_skip in {0, sigma_data^2 / (std^2 + sigma_data^2)} (EDM's, Karras et al. 2022 Table 1, on SGMSE+'s
      std(t) of the complex noise)."""

    def __init__(self, net, hyperparameters: dict):
        hp = hyperparameters
        self.net = net
        self.v2 = net.__class__.__name__ == "NCSNppV2"
        self.theta, self.sigma_min = float(hp.get("theta", 1.5)), float(hp.get("sigma_min", 0.05))
        self.sigma_max = float(hp.get("sigma_max", 0.5))
        self.c_in, self.c_out, self.c_skip = (
            str(hp.get(k, d)) for k, d in (("c_in", "1"), ("c_out", "1"), ("c_skip", "0"))
        )
        self.sigma_data = float(hp.get("sigma_data", 0.1))
        self.network_scaling = hp.get("network_scaling")
        self.loss_type = str(hp.get("loss_type", "score_matching"))
        choices = {
            "c_in": ("1", "edm"),
            "c_out": ("1", "sigma", "1/sigma", "edm"),
            "c_skip": ("0", "edm"),
            "loss_type": ("score_matching", "denoiser"),
            "network_scaling": (None, "1/sigma", "1/t"),
        }
        for key, valid in choices.items():
            if self.v2 and getattr(self, key) not in valid:
                raise ValueError(f"SGMSE+ {key} = {getattr(self, key)!r} is not one samplerlab runs; valid: {valid}")

    def __call__(self, x: Tensor, y: Tensor, t: Tensor) -> Tensor:
        if not self.v2:
            return -self.net(torch.cat([x, y], dim=1), t)
        std = sgmse_std(t, self.theta, self.sigma_min, self.sigma_max)[:, None, None, None]
        sd = self.sigma_data
        c_in = 1.0 if self.c_in == "1" else 1.0 / torch.sqrt(std**2 + sd**2)
        f = self.net(c_in * x, c_in * y, t)
        if self.network_scaling == "1/sigma":
            f = f / std
        elif self.network_scaling == "1/t":
            f = f / t[:, None, None, None]
        if self.loss_type == "denoiser":
            return (f - x) / std**2
        c_out = {"1": 1.0, "sigma": std, "1/sigma": 1.0 / std, "edm": std * sd / torch.sqrt(sd**2 + std**2)}[self.c_out]
        c_skip = 0.0 if self.c_skip == "0" else sd**2 / (std**2 + sd**2)
        return c_skip * x + c_out * f


class SGMSEScoreDenoiser:
    """D(u_hat, sigma; y) of an SGMSE+ score model (``SGMSEScore``) on samplerlab's OUVE residual
    u = x - y in real channels [Re, Im] (``sgmse_process``).

    With t = t(sigma), s = e^{-theta t} and x = y + s u_hat, S = score(x, y, t) is SGMSE+'s score, trained
    on the complex noise: S ~ -z / std with x = mean + std z, so mean_hat = x + std^2 S (Tweedie in its
    convention), i.e. S is *half* the gradient of log p with respect to the real and imaginary parts (each
    has variance std^2 / 2). In samplerlab's variables std^2 = 2 s^2 sigma^2, and D = E[u_0 | u_hat] =
    (mean_hat - y) / s:

        D(u_hat, sigma; y) = u_hat + 2 s sigma^2 S.
    """

    def __init__(self, score, process: OUVE):
        self.score, self.process = score, process

    @property
    def net(self):
        return getattr(self.score, "net", self.score)

    @property
    def dtype(self):
        return next(self.net.parameters()).dtype

    def __call__(self, u_hat: Tensor, sigma, *, y: Tensor) -> Tensor:
        b = u_hat.shape[0]
        sigma = torch.as_tensor(sigma, dtype=u_hat.dtype, device=u_hat.device).reshape(-1).expand(b)
        t = self.process.t_of_sigma(sigma)
        s = self.process.s(t).reshape(b, 1, 1, 1)
        x = y + s * u_hat
        score = self.score(_channels_to_complex(x), _channels_to_complex(y), t)
        score = torch.cat([score.real, score.imag], dim=1).to(u_hat.dtype)
        return u_hat + 2 * s * sigma.reshape(b, 1, 1, 1) ** 2 * score


# --- SGMSE+'s own sampler, step for step ---------------------------------------------------------------------


def sgmse_std(t: Tensor, theta: float, sigma_min: float, sigma_max: float) -> Tensor:
    """SGMSE+'s marginal std of the complex noise at time t (Richter et al. 2023, eq. 8)."""
    logsig = math.log(sigma_max / sigma_min)
    return torch.sqrt(
        sigma_min**2 * torch.exp(-2 * theta * t) * torch.expm1(2 * (theta + logsig) * t) * logsig / (theta + logsig)
    )


def sgmse_literal_pc(
    score,
    y: Tensor,
    *,
    theta: float = 1.5,
    sigma_min: float = 0.05,
    sigma_max: float = 0.5,
    num_steps: int = 30,
    t_eps: float = 0.03,
    snr: float = 0.5,
    corrector_steps: int = 1,
    randn=None,
) -> tuple[Tensor, int]:
    """SGMSE+'s default sampler in its own variables (the "upstream-literal" mode): on the complex
    spectrogram x with the noisy y, from x_T = y + std(1) z, for each t of linspace(1, t_eps, N): first the
    annealed Langevin corrector (step 2 (snr std(t))^2 on the score, noise sqrt(2 step)), then the
    reverse-diffusion predictor (Euler-Maruyama of the reverse SDE, dx = [theta (y - x) - g^2 S] dt + g dw,
    with the last step from t_eps over t_eps); returns the last predictor's *mean* (its step without the
    noise) and the model calls, N (corrector_steps + 1).

    ``score(x, y, t)`` is SGMSE+'s score (the network's sign included); ``randn(like)`` draws complex noise
    like SGMSE+'s ``torch.randn_like`` (real and imaginary parts of variance 1/2; default: torch's own).
    Written from the paper's Algorithm and the published defaults (N = 30, snr 0.5, t_eps 0.03)."""
    randn = randn or torch.randn_like
    logsig = math.log(sigma_max / sigma_min)
    b = y.shape[0]

    def std(t):
        return sgmse_std(t, theta, sigma_min, sigma_max)

    x = y + randn(y) * std(torch.ones(b, dtype=y.real.dtype, device=y.device))[:, None, None, None]
    times = torch.linspace(1.0, t_eps, num_steps, dtype=y.real.dtype, device=y.device)
    x_mean = x
    for i in range(num_steps):
        t = times[i]
        dt = t - times[i + 1] if i + 1 < num_steps else times[-1]
        vec_t = torch.full((b,), float(t), dtype=y.real.dtype, device=y.device)
        for _ in range(corrector_steps):  # annealed Langevin dynamics (Song & Ermon 2019)
            step = 2 * (snr * std(vec_t)) ** 2
            x_mean = x + step[:, None, None, None] * score(x, y, vec_t)
            x = x_mean + randn(x) * torch.sqrt(2 * step)[:, None, None, None]
        g = sigma_min * (sigma_max / sigma_min) ** vec_t * math.sqrt(2 * logsig)  # the forward SDE's diffusion
        forward_drift = theta * (y - x)
        reverse = forward_drift * dt - (g**2 * dt)[:, None, None, None] * score(x, y, vec_t)
        x_mean = x - reverse
        x = x_mean + (g * torch.sqrt(dt))[:, None, None, None] * randn(x)
    return x_mean, num_steps * (corrector_steps + 1)
