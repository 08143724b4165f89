"""Networks F(x_in, c_noise, class_labels): they know nothing about processes; EDMPrecond wraps them.
``NETS`` builds them by name (``nets.registry``)."""

from .mlp import MLPDenoiserNet, fourier_features
from .registry import NETS
from .unet import UNet, UNetConfig

__all__ = ["NETS", "MLPDenoiserNet", "fourier_features", "UNet", "UNetConfig"]
