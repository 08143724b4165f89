"""What a loaded published image model is, whoever wrote it: ``PublishedModel``, and ``load_published`` that
picks the reader (EDM pickle or score_sde checkpoint) from the file."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torch import nn

from ..io import CheckpointError

__all__ = ["PublishedModel", "load_published", "is_published_checkpoint"]


@dataclass
class PublishedModel:
    """A published network behind samplerlab's denoiser contract.

    ``denoiser(x, sigma, class_labels=None)`` works on images in [-1, 1] (whatever range the network was
    trained on) with x = y + sigma n; ``class_labels`` are integers (B,) or None (unconditional / all-zero
    label, as the writer fed it). ``sigma_min`` / ``sigma_max`` are the range the network was trained on,
    in that same [-1, 1] scale; sample with a grid inside it."""

    denoiser: Callable
    module: nn.Module
    shape: tuple[int, int, int]
    num_classes: int
    sigma_min: float
    sigma_max: float
    source: str
    details: dict = field(default_factory=dict)

    def meta(self) -> dict:
        """The metadata samplerlab's image commands read from a checkpoint (shape, classes, sigma range)."""
        return {
            "shape": list(self.shape),
            "num_classes": self.num_classes,
            "sigma_min": self.sigma_min,
            "sigma_max": self.sigma_max,
            "source": self.source,
            **self.details,
        }


def is_published_checkpoint(path: str | Path) -> bool:
    """A file (EDM ``.pkl`` or score_sde ``.pth``) rather than a folder of ``samplerlab train``."""
    return Path(path).is_file()


def load_published(path: str | Path, *, config=None, ema: bool = True, device="cpu") -> PublishedModel:
    """An EDM network pickle (``load_edm``) or a score_sde checkpoint (``load_score_sde``, which needs
    ``config``: its name in ``SCORE_SDE_CONFIGS`` or the fields), chosen by the file's format."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if zipfile.is_zipfile(path):
        from .score_sde import load_score_sde

        if config is None:
            from .score_sde import SCORE_SDE_CONFIGS

            raise CheckpointError(
                f"{path}: a torch checkpoint (score_sde?) needs its architecture: give --config NAME, one of "
                f"{', '.join(SCORE_SDE_CONFIGS)}"
            )
        return load_score_sde(path, config=config, ema=ema, device=device)
    if config is not None:
        raise ValueError(f"{path}: an EDM pickle carries its own architecture; --config {config!r} is not used")
    from .edm import load_edm

    return load_edm(path, device=device)
