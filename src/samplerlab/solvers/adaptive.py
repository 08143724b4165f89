"""What the adaptive solvers share: one step-size controller and the accepted / rejected step counts.

The PI controller (Gustafsson 1991; Hairer & Wanner, Solving ODEs II, IV.2) scales a step by
    safety * err^-alpha * err_prev^beta            after an accepted step,
    safety * err^-alpha_reject                      after a rejected one,
clipped to [factor_min, factor_max], with err the step's error in the solver's scaled norm (<= 1:
accept). beta = 0 is the classic I controller. Every quantity is per sample, so a sample's steps do not
depend on its batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["PIController", "AdaptiveStats"]


@dataclass(frozen=True)
class PIController:
    alpha: float
    beta: float = 0.0
    alpha_reject: float | None = None  # None: alpha
    safety: float = 0.9
    factor_min: float = 0.0
    factor_max: float = math.inf
    err_floor: float = 1e-10  # a zero error would ask for an infinite step
    err_prev_floor: float = 1e-10  # how small a previous error may be before it damps the next step's growth

    @classmethod
    def for_order(cls, order: int, safety: float = 0.9, factor_max: float = 5.0) -> "PIController":
        """Gustafsson's PI gains for an embedded pair of order ``order``: alpha = 0.7 / p, beta = 0.4 / p on
        accepted steps, 1 / p on rejected ones, factor in [0.2, factor_max] (Hairer & Wanner II, IV.2)."""
        return cls(0.7 / order, 0.4 / order, 1 / order, safety, 0.2, factor_max)

    @classmethod
    def dopri5(cls, safety: float = 0.9, factor_max: float = 10.0) -> "PIController":
        """The controller of Hairer's DOPRI5 (Hairer, Norsett & Wanner I, II.4 and the code's documentation):
        beta = 0.04, alpha = 1/5 - 0.75 beta, the previous error floored at 1e-4 so that one very accurate step
        does not hold the next one back, factor in [0.2, 10]."""
        beta = 0.04
        return cls(0.2 - 0.75 * beta, beta, None, safety, 0.2, factor_max, err_prev_floor=1e-4)

    def factor(self, err: Tensor, err_prev: Tensor, accept: Tensor) -> tuple[Tensor, Tensor]:
        """(step-size factor per sample, the next call's err_prev: err floored where accepted)."""
        safe = err.clamp_min(self.err_floor)
        reject = self.alpha if self.alpha_reject is None else self.alpha_reject
        accepted = self.safety * safe ** (-self.alpha)
        if self.beta:
            accepted = accepted * err_prev**self.beta
        factor = torch.where(accept, accepted, self.safety * safe ** (-reject))
        if self.factor_min > 0 or math.isfinite(self.factor_max):
            factor = factor.clamp(self.factor_min, self.factor_max)
        return factor, err.clamp_min(max(self.err_floor, self.err_prev_floor))


@dataclass
class AdaptiveStats:
    """Accepted and rejected steps per sample, reported in the result's ``info``."""

    accepted: Tensor
    rejected: Tensor

    @classmethod
    def zeros(cls, batch: int) -> "AdaptiveStats":
        return cls(torch.zeros(batch, dtype=torch.long), torch.zeros(batch, dtype=torch.long))

    def count(self, accept: Tensor, active: Tensor) -> None:
        self.accepted += accept.long()
        self.rejected += (active & ~accept).long()

    def report(self) -> dict:
        return {
            "accepted_steps_mean": float(self.accepted.double().mean()),
            "rejected_steps_mean": float(self.rejected.double().mean()),
            "accepted_steps_max": int(self.accepted.max()),
            "rejected_steps_max": int(self.rejected.max()),
        }
