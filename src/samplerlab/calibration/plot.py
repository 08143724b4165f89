"""A picture of calibrated grids: each grid's noise levels against the step index (log scale), with the
built-in grids it is measured against, and the levels its model is evaluated at where they differ."""

from __future__ import annotations

from pathlib import Path

from ..imaging import save_figure

__all__ = ["plot_grids"]


def plot_grids(grids: dict, path: str | Path, title: str = "", model_sigmas: dict | None = None) -> Path:
    """``grids``: label -> descending levels ending at 0 (the 0 is not drawn on the log axis);
    ``model_sigmas``: label -> the level the model sees at each positive level (dashed markers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for k, (label, grid) in enumerate(grids.items()):
        levels = [float(v) for v in grid if float(v) > 0]
        (line,) = ax.plot(range(len(levels)), levels, marker="o", lw=2 if k == 0 else 1.2, label=label)
        shifted = (model_sigmas or {}).get(label)
        if shifted is not None:
            ax.plot(
                range(len(shifted)),
                list(shifted),
                ls="none",
                marker="x",
                ms=8,
                color=line.get_color(),
                label=f"{label}: level the model sees",
            )
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_xlabel("grid level (the last step, to sigma = 0, not drawn)")
    ax.set_ylabel("sigma")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = save_figure(fig, path)
    plt.close(fig)
    return path
