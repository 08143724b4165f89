"""Developer script: reference outputs of the upstream EDM and score_sde networks, as numbers only.

Run against checkouts of the upstream repositories (never at test time, never shipped):

    python tools/export_upstream_fixtures.py --edm PATH/TO/edm --score-sde PATH/TO/score_sde_pytorch

(needs torch and, for score_sde's configs, ``pip install ml_collections``). For each tiny configuration it
builds the upstream module, perturbs every parameter (fresh networks are zero-initialised in places, which
would hide wiring mistakes), evaluates it on fixed inputs in float32 and writes
``tests/fixtures/upstream/NAME.safetensors`` with the state dict, the inputs and the outputs, and the
constructor arguments as JSON metadata. No upstream code is written anywhere; ``tests/test_published_models.py``
loads these files with samplerlab's own networks and compares to 1e-5.

score_sde's ``op`` package compiles CUDA extensions on import; this script installs in its place a module
holding only upstream's own pure-torch ``upfirdn2d`` / ``upfirdn2d_native``, read out of its source file.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "upstream"

EDM_CASES = {
    # name: (preconditioner, its kwargs, network kwargs)
    "edm_vp_ddpmpp": (
        "VPPrecond",
        dict(label_dim=0),
        dict(
            model_type="SongUNet",
            augment_dim=9,
            model_channels=16,
            channel_mult=[1, 2],
            num_blocks=1,
            attn_resolutions=[8],
            dropout=0.0,
            embedding_type="positional",
            encoder_type="standard",
            decoder_type="standard",
            channel_mult_noise=1,
            resample_filter=[1, 1],
        ),
    ),
    "edm_ve_ncsnpp": (
        "VEPrecond",
        dict(label_dim=10),
        dict(
            model_type="SongUNet",
            augment_dim=9,
            model_channels=16,
            channel_mult=[1, 2, 2],
            num_blocks=1,
            attn_resolutions=[8],
            dropout=0.0,
            embedding_type="fourier",
            encoder_type="residual",
            decoder_type="standard",
            channel_mult_noise=2,
            resample_filter=[1, 3, 3, 1],
        ),
    ),
    "edm_edm_ddpmpp_cond": (
        "EDMPrecond",
        dict(label_dim=10),
        dict(
            model_type="SongUNet",
            augment_dim=9,
            model_channels=16,
            channel_mult=[1, 2],
            num_blocks=2,
            attn_resolutions=[8],
            dropout=0.0,
            embedding_type="positional",
            encoder_type="standard",
            decoder_type="standard",
            channel_mult_noise=1,
            resample_filter=[1, 1],
        ),
    ),
    "edm_iddpm_adm": (
        "iDDPMPrecond",
        dict(label_dim=10),
        dict(
            model_type="DhariwalUNet",
            model_channels=32,
            channel_mult=[1, 4],
            num_blocks=1,
            attn_resolutions=[8],
            dropout=0.0,
        ),  # 128 channels at 8 x 8: two attention heads
    ),
    "edm_edm_adm": (
        "EDMPrecond",
        dict(label_dim=0),
        dict(
            model_type="DhariwalUNet",
            model_channels=16,
            channel_mult=[1, 4],
            num_blocks=1,
            attn_resolutions=[16, 8],
            augment_dim=9,
            dropout=0.0,
        ),
    ),
}

SCORE_SDE_CASES = {
    # name: (sde, continuous, model / data overrides)
    "score_sde_ve_ncsnpp": (
        "vesde",
        True,
        dict(
            fir=True,
            progressive="none",
            progressive_input="residual",
            embedding_type="fourier",
            scale_by_sigma=True,
            centered=False,
        ),
    ),
    "score_sde_ve_ncsnpp_256": (
        "vesde",
        True,
        dict(
            fir=True,
            progressive="output_skip",
            progressive_input="input_skip",
            embedding_type="fourier",
            scale_by_sigma=True,
            centered=False,
            ch_mult=(1, 1, 2),
        ),
    ),
    "score_sde_ve_ncsnpp_discrete": (
        "vesde",
        False,
        dict(
            fir=True,
            progressive="none",
            progressive_input="residual",
            embedding_type="positional",
            scale_by_sigma=True,
            centered=False,
        ),
    ),
    "score_sde_vp_ddpmpp": (
        "vpsde",
        True,
        dict(
            fir=False,
            progressive="none",
            progressive_input="none",
            embedding_type="positional",
            scale_by_sigma=False,
            centered=True,
        ),
    ),
    "score_sde_subvp_ncsnpp": (
        "subvpsde",
        True,
        dict(
            fir=True,
            progressive="none",
            progressive_input="residual",
            embedding_type="positional",
            scale_by_sigma=False,
            centered=True,
        ),
    ),
}


def _perturb(module: torch.nn.Module, seed: int) -> None:
    """Every parameter moved by N(0, 0.1^2) and rounded to float16 (stored as such, exactly; half the size)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
            p.copy_(p.half().float())


def _state(module: torch.nn.Module) -> dict:
    params = {name for name, _ in module.named_parameters()}
    return {f"state.{k}": (v.half() if k in params else v).contiguous() for k, v in module.state_dict().items()}


def export_edm(root: Path) -> None:
    sys.path.insert(0, str(root))
    from training import networks  # noqa: PLC0415 - the upstream module, from --edm

    for i, (name, (precond, kwargs, net_kwargs)) in enumerate(EDM_CASES.items()):
        torch.manual_seed(100 + i)
        init = dict(img_resolution=16, img_channels=3, **kwargs, **net_kwargs)
        module = getattr(networks, precond)(**init).eval()
        _perturb(module, 200 + i)
        g = torch.Generator().manual_seed(300 + i)
        x = torch.randn(4, 3, 16, 16, generator=g) * 2
        sigma = torch.tensor([0.01, 0.3, 2.5, 40.0])
        labels = None
        tensors = _state(module)
        if kwargs["label_dim"]:
            labels = torch.nn.functional.one_hot(torch.tensor([3, 0, 9, 5]), kwargs["label_dim"]).float()
            tensors["class_labels"] = labels
        with torch.no_grad():
            out = module(x, sigma, class_labels=labels)
        tensors.update(x=x, sigma=sigma, D=out)
        meta = {"class_name": precond, "init_kwargs": json.dumps(init)}
        save_file(tensors, OUT / f"{name}.safetensors", metadata=meta)
        print(f"{name}: {sum(v.numel() for v in module.state_dict().values())} numbers")
    sys.path.remove(str(root))


def _install_op_shim(root: Path) -> None:
    """A stand-in ``op`` package with upstream's pure-torch upfirdn2d (the CUDA build is skipped)."""
    source = (root / "op" / "upfirdn2d.py").read_text()
    tree = ast.parse(source)
    keep = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("upfirdn2d", "upfirdn2d_native")]
    namespace = {"torch": torch, "F": torch.nn.functional}
    exec(compile(ast.Module(body=keep, type_ignores=[]), "upfirdn2d.py", "exec"), namespace)  # noqa: S102
    op = types.ModuleType("op")
    op.upfirdn2d = namespace["upfirdn2d"]
    op.fused_act = types.ModuleType("op.fused_act")
    sys.modules["op"] = op
    sys.modules["op.fused_act"] = op.fused_act


def export_score_sde(root: Path) -> None:
    import ml_collections  # noqa: PLC0415

    _install_op_shim(root)
    sys.path.insert(0, str(root))
    import sde_lib  # noqa: PLC0415
    from models import ncsnpp  # noqa: F401, PLC0415 - registers the model
    from models import utils as mutils  # noqa: PLC0415

    for i, (name, (sde_name, continuous, overrides)) in enumerate(SCORE_SDE_CASES.items()):
        torch.manual_seed(400 + i)
        cfg = ml_collections.ConfigDict()
        cfg.training = ml_collections.ConfigDict(dict(continuous=continuous, sde=sde_name))
        centered = overrides.pop("centered")
        cfg.data = ml_collections.ConfigDict(dict(image_size=16, num_channels=3, centered=centered))
        model = dict(
            name="ncsnpp",
            nf=16,
            ch_mult=(1, 2),
            num_res_blocks=1,
            attn_resolutions=(8,),
            dropout=0.0,
            resamp_with_conv=True,
            conditional=True,
            fir_kernel=[1, 3, 3, 1],
            skip_rescale=True,
            resblock_type="biggan",
            progressive_combine="sum",
            attention_type="ddpm",
            init_scale=0.0,
            fourier_scale=16,
            conv_size=3,
            nonlinearity="swish",
            normalization="GroupNorm",
            sigma_min=0.01,
            sigma_max=50.0,
            num_scales=1000,
            beta_min=0.1,
            beta_max=20.0,
        )
        model.update(overrides)
        overrides["centered"] = centered
        cfg.model = ml_collections.ConfigDict(model)
        net = mutils.get_model(cfg.model.name)(cfg).eval()
        _perturb(net, 500 + i)
        sde = {
            "vesde": lambda: sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0, N=1000),
            "vpsde": lambda: sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=1000),
            "subvpsde": lambda: sde_lib.subVPSDE(beta_min=0.1, beta_max=20.0, N=1000),
        }[sde_name]()
        g = torch.Generator().manual_seed(600 + i)
        t = torch.tensor([0.02, 0.3, 0.7, 0.95])
        x = torch.randn(4, 3, 16, 16, generator=g)
        with torch.no_grad():
            score = mutils.get_score_fn(sde, net, train=False, continuous=continuous)(x, t)
        # what a score_sde checkpoint holds: the DataParallel-prefixed state dict
        tensors = _state(net)
        tensors.update(x=x, t=t, score=score)
        config = {
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in model.items()},
            "image_size": 16,
            "num_channels": 3,
            "centered": centered,
            "sde": sde_name,
            "continuous": continuous,
        }
        trainable = [k for k, p in net.named_parameters() if p.requires_grad]
        save_file(
            tensors,
            OUT / f"{name}.safetensors",
            metadata={"config": json.dumps(config), "trainable": json.dumps(trainable)},
        )
        print(f"{name}: {sum(v.numel() for v in net.state_dict().values())} numbers")
    sys.path.remove(str(root))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edm", type=Path, help="checkout of github.com/NVlabs/edm")
    parser.add_argument("--score-sde", type=Path, help="checkout of github.com/yang-song/score_sde_pytorch")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    if args.edm:
        export_edm(args.edm)
    if args.score_sde:
        export_score_sde(args.score_sde)


if __name__ == "__main__":
    main()
