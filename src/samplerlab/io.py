"""Atomic file writes: a reader sees the old file or the whole new one, never half of it."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "atomic_write_text", "remove_stale_temporaries", "TEMP_SUFFIX", "CheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file (samplerlab's own checkpoints and
    the foreign ones the adapters read)."""


TEMP_SUFFIX = ".tmp"  # atomic_path's temporaries are .NAME.<random>.tmp<suffix>
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp(\.[A-Za-z0-9]+)?$")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries ``atomic_path`` left in ``folder`` (not below it) when a process was killed
    before its rename (SIGKILL runs no cleanup). Call it when a run (re)starts in a folder it owns."""
    removed = []
    for tmp in Path(folder).glob(f".*{TEMP_SUFFIX}*"):
        if tmp.is_file() and _TEMPORARY.match(tmp.name):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed
