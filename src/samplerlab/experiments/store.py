"""Where a run's results live: ``results.jsonl`` in the run folder, one JSON line per finished cell,
appended the moment the cell finishes (flushed and fsynced), so a crash loses at most the cell in
flight and a re-run resumes. A torn last line (a crash mid-write) is ignored on reading and never
glued to the next record. Under torch.distributed each rank appends to its own
``results.rank{r}.jsonl``; reading merges them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["RESULTS_FILE", "read_results", "append_record", "shard_path"]

RESULTS_FILE = "results.jsonl"


def shard_path(results: Path, rank: int, world: int) -> Path:
    """The file rank ``rank`` appends to: results.jsonl itself in a single process."""
    return results if world == 1 else results.parent / f"{results.stem}.rank{rank}.jsonl"


def read_results(path: Path) -> dict[str, dict]:
    """Finished cells by key, from ``path`` and any per-rank shard files beside it
    (results.rank*.jsonl); a torn or malformed line (a crash mid-write) is skipped."""
    done = {}
    for part in [path, *sorted(path.parent.glob(path.stem + ".rank*.jsonl"))]:
        if not part.exists():
            continue
        for line in part.read_text().splitlines():
            try:
                rec = json.loads(line)
                done[rec["key"]] = rec
            except (ValueError, KeyError, TypeError):
                continue
    return done


def append_record(path: Path, record: dict) -> None:
    """Append one JSON line, durably; after a torn last line, start a fresh line first."""
    torn = False
    if path.exists() and path.stat().st_size > 0:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(("\n" if torn else "") + json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
