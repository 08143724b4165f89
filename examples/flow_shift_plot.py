"""What a time shift does to a flow-matching grid: the levels of ``flow`` (diffusers' FlowMatchEulerDiscrete grid)
at shift 0.5, 1 and 3 (SD3) and of ``flux`` at 512 and 1024 pixels (Flux's mu from the image size), 10 steps,
in flow time t and in sigma = t / (1 - t). Writes docs/flow-shift.png.

    python examples/flow_shift_plot.py [--out docs/flow-shift.png --steps 10]
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from samplerlab.grids import flux_mu, image_seq_len, make_grid  # noqa: E402
from samplerlab.imaging import save_figure  # noqa: E402
from samplerlab.processes import RectifiedFlow  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs/flow-shift.png")
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    process = RectifiedFlow()
    grids = {
        "flow:shift=0.5": "flow, shift 0.5",
        "flow": "flow, shift 1",
        "flow:shift=3": "flow, shift 3 (SD3)",
        "flux:height=512:width=512": f"flux 512 px (mu {flux_mu(image_seq_len(512, 512)):.2f})",
        "flux": f"flux 1024 px (mu {flux_mu(image_seq_len(1024, 1024)):.2f})",
    }
    fig, (ax_t, ax_s) = plt.subplots(1, 2, figsize=(10, 4))
    for spec, label in grids.items():
        sigmas = make_grid(spec, args.steps, process)[:-1]
        t = sigmas / (1 + sigmas)
        steps = range(len(sigmas))
        ax_t.plot(steps, t.numpy(), marker="o", ms=3, label=label)
        ax_s.semilogy(steps, sigmas.numpy(), marker="o", ms=3, label=label)
    ax_t.set(xlabel="step i", ylabel="flow time t_i", title=f"{args.steps} steps, in flow time")
    ax_s.set(xlabel="step i", ylabel="sigma_i = t_i / (1 - t_i)", title="the same levels in sigma")
    ax_s.annotate("t = 1 starts at t_max = 1 - 1e-4 (sigma 9999)", (0, 9999), (0.8, 2000), fontsize=8)
    ax_t.legend(fontsize=8)
    for ax in (ax_t, ax_s):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    print(f"wrote {save_figure(fig, args.out)}")


if __name__ == "__main__":
    main()
