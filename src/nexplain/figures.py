"""Saving matplotlib figures as artifacts: atomic, and the same bytes for the same figure."""

from __future__ import annotations

from nexplain.io import atomic_path

DPI = 200  # print quality: every figure of the report, the unit pages and PURE


def save_png(fig, path, dpi=DPI) -> None:
    """`fig` as a PNG at `path` (written to a temporary file, then renamed), without the
    Software entry that would stamp matplotlib's version; the figure is closed."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)
