"""EDM's network pickles (Karras et al. 2022; ``network-snapshot-*.pkl``) read without running their code.

An EDM pickle is a plain pickle of a dict (``ema``, ``loss_fn``, ``augment_pipe``, ``dataset_kwargs``). Each
network object in it is stored as a call to ``torch_utils.persistence._reconstruct_persistent_obj(meta)``
whose ``meta`` holds the class name, the source code of the module that defines it (``module_src``, which
EDM's own loader ``exec``s) and the object's state (parameters, buffers, submodules, constructor
arguments). ``read_edm_pickle`` unpickles with a closed allow-list: that call becomes a
``PersistentRecord`` that only stores the meta (the source is never compiled), tensor storages go through
``torch.load(weights_only=True)``, and any other global is refused with a ``CheckpointError`` naming the
file and what it tried to reach. ``load_edm`` then builds samplerlab's own networks (``nets.edm_unets``,
``nets.edm_precond``) from the recorded constructor arguments and loads the recorded tensors strictly.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..io import CheckpointError
from ..nets.edm_precond import PRECONDITIONERS
from ..nets.edm_unets import DhariwalUNet, SongUNet
from .published import PublishedModel

__all__ = ["PersistentRecord", "read_edm_pickle", "load_edm", "EDM_NETWORKS"]

EDM_NETWORKS = {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}


@dataclass
class PersistentRecord:
    """One persistent object of an EDM pickle, as data: its class name and state (never instantiated)."""

    class_name: str
    state: dict
    version: int | None = None

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})

    def modules(self) -> dict:
        return dict(self.state.get("_modules") or {})


class _ModuleRecord:
    """Stands in for a torch container (``ModuleDict``, ``ModuleList``, ``Sequential``): keeps its state."""

    def __setstate__(self, state):
        self.state = state


class _EasyDict(dict):
    """Stands in for ``dnnlib.util.EasyDict`` (a dict with attribute access): read as a plain dict."""


def _reconstruct(meta) -> PersistentRecord:
    meta = dict(meta)
    if meta.get("type", "class") != "class" or not isinstance(meta.get("class_name"), str):
        raise pickle.UnpicklingError(f"unsupported persistent object {meta.get('type')!r}")
    return PersistentRecord(meta["class_name"], dict(meta.get("state") or {}), meta.get("version"))


def _storage_from_bytes(data: bytes):
    """Tensor storages are pickled as a nested ``torch.save``; read it weights-only."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _numpy_scalar(dtype, data: bytes = b""):
    dtype = np.dtype(dtype)
    if dtype.kind not in "biufc":
        raise pickle.UnpicklingError(f"refused numpy scalar of dtype {dtype}")
    return np.frombuffer(data, dtype=dtype)[0]


def _numpy_dtype(name, *args):
    dtype = np.dtype(name)
    if dtype.kind not in "biufc":
        raise pickle.UnpicklingError(f"refused numpy dtype {dtype}")
    return dtype


_ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("collections", "OrderedDict"): __import__("collections").OrderedDict,
    ("torch", "device"): torch.device,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
}
_CONTAINERS = {"ModuleDict", "ModuleList", "Sequential"}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch.nn.modules.container" and name in _CONTAINERS:
            return _ModuleRecord
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def read_edm_pickle(path: str | Path) -> dict:
    """The pickle's top-level dict with every network a ``PersistentRecord``; nothing in it is executed.
    A file that is not such a pickle, or that reaches for anything beyond the allow-list, is a
    ``CheckpointError`` naming the file (and the global)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with open(path, "rb") as f:
            data = _RestrictedUnpickler(f).load()
    except pickle.UnpicklingError as err:
        text = str(err)
        if text.startswith("global "):
            raise CheckpointError(
                f"{path}: refers to {text.split()[1]}, which samplerlab does not load (nothing was executed); "
                "an EDM network pickle needs only its persistent networks, torch tensors and dicts"
            ) from None
        raise CheckpointError(f"{path}: not an EDM network pickle ({text})") from None
    except (EOFError, ValueError, TypeError, AttributeError, RuntimeError, IndexError, KeyError) as err:
        raise CheckpointError(f"{path}: not a readable EDM network pickle ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: an EDM network pickle holds a dict, this holds a {type(data).__name__}")
    return data


def _tensors(record, prefix: str = "") -> dict:
    """The state dict of a recorded module tree: parameters and persistent buffers, depth first."""
    state = record.state if isinstance(record, (PersistentRecord, _ModuleRecord)) else {}
    out = {}
    for name, value in (state.get("_parameters") or {}).items():
        if value is not None:
            out[prefix + name] = value.detach()
    skip = set(state.get("_non_persistent_buffers_set") or ())
    for name, value in (state.get("_buffers") or {}).items():
        if value is not None and name not in skip:
            out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(_tensors(child, f"{prefix}{name}."))
    return out


def load_edm(path: str | Path, *, key: str = "ema", device="cpu") -> PublishedModel:
    """An EDM network pickle as a ``PublishedModel``: the preconditioned network (VP, VE, iDDPM or EDM
    preconditioning around SongUNet or DhariwalUNet) rebuilt from its recorded constructor arguments, its
    ``key`` weights (EDM's snapshots hold the EMA as ``ema``) loaded strictly, on ``device``."""
    path = Path(path)
    data = read_edm_pickle(path)
    if key not in data:
        raise CheckpointError(f"{path}: no {key!r} network in this pickle (it holds {', '.join(map(str, data))})")
    record = data[key]
    if not isinstance(record, PersistentRecord):
        raise CheckpointError(f"{path}: {key!r} is not a persistent network object")
    if record.class_name not in PRECONDITIONERS:
        raise CheckpointError(
            f"{path}: network class {record.class_name!r} is not one samplerlab rebuilds; "
            f"valid: {', '.join(PRECONDITIONERS)}"
        )
    inner = record.modules().get("model")
    if not isinstance(inner, PersistentRecord) or inner.class_name not in EDM_NETWORKS:
        name = inner.class_name if isinstance(inner, PersistentRecord) else type(inner).__name__
        raise CheckpointError(f"{path}: inner network {name!r} is not one of {', '.join(EDM_NETWORKS)}")
    precond_cls, precond_keys = PRECONDITIONERS[record.class_name]
    outer = record.init_kwargs
    try:
        net = EDM_NETWORKS[inner.class_name](**_network_kwargs(inner.init_kwargs))
        module = precond_cls(
            net,
            int(outer["img_channels"]),
            label_dim=int(outer.get("label_dim", 0)),
            **{k: outer[k] for k in precond_keys if k in outer},
        )
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(
            f"{path}: its recorded {record.class_name}({inner.class_name}) arguments do not build a network ({err})"
        ) from None
    try:
        module.load_state_dict(_tensors(record), strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:400]
        raise CheckpointError(f"{path}: its tensors do not fit {inner.class_name} ({detail})") from None
    module.to(device).eval().requires_grad_(False)
    channels, resolution = int(outer["img_channels"]), int(outer["img_resolution"])
    return PublishedModel(
        denoiser=module,
        module=module,
        shape=(channels, resolution, resolution),
        num_classes=int(outer.get("label_dim", 0)),
        sigma_min=module.sigma_min,
        sigma_max=module.sigma_max,
        source=f"EDM {record.class_name}({inner.class_name}) from {path.name}",
        details={"preconditioning": record.class_name, "network": inner.class_name},
    )


def _network_kwargs(kwargs: dict) -> dict:
    """The network's recorded constructor arguments, minus those that only matter for training speed."""
    kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}
    for unused in ("use_fp16",):
        kwargs.pop(unused, None)
    return kwargs
