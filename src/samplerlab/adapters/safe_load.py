"""Checkpoints written by ``torch.save`` read without executing anything.

``torch.load(weights_only=True)`` unpickles tensors, containers and numbers only and refuses every other
global; ``safe_torch_load`` adds a closed allow-list of **stand-ins** for the few classes a foreign checkpoint
names (a Lightning ``AttributeDict`` read as a plain dict, a class object referenced in the hyperparameters
read as a ``ClassReference`` that records its name), so the file loads in plain torch without the library
that wrote it, and turns every refusal into a ``CheckpointError`` naming the file and the global it tried to
reach. Nothing in the file is called but torch's own tensor rebuilders.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch

from ..io import CheckpointError

__all__ = ["ClassReference", "class_reference", "safe_torch_load"]


class ClassReference:
    """Stands in for a class object named in a checkpoint (never instantiated, never imported)."""

    qualified_name: str = ""

    def __init__(self, *args, **kwargs):
        raise CheckpointError(f"a checkpoint tried to instantiate {self.qualified_name}; samplerlab does not")

    def __reduce__(self):  # pragma: no cover - a stand-in is data, not something to write back
        raise TypeError(f"a stand-in for {self.qualified_name} cannot be pickled")


_REFERENCES: dict[str, type] = {}


def class_reference(qualified_name: str) -> type:
    """The stand-in class for ``qualified_name`` (one per name; ``.qualified_name`` says which)."""
    if qualified_name not in _REFERENCES:
        short = qualified_name.rsplit(".", 1)[-1]
        _REFERENCES[qualified_name] = type(short, (ClassReference,), {"qualified_name": qualified_name})
    return _REFERENCES[qualified_name]


# torch's wording for a refused global (an unknown one, or one from a module it blocks outright)
_UNSUPPORTED = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)")


def safe_torch_load(path: str | Path, stand_ins: dict[str, object]) -> object:
    """``torch.load(path, weights_only=True)`` with ``stand_ins`` (qualified name -> the object read in its
    place) allowed. A file that is not a torch checkpoint, or that names any other global, is a
    ``CheckpointError`` naming the file (and the global); nothing in it runs."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a torch checkpoint (torch.save writes a zip archive)")
    allowed = [(obj, name) for name, obj in stand_ins.items()]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = _UNSUPPORTED.search(str(err))
        if found:
            raise CheckpointError(
                f"{path}: refers to {found.group(1)}, which samplerlab does not load (nothing was executed); "
                f"the classes it reads in place of the writer's are: {', '.join(sorted(stand_ins)) or 'none'}"
            ) from None
        raise CheckpointError(f"{path}: refused by torch's weights-only reader: {_first_line(err)}") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[-1][:300] if text else type(err).__name__
