"""Networks F(x_in, c_noise, class_labels): they know nothing about schedules; EDMPrecond wraps them."""

from .mlp import MLPDenoiserNet, fourier_features
from .unet import UNet, UNetConfig

__all__ = ["MLPDenoiserNet", "fourier_features", "UNet", "UNetConfig"]
