"""Training: EDM loss and preconditioning, EMA, exact resume (safetensors + JSON checkpoints)."""

from .edm import TrainConfig, build_net, load_checkpoint, train
from .loss import EDMLoss

__all__ = ["EDMLoss", "TrainConfig", "build_net", "load_checkpoint", "train"]
