"""What a training run shows a person: the curves in ``progress.png``, TensorBoard, an ETA."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["format_eta", "plot_progress", "tensorboard_writer"]


def plot_progress(history: list[dict], path: Path, title: str) -> None:
    """Training loss and validation Dice per epoch as a PNG (written, then renamed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ax1.plot(epochs, [h["loss"] for h in history], color="tab:blue", label="training loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss", color="tab:blue")
    val = [(h["epoch"], h["val_dice"]) for h in history if h.get("val_dice") is not None]
    if val:
        ax2 = ax1.twinx()
        ax2.plot(*zip(*val), color="tab:orange", marker="o", ms=3, label="validation Dice")
        ax2.set_ylabel("mean validation Dice", color="tab:orange")
        ax2.set_ylim(0, 1)
    ax1.set_title(title)
    fig.tight_layout()
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    os.replace(tmp, path)


def tensorboard_writer(log_dir: Path):
    """A TensorBoard ``SummaryWriter``, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: curves still go to progress.png
        return None
    return SummaryWriter(log_dir=str(log_dir))


def format_eta(seconds: float) -> str:
    """``3725`` → ``'1h02m'``; ``95`` → ``'1m35s'``.

    >>> format_eta(3725), format_eta(95)
    ('1h02m', '1m35s')
    """
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"
