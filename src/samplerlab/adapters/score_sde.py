"""score_sde_pytorch checkpoints (Song et al. 2021, "Score-based generative modeling through stochastic
differential equations") in plain torch, without their code, ml_collections or TF / JAX.

A checkpoint is ``torch.save({'optimizer', 'model', 'ema', 'step'})``: ``model`` is the DataParallel state
dict (keys ``module.``-prefixed, with the ``sigmas`` buffer) and ``ema`` holds ``shadow_params``, a list of
the parameters that require gradients, in ``model.parameters()`` order (NCSN++'s fixed Fourier frequencies
are not among them). The architecture and SDE are in config files that the checkpoint does not carry, so
``SCORE_SDE_CONFIGS`` tabulates the published ones (``configs/{ve,vp,subvp}/*.py`` of the repository, every
config whose model is ``ncsnpp``: NCSN++ and DDPM++ on CIFAR-10, CelebA, CelebA-HQ, LSUN and FFHQ).

The network's output means (``models/utils.py``, ``get_score_fn``):

- VE: the score itself, at label sigma (continuous) or at the index round((1 - t)(N - 1)) of the geometric
  sigma table (discrete);
- VP and sub-VP: minus the noise, eps, at label 999 t (continuous, and sub-VP) or (N - 1) t (discrete VP),
  on the scaled state x_t = s(t) x.

``ScoreSDEDenoiser`` turns either into D(x; sigma) on samplerlab's unscaled variable: D = x + sigma^2 score
(VE) or D = x - sigma eps (VP / sub-VP: the score of x_t is -eps / (s sigma)). Models trained on [0, 1]
images (``centered = False``, all VE models) are wrapped so that they, too, take and return images in
[-1, 1] with sigma doubled: D'(x', sigma') = 2 D((x' + 1) / 2, sigma' / 2) - 1.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
from torch import Tensor

from ..io import CheckpointError
from ..nets.score_sde_ncsnpp import ScoreSDENCSNpp, ScoreSDENetConfig
from ..processes import VE, SubVP, VPLinear
from .published import PublishedModel
from .safe_load import safe_torch_load

__all__ = ["ScoreSDEConfig", "SCORE_SDE_CONFIGS", "ScoreSDEDenoiser", "read_score_sde_checkpoint", "load_score_sde"]

SDES = ("vesde", "vpsde", "subvpsde")


@dataclass(frozen=True)
class ScoreSDEConfig:
    """A score_sde config: the network (``config.model`` / ``config.data``) and the SDE it was trained on."""

    net: ScoreSDENetConfig
    sde: str = "vesde"
    continuous: bool = True
    beta_min: float = 0.1
    beta_max: float = 20.0
    dataset: str = ""

    def __post_init__(self):
        if self.sde not in SDES:
            raise ValueError(f"score_sde config: sde {self.sde!r} is not one of {', '.join(SDES)}")

    @classmethod
    def from_dict(cls, values: dict) -> "ScoreSDEConfig":
        """From a flat dict of score_sde's field names (``nf``, ``ch_mult``, ``sde``, ``centered``, ...)."""
        net_fields = {f.name for f in fields(ScoreSDENetConfig)}
        own = {f.name for f in fields(cls)} - {"net"}
        unknown = set(values) - net_fields - own - _IGNORED
        if unknown:
            raise ValueError(
                f"score_sde config: unknown field(s) {', '.join(sorted(unknown))}; valid: "
                f"{', '.join(sorted(net_fields | own))}"
            )
        _check_fixed(values)
        net = ScoreSDENetConfig(**{k: _tuple(v) for k, v in values.items() if k in net_fields})
        return cls(net=net, **{k: v for k, v in values.items() if k in own})

    def to_dict(self) -> dict:
        return {**asdict(self.net), **{k: v for k, v in asdict(self).items() if k != "net"}}


# settings every published ncsnpp config shares; a config that differs describes a network this module lacks
_FIXED = dict(
    resblock_type="biggan",
    skip_rescale=True,
    attention_type="ddpm",
    progressive_combine="sum",
    conditional=True,
    nonlinearity="swish",
    normalization="GroupNorm",
    name="ncsnpp",
)
_IGNORED = set(_FIXED) | {"init_scale", "resamp_with_conv", "conv_size", "ema_rate"}


def _check_fixed(values: dict) -> None:
    for key, expected in _FIXED.items():
        if key in values and str(values[key]).lower() != str(expected).lower():
            raise ValueError(f"score_sde config: {key}={values[key]!r} is not supported (only {expected!r})")


def _tuple(v):
    return tuple(v) if isinstance(v, list) else v


def _published() -> dict[str, ScoreSDEConfig]:
    """The repository's ncsnpp configs (configs/{ve,vp,subvp}/NAME.py), field by field."""
    cifar = dict(image_size=32, nf=128, ch_mult=(1, 2, 2, 2), attn_resolutions=(16,), dropout=0.1, sigma_max=50.0)
    ncsnpp = dict(fir=True, progressive="none", progressive_input="residual")
    ddpmpp = dict(
        fir=False,
        progressive="none",
        progressive_input="none",
        embedding_type="positional",
        scale_by_sigma=False,
        centered=True,
    )
    vp_ncsnpp = dict(ncsnpp, embedding_type="positional", scale_by_sigma=False, centered=True)
    big = dict(
        nf=128,
        ch_mult=(1, 1, 2, 2, 2, 2, 2),
        num_res_blocks=2,
        attn_resolutions=(16,),
        dropout=0.0,
        fir=True,
        progressive="output_skip",
        progressive_input="input_skip",
        num_scales=2000,
    )
    huge = dict(big, nf=16, ch_mult=(1, 2, 4, 8, 16, 32, 32, 32), num_res_blocks=1, image_size=1024, sigma_max=1348.0)
    table = {
        "ve/cifar10_ncsnpp": (dict(cifar, **ncsnpp, num_res_blocks=4, embedding_type="positional"), "vesde", False),
        "ve/cifar10_ncsnpp_continuous": (dict(cifar, **ncsnpp, num_res_blocks=4), "vesde", True),
        "ve/cifar10_ncsnpp_deep_continuous": (dict(cifar, **ncsnpp, num_res_blocks=8), "vesde", True),
        "ve/celeba_ncsnpp": (
            dict(cifar, **ncsnpp, num_res_blocks=4, image_size=64, sigma_max=90.0, embedding_type="positional"),
            "vesde",
            False,
        ),
        "ve/celebahq_256_ncsnpp_continuous": (dict(big, image_size=256, sigma_max=348.0), "vesde", True),
        "ve/ffhq_256_ncsnpp_continuous": (dict(big, image_size=256, sigma_max=348.0), "vesde", True),
        "ve/bedroom_ncsnpp_continuous": (dict(big, image_size=256, sigma_max=378.0), "vesde", True),
        "ve/church_ncsnpp_continuous": (dict(big, image_size=256, sigma_max=380.0), "vesde", True),
        "ve/celebahq_ncsnpp_continuous": (huge, "vesde", True),
        "ve/ffhq_ncsnpp_continuous": (huge, "vesde", True),
        "vp/cifar10_ddpmpp": (dict(cifar, **ddpmpp, num_res_blocks=4), "vpsde", False),
        "vp/cifar10_ddpmpp_continuous": (dict(cifar, **ddpmpp, num_res_blocks=4), "vpsde", True),
        "vp/cifar10_ddpmpp_deep_continuous": (dict(cifar, **ddpmpp, num_res_blocks=8), "vpsde", True),
        "vp/cifar10_ncsnpp": (dict(cifar, **vp_ncsnpp, num_res_blocks=4), "vpsde", False),
        "vp/cifar10_ncsnpp_continuous": (dict(cifar, **vp_ncsnpp, num_res_blocks=4), "vpsde", True),
        "vp/cifar10_ncsnpp_deep_continuous": (dict(cifar, **vp_ncsnpp, num_res_blocks=8), "vpsde", True),
        "subvp/cifar10_ddpmpp_continuous": (dict(cifar, **ddpmpp, num_res_blocks=4), "subvpsde", True),
        "subvp/cifar10_ddpmpp_deep_continuous": (dict(cifar, **ddpmpp, num_res_blocks=8), "subvpsde", True),
        "subvp/cifar10_ncsnpp_continuous": (dict(cifar, **vp_ncsnpp, num_res_blocks=4), "subvpsde", True),
        "subvp/cifar10_ncsnpp_deep_continuous": (dict(cifar, **vp_ncsnpp, num_res_blocks=8), "subvpsde", True),
    }
    return {
        name: ScoreSDEConfig(ScoreSDENetConfig(**net), sde=sde, continuous=continuous, dataset=name.split("/")[1])
        for name, (net, sde, continuous) in table.items()
    }


SCORE_SDE_CONFIGS: dict[str, ScoreSDEConfig] = _published()


def resolve_config(config) -> ScoreSDEConfig:
    """A ``ScoreSDEConfig`` from itself, a published name (``ve/cifar10_ncsnpp_continuous``, with or without
    ``configs/`` and ``.py``), a dict of fields or a JSON file of them (score_sde's field names)."""
    if isinstance(config, ScoreSDEConfig):
        return config
    if isinstance(config, dict):
        return ScoreSDEConfig.from_dict(config)
    if isinstance(config, (str, Path)) and str(config).endswith(".json"):
        try:
            values = json.loads(Path(config).read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"score_sde config file {config}: {err}") from None
        if not isinstance(values, dict):
            raise ValueError(f"score_sde config file {config}: a JSON object of config fields, not {values!r:.60}")
        return ScoreSDEConfig.from_dict(values)
    if isinstance(config, str):
        name = config.removeprefix("configs/").removesuffix(".py")
        if name in SCORE_SDE_CONFIGS:
            return SCORE_SDE_CONFIGS[name]
        raise ValueError(f"unknown score_sde config {config!r}; valid: {', '.join(SCORE_SDE_CONFIGS)}")
    raise TypeError(f"a score_sde config is a name, a dict or a ScoreSDEConfig, not {type(config).__name__}")


@dataclass
class ScoreSDECheckpoint:
    path: Path
    model: dict[str, Tensor]  # without the DataParallel prefix
    shadow_params: list[Tensor] | None
    step: int | None = None
    extra: dict = field(default_factory=dict)


def read_score_sde_checkpoint(path: str | Path) -> ScoreSDECheckpoint:
    """The tensors of a score_sde checkpoint, read weights-only (``safe_torch_load``: nothing executed)."""
    path = Path(path)
    data = safe_torch_load(path, {})
    if not isinstance(data, dict) or "model" not in data or not isinstance(data["model"], dict):
        keys = ", ".join(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: not a score_sde checkpoint (expected 'model', 'ema', 'step'; found {keys})")
    model = {k.removeprefix("module."): v for k, v in data["model"].items()}
    ema = data.get("ema")
    shadow = list(ema["shadow_params"]) if isinstance(ema, dict) and "shadow_params" in ema else None
    step = data.get("step")
    return ScoreSDECheckpoint(path, model, shadow, int(step) if step is not None else None)


def _ema_state(net: ScoreSDENCSNpp, ck: ScoreSDECheckpoint) -> dict[str, Tensor]:
    """The model state dict with the EMA's shadow parameters put in place of the trainable parameters
    (``model.parameters()`` order, those with requires_grad)."""
    trainable = [name for name, p in net.named_parameters() if p.requires_grad]
    if len(ck.shadow_params) != len(trainable):
        raise CheckpointError(
            f"{ck.path}: the EMA holds {len(ck.shadow_params)} tensors, the configured network has "
            f"{len(trainable)} trainable parameters: the config does not describe this checkpoint"
        )
    state = dict(ck.model)
    state.update(zip(trainable, ck.shadow_params))  # shapes are checked by the strict load that follows
    return state


class ScoreSDEDenoiser(torch.nn.Module):
    """D(x; sigma) of a score_sde network on its own data range (see the module docstring)."""

    def __init__(self, net: ScoreSDENCSNpp, config: ScoreSDEConfig):
        super().__init__()
        self.net, self.config = net, config
        cfg = config.net
        if config.sde == "vesde":
            self.process = VE(sigma_lo=cfg.sigma_min, sigma_hi=cfg.sigma_max)
        elif config.sde == "vpsde":
            self.process = VPLinear(beta_min=config.beta_min, beta_max=config.beta_max, t_min=1e-5)
        else:
            self.process = SubVP(beta_min=config.beta_min, beta_max=config.beta_max, t_min=1e-5)

    @property
    def sigma_range(self) -> tuple[float, float]:
        """The trained range: VE sigma_min..sigma_max; VP / sub-VP sigma(1e-5)..sigma(1) (training's eps)."""
        if self.config.sde == "vesde":
            return self.config.net.sigma_min, self.config.net.sigma_max
        return float(self.process.sigma(torch.tensor(1e-5))), float(self.process.sigma(torch.tensor(1.0)))

    def forward(self, x: Tensor, sigma, **_) -> Tensor:
        dtype = x.dtype
        x = x.float()
        sigma = torch.as_tensor(sigma, device=x.device).float().reshape(-1).expand(x.shape[0])
        n = self.config.net.num_scales
        if self.config.sde == "vesde":
            if self.config.continuous:
                label = sigma
            else:
                t = self.process.t_of_sigma(sigma)
                label = torch.round((1 - t) * (n - 1)).long().clamp(0, n - 1)
            score = self.net(x, label)
            return (x + sigma.reshape(-1, 1, 1, 1) ** 2 * score).to(dtype)
        t = self.process.t_of_sigma(sigma.double()).float()
        s = self.process.s(t.double()).float().reshape(-1, 1, 1, 1)
        label = t * (999 if self.config.continuous or self.config.sde == "subvpsde" else n - 1)
        eps = self.net(s * x, label)
        return (x - sigma.reshape(-1, 1, 1, 1) * eps).to(dtype)


class UnitRangeToSigned(torch.nn.Module):
    """A denoiser of images in [0, 1] as one of images in [-1, 1]: D'(x, sigma) = 2 D((x + 1)/2, sigma/2) - 1."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor, sigma, **cond) -> Tensor:
        sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
        return 2 * self.inner((x + 1) / 2, sigma / 2, **cond) - 1


def load_score_sde(path: str | Path, *, config, ema: bool = True, device="cpu") -> PublishedModel:
    """A score_sde checkpoint as a ``PublishedModel`` on images in [-1, 1]: the network of ``config`` (a
    name in ``SCORE_SDE_CONFIGS``, a dict of fields or a ``ScoreSDEConfig``) with the EMA weights (``ema``;
    the raw trained ones with ``ema=False``), loaded strictly."""
    path = Path(path)
    cfg = resolve_config(config)
    ck = read_score_sde_checkpoint(path)
    net = ScoreSDENCSNpp(replace(cfg.net, dropout=0.0))
    if ema:
        if ck.shadow_params is None:
            raise CheckpointError(f"{path}: no EMA weights in this checkpoint; load the trained ones with ema=False")
        state = _ema_state(net, ck)
    else:
        state = ck.model
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:400]
        raise CheckpointError(f"{path}: its tensors do not fit the configured network ({detail})") from None
    denoiser = ScoreSDEDenoiser(net, cfg).to(device).eval().requires_grad_(False)
    lo, hi = denoiser.sigma_range
    wrapped = denoiser
    if not cfg.net.centered:
        wrapped, lo, hi = UnitRangeToSigned(denoiser), 2 * lo, 2 * hi
    size = cfg.net.image_size
    return PublishedModel(
        denoiser=wrapped,
        module=denoiser,
        shape=(cfg.net.num_channels, size, size),
        num_classes=0,
        sigma_min=lo,
        sigma_max=hi,
        source=f"score_sde {cfg.sde} {'continuous' if cfg.continuous else 'discrete'} from {path.name}",
        details={
            "sde": cfg.sde,
            "step": ck.step,
            "ema": ema,
            "data_range": "[-1, 1]" if cfg.net.centered else "[0, 1]",
        },
    )
