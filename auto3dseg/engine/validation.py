"""Validation Dice during training: per class, on whole crops, block by block.

A crop's Dice is summed from per-block ``(intersection, predicted, true)`` counts
(:func:`dice_counts`), so a large crop with many classes is validated in one block's memory;
classes a crop does not annotate are left out (``None``), and a class absent from both truth
and prediction scores 1, as in the CellMap scoring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["dice_counts", "dice_from_counts", "dice_per_class", "validate"]


def dice_counts(prob: torch.Tensor, label: torch.Tensor, members: Sequence[Sequence[int]],
                softmax: bool = False) -> torch.Tensor:
    """Per class ``(intersection, predicted, true)`` voxel counts of one region, ``[C, 3]`` int64.

    ``prob``: ``[C(+1), *R]`` probabilities; ``label``: ``[*R]`` label map. Summed over the
    blocks of a crop they give its Dice exactly (:func:`dice_from_counts`).

    >>> p = torch.zeros(2, 4, 4); p[0, :2] = 1
    >>> lab = torch.zeros(4, 4, dtype=torch.uint8); lab[:2] = 1
    >>> dice_counts(p, lab, [[1], [2]]).tolist()
    [[8, 8, 8], [0, 0, 0]]
    """
    arg = prob.argmax(0) if softmax else None
    out = torch.zeros((len(members), 3), dtype=torch.int64)
    for c, values in enumerate(members):
        truth = torch.isin(label, torch.as_tensor(values, dtype=label.dtype, device=label.device))
        if arg is not None:
            pred = torch.isin(arg, torch.as_tensor(values, device=arg.device))  # channel index == class id
        else:
            pred = prob[c] > 0.5
        out[c, 0], out[c, 1], out[c, 2] = int((truth & pred).sum()), int(pred.sum()), int(truth.sum())
    return out


def dice_from_counts(counts: torch.Tensor, class_mask: torch.Tensor) -> list[float | None]:
    """Dice per class from :func:`dice_counts` sums, ``None`` for classes the crop does not
    annotate; a class absent from both truth and prediction scores 1.

    >>> dice_from_counts(torch.tensor([[8, 8, 8], [0, 0, 0], [1, 2, 3]]), torch.tensor([1.0, 1.0, 0.0]))
    [1.0, 1.0, None]
    """
    out: list[float | None] = []
    for c in range(counts.shape[0]):
        if float(class_mask[c]) < 0.5:
            out.append(None)
            continue
        denom = int(counts[c, 1]) + int(counts[c, 2])
        out.append(1.0 if denom == 0 else 2.0 * int(counts[c, 0]) / denom)
    return out


def dice_per_class(prob: torch.Tensor, label: torch.Tensor, members: Sequence[Sequence[int]],
                   class_mask: torch.Tensor, softmax: bool = False) -> list[float | None]:
    """Dice of each class on one crop, ``None`` for classes the crop does not annotate.

    ``prob``: ``[C(+1), *S]`` probabilities; ``label``: ``[1, *S]`` label map. A class absent
    from both truth and prediction scores 1.

    >>> p = torch.zeros(2, 4, 4); p[0, :2] = 1
    >>> lab = torch.zeros(1, 4, 4, dtype=torch.uint8); lab[0, :2] = 1
    >>> dice_per_class(p, lab, [[1], [2]], torch.tensor([1.0, 0.0]))
    [1.0, None]
    """
    return dice_from_counts(dice_counts(prob, label[0], members, softmax), class_mask)


@torch.no_grad()
def validate(model: nn.Module, loader, cfg: Mapping[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums and counts of per-class Dice over the crops of ``loader``: sliding windows block by
    block (:mod:`auto3dseg.engine.blockwise`), so a large crop with many classes fits."""
    from auto3dseg.engine.blockwise import predict_blocks

    model.eval()
    softmax = cfg.get("output_activation") == "softmax"
    n = len(cfg["class_ids"])
    sums, counts = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    for batch in loader:
        for b in range(batch["image"].shape[0]):
            label = batch["label"][b][0]
            total = torch.zeros((n, 3), dtype=torch.int64)
            for block, prob in predict_blocks(model, batch["image"][b], cfg, device):
                total += dice_counts(prob, label[block.core], cfg["class_members"], softmax)
            for c, s in enumerate(dice_from_counts(total, batch["class_mask"][b])):
                if s is not None:
                    sums[c] += s
                    counts[c] += 1
    return sums, counts
