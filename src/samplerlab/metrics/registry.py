"""The one table of metrics: name, direction, unit, label and the data each needs.

The experiment runner, its tables and plots, the benchmark report and the CLI read a metric's facts
from here, never from a list of their own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..registry import Registry

__all__ = [
    "Direction",
    "Needs",
    "MetricSpec",
    "METRIC_SPECS",
    "metric",
    "metrics_for",
    "default_metrics",
    "BENCH_METRICS",
]


class Direction(enum.Enum):
    HIGHER = "higher"
    LOWER = "lower"

    @property
    def sign(self) -> int:
        """+1 when larger is better: rank by sign * value, largest first."""
        return 1 if self is Direction.HIGHER else -1


class Needs(enum.Enum):
    """The data a metric is computed against."""

    EXACT_DENSITY = "an unconditional analytic problem (exact density and ODE solution)"
    EXACT_POSTERIOR = "a conditional analytic problem (clean signal and exact posterior)"
    CLEAN_RECORDING = "a speech corpus (clean reference recordings)"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    description: str  # one sentence, for table captions
    direction: Direction
    needs: Needs
    unit: str = ""
    default: bool = True  # computed when an experiment names no metrics
    requires: str = ""  # what must be installed or given for it to run, when anything

    @property
    def higher_is_better(self) -> bool:
        return self.direction is Direction.HIGHER

    @property
    def label(self) -> str:
        """Axis / column label: the name, its unit, and its direction where lower is better."""
        unit = f" ({self.unit})" if self.unit else ""
        return f"{self.name}{unit}" + (" (lower is better)" if self.direction is Direction.LOWER else "")

    def caption(self) -> str:
        better = "higher" if self.higher_is_better else "lower"
        extra = f"; {self.requires}" if self.requires else ""
        unit = f", {self.unit}" if self.unit else ""
        return f"{self.description}{unit} ({better} is better{extra})"


METRIC_SPECS: Registry[MetricSpec] = Registry("metric")


def _add(spec: MetricSpec) -> None:
    METRIC_SPECS.register(spec.name)(spec)


_H, _L = Direction.HIGHER, Direction.LOWER
for _spec in (
    # unconditional exact problems
    MetricSpec(
        "rms_ode",
        "RMS distance to the exact probability-flow ODE solution from the same noise, deterministic solvers",
        _L,
        Needs.EXACT_DENSITY,
    ),
    MetricSpec("nll_gap", "-log p(x) minus that of an exact sample, 0 is exact", _L, Needs.EXACT_DENSITY),
    MetricSpec("sw2", "sliced Wasserstein-2 distance to exact data samples", _L, Needs.EXACT_DENSITY, default=False),
    # conditional exact problems (OUVE)
    MetricSpec("snr_db", "SNR of the estimate against the clean signal", _H, Needs.EXACT_POSTERIOR, unit="dB"),
    MetricSpec("rms_posterior_mean", "RMS distance to the exact posterior mean E[x0 | y]", _L, Needs.EXACT_POSTERIOR),
    MetricSpec(
        "posterior_nll_gap",
        "-log p(x | y) minus that of an exact posterior sample, 0 is exact",
        _L,
        Needs.EXACT_POSTERIOR,
    ),
    # speech, against clean recordings
    MetricSpec("pesq", "wideband PESQ", _H, Needs.CLEAN_RECORDING),
    MetricSpec("estoi", "extended STOI", _H, Needs.CLEAN_RECORDING),
    MetricSpec("stoi", "STOI", _H, Needs.CLEAN_RECORDING),
    MetricSpec("si_sdr", "SI-SDR", _H, Needs.CLEAN_RECORDING, unit="dB"),
    MetricSpec("warpq", "raw WARP-Q", _L, Needs.CLEAN_RECORDING, default=False, requires="the samplerlab[warpq] extra"),
    MetricSpec(
        "dnsmos_sig",
        "DNSMOS SIG (P.835)",
        _H,
        Needs.CLEAN_RECORDING,
        default=False,
        requires="pip install speechmos, or dnsmos = 'MODEL_DIR'",
    ),
    MetricSpec(
        "dnsmos_bak",
        "DNSMOS BAK (P.835)",
        _H,
        Needs.CLEAN_RECORDING,
        default=False,
        requires="pip install speechmos, or dnsmos = 'MODEL_DIR'",
    ),
    MetricSpec(
        "dnsmos_ovrl",
        "DNSMOS OVRL (P.835)",
        _H,
        Needs.CLEAN_RECORDING,
        default=False,
        requires="pip install speechmos, or dnsmos = 'MODEL_DIR'",
    ),
    MetricSpec(
        "dnsmos_p808",
        "DNSMOS P.808",
        _H,
        Needs.CLEAN_RECORDING,
        default=False,
        requires="pip install speechmos, or model_v8.onnx in dnsmos = 'MODEL_DIR'",
    ),
):
    _add(_spec)

BENCH_METRICS = ("sw2", "rms_ode", "nll_gap")  # the exact-score benchmark's columns, in its order


def metric(name: str) -> MetricSpec:
    """The spec of a metric by name; an unknown name lists the valid ones."""
    return METRIC_SPECS.get(name)


def metrics_for(needs: Needs) -> list[str]:
    """Names of the metrics computed against ``needs``, in the table's order."""
    return [n for n in METRIC_SPECS if METRIC_SPECS.get(n).needs is needs]


def default_metrics(needs: Needs) -> list[str]:
    return [n for n in metrics_for(needs) if METRIC_SPECS.get(n).default]
