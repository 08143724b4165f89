"""The checkpoint files of ``samplerlab train``, written atomically and read without running code.

``checkpoint.safetensors`` holds the tensors and, in its header's metadata, the JSON description of the
run (config, example shape, step, losses, format version). Its one atomic rename is therefore the commit
point of a checkpoint: a run killed at any moment leaves either the previous checkpoint or the new one,
never tensors of one step with the description of another. ``checkpoint.json`` beside it is a readable
copy written afterwards (checkpoints of samplerlab 0.2 have only that one; they still load).

Every way a file can be wrong (missing, empty, truncated, random bytes, a header that claims more bytes
than the file has, a description without its config, tensors that do not fit the network the config
describes, a newer format) is a ``CheckpointError`` naming the file and what was expected.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from torch import Tensor

from ..io import CheckpointError, atomic_path, atomic_write_text

__all__ = ["CheckpointError", "FORMAT", "TENSORS_FILE", "META_FILE", "read_checkpoint", "write_checkpoint"]

FORMAT = 1  # the checkpoint format this version writes and the newest it reads
TENSORS_FILE, META_FILE = "checkpoint.safetensors", "checkpoint.json"
META_KEY = "samplerlab"  # the safetensors metadata entry holding the description
MAX_HEADER_BYTES = 256 * 2**20  # a safetensors header claiming more is corrupt (ours are a few MB at most)
REQUIRED = {"config": dict, "num_classes": int, "step": int}


def write_checkpoint(folder: Path, tensors: dict[str, Tensor], meta: dict) -> None:
    """Tensors with the description embedded (the commit point), then the readable JSON copy."""
    from safetensors.torch import save_file

    meta = {**meta, "format": FORMAT, "samplerlab": _version()}
    text = json.dumps(meta, indent=2) + "\n"
    with atomic_path(folder / TENSORS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: text})
    atomic_write_text(folder / META_FILE, text)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("samplerlab")
    except PackageNotFoundError:  # run from a source tree
        return "unknown"


def read_checkpoint(folder: str | Path, *, tensors: bool = True) -> tuple[dict, dict[str, Tensor]]:
    """The description and (``tensors``) the tensors of the checkpoint in ``folder`` (or of the folder a
    checkpoint file is in)."""
    path = Path(folder)
    if not path.exists():
        if path.suffix.lower() in (".pkl", ".pth", ".pt", ".ckpt", ".safetensors"):
            raise CheckpointError(f"{path}: no such checkpoint file")
        raise CheckpointError(f"{path}: no such checkpoint folder")
    folder = path if path.is_dir() else path.parent
    tensors_path, meta_path = folder / TENSORS_FILE, folder / META_FILE
    if not tensors_path.is_file():
        missing = tensors_path if meta_path.is_file() else meta_path
        raise CheckpointError(
            f"{folder}: no checkpoint ({missing} is missing; samplerlab train writes {TENSORS_FILE} and {META_FILE})"
        )
    header = _safetensors_header(tensors_path)
    embedded = header.get("__metadata__", {}).get(META_KEY)
    if embedded is not None:
        meta = _parse_meta(embedded, tensors_path)
    elif meta_path.is_file():
        try:
            text = meta_path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(
                f"{meta_path}: not a text file (expected the checkpoint's JSON description)"
            ) from None
        meta = _parse_meta(text, meta_path)
    else:
        raise CheckpointError(f"{folder}: no checkpoint description ({meta_path} is missing)")
    if not tensors:
        return meta, {}
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return meta, load_file(str(tensors_path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{tensors_path}: corrupt or truncated safetensors file ({err})") from None


def _safetensors_header(path: Path) -> dict:
    """The header of a safetensors file, checked before anything is allocated: the 8-byte length must fit
    the file and a sane bound, and the header must be a JSON object whose tensors lie inside the file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: {size} bytes, too short for a safetensors file (empty or truncated)")
        (length,) = struct.unpack("<Q", head)
        if length > min(size - 8, MAX_HEADER_BYTES):
            raise CheckpointError(
                f"{path}: not a safetensors file, or truncated (its header claims {length} bytes; the file has {size})"
            )
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise CheckpointError(f"{path}: not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (its header is not a JSON object)")
    data = size - 8 - length
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and offsets[1] <= data):
            raise CheckpointError(f"{path}: truncated (tensor {name!r} lies past the end of the file)")
    return header


def _parse_meta(text: str, path: Path) -> dict:
    try:
        meta = json.loads(text)
    except ValueError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: expected a JSON object describing the checkpoint, got {type(meta).__name__}")
    if meta.get("format", 1) > FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {meta['format']} (samplerlab {meta.get('samplerlab', '?')}); this "
            f"samplerlab reads format {FORMAT} and older: upgrade samplerlab"
        )
    for key, kind in REQUIRED.items():
        if key not in meta:
            raise CheckpointError(f"{path}: the description has no {key!r} (keys: {sorted(meta)})")
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            raise CheckpointError(f"{path}: {key} = {meta[key]!r}, expected a {kind.__name__}")
    if "shape" not in meta and "dim" not in meta:
        raise CheckpointError(f"{path}: the description gives no example shape ('shape' or 'dim')")
    return meta
