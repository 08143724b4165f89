"""Training: EDM loss and preconditioning, EMA, exact resume (safetensors + JSON checkpoints)."""

from .edm import EDMLoss, TrainConfig, build_net, load_checkpoint, train

__all__ = ["EDMLoss", "TrainConfig", "build_net", "load_checkpoint", "train"]
