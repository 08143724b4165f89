"""Networks by name, for training and checkpoint loading: ``NETS.get(name)(shape, num_classes, config)``.

A builder takes the example shape, the number of classes (0: unconditional) and a configuration with the
architecture's fields (``training.TrainConfig``). The networks of this package register here; an upper
layer or another package registers its own through the ``samplerlab.nets`` entry-point group (the speech
track's ``speech-unet`` does), so training builds any of them without importing the layer that defines it.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..registry import Registry

__all__ = ["NETS", "NetBuilder"]

NetBuilder = Callable[[tuple, int, object], nn.Module]
NETS: Registry[NetBuilder] = Registry("network", entry_points="samplerlab.nets")
