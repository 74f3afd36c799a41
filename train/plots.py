"""Pictures of a run: confusion matrix, top losses, reliability diagram (matplotlib, Agg backend).

Every text drawn here is plain text: class names, folder names and captions come from the user's files, and a `$`
in them (a folder named `blue$^$square`) must not be read as matplotlib mathtext (or LaTeX), which fails on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# Text properties for every label, title and caption: no mathtext, no LaTeX, whatever matplotlibrc says.
PLAIN = {"parse_math": False, "usetex": False}


def confusion_png(cm: np.ndarray, labels: Sequence[str], path: str | Path, title: str = "Confusion matrix") -> None:
    """Counts with actual classes as rows, predicted as columns."""
    plt = _plt()
    n = len(labels)
    fig, ax = plt.subplots(figsize=(2.5 + 0.6 * n, 2 + 0.6 * n), dpi=110)
    ax.imshow(cm, cmap="Blues")
    short = [lab if len(lab) <= 22 else lab[:20] + "…" for lab in labels]
    ax.set_xticks(range(n), short, rotation=60, ha="right", fontsize=8, **PLAIN)
    ax.set_yticks(range(n), short, fontsize=8, **PLAIN)
    top = cm.max() if cm.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(
                j, i, int(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > top / 2 else "black", **PLAIN
            )
    ax.set_xlabel("Predicted", **PLAIN)
    ax.set_ylabel("Actual", **PLAIN)
    ax.set_title(title, **PLAIN)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def top_losses_png(images: Sequence, captions: Sequence[str], path: str | Path, title: str = "Top losses") -> None:
    """A grid of images with 'predicted / actual / loss / probability' captions."""
    plt = _plt()
    k = max(1, len(images))
    cols = min(4, k)
    rows = (k + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, im, cap in zip(axes.flat, images, captions, strict=False):
        ax.imshow(im)
        ax.set_title(cap, fontsize=7, **PLAIN)
    fig.suptitle(title + " (prediction / actual / loss / prob. of actual)", fontsize=9, **PLAIN)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def reliability_png(bins_before: list[dict], bins_after: list[dict] | None, path: str | Path) -> None:
    """Accuracy against confidence per bin, before and after temperature scaling."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    for bins, name in ((bins_before, "uncalibrated"), (bins_after, "calibrated")):
        if not bins:
            continue
        xs = [b["confidence"] for b in bins if b["count"]]
        ys = [b["accuracy"] for b in bins if b["count"]]
        ax.plot(xs, ys, "o-", label=name)
    ax.set_xlabel("confidence", **PLAIN)
    ax.set_ylabel("accuracy", **PLAIN)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    for text in ax.legend().get_texts():
        text.update(PLAIN)
    ax.set_title("Reliability diagram", **PLAIN)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
