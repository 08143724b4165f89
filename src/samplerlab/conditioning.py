"""Conditioning hooks shared by every solver: they act on the state at each grid level.

A hook has ``at_level(ctx, x, k) -> x``, called for the starting state (k = 0) and after every step
(k = i + 1), and ``needs_noise``. Guidance lives in the denoiser (``ClassifierFreeGuidance``); hooks
are for constraints on the state itself.
"""

from __future__ import annotations

from torch import Tensor

from .solvers.base import StepContext

__all__ = ["Inpaint"]


class Inpaint:
    """Inpainting by replacement (Song et al. 2021, App. I.2): at every level sigma_k the known entries of
    the state are replaced by the known data noised to that level, s(sigma_k) (x_known + sigma_k z), with
    z from each sample's own noise stream; at sigma = 0 they are the known data. The unknown entries
    follow the solver. ``mask`` is 1 where the data are known (broadcast against the batch).
    """

    needs_noise = True

    def __init__(self, known: Tensor, mask: Tensor):
        self.known = known
        self.mask = mask.to(dtype=known.dtype)
        if not bool(((self.mask == 0) | (self.mask == 1)).all()):
            raise ValueError("the inpainting mask must hold only 0 (unknown) and 1 (known)")

    def at_level(self, ctx: StepContext, x: Tensor, k: int) -> Tensor:
        sigma = ctx.sigma(k)
        known = self.known.to(device=x.device, dtype=x.dtype)
        if sigma > 0:
            known = ctx.scale(sigma) * (known + sigma * ctx.randn_like(x))
        else:
            known = ctx.scale(0.0) * known
        mask = self.mask.to(device=x.device, dtype=x.dtype)
        return mask * known + (1 - mask) * x
