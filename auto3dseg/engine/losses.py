"""Losses that learn only what a crop annotates.

CellMap crops annotate a few classes each. A plain loss on such data teaches "absent"
for every class a crop never looked at. Here each item carries a per-class mask (from
its ``annotated_mask``) and each voxel a validity flag (0 where the patch was padded
beyond the crop): classes and voxels outside both contribute no loss and no gradient.

* sigmoid mode (multi-label): Dice + BCE per class channel, masked per item and voxel;
* softmax mode (every item annotates every class, no overlapping groups): Dice + CE over
  ``background + classes``, masked per voxel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DeepSupervisionLoss", "MaskedDiceBCELoss", "MaskedDiceCELoss", "resize_target"]


def _soft_dice(prob: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
               class_mask: torch.Tensor, smooth: float) -> torch.Tensor:
    """Batch Dice loss per class over the voxels and items ``weight``/``class_mask`` allow.

    prob, target: [B, C, *S]; weight: [B, 1 or C, *S]; class_mask: [B, C].
    """
    dims = tuple(range(2, prob.ndim))
    w = weight * class_mask.view(*class_mask.shape, *([1] * len(dims)))
    inter = (prob * target * w).sum(dims).sum(0)
    denom = ((prob + target) * w).sum(dims).sum(0)
    dice = 1.0 - (2.0 * inter + smooth) / (denom + smooth)
    used = class_mask.sum(0) > 0
    if not bool(used.any()):
        return prob.sum() * 0.0  # nothing annotated in this batch: zero loss, graph kept
    return dice[used].mean()


class MaskedDiceBCELoss(nn.Module):
    """Dice + binary cross-entropy on sigmoid logits, masked per item-class and per voxel.

    Parameters
    ----------
    dice_weight, bce_weight : float
        Weights of the two terms.
    smooth : float
        Dice smoothing.

    Examples
    --------
    >>> loss = MaskedDiceBCELoss()
    >>> logits = torch.zeros(1, 2, 4, 4, 4, requires_grad=True)
    >>> target = torch.ones(1, 2, 4, 4, 4)
    >>> class_mask = torch.tensor([[1.0, 0.0]])       # class 2 not annotated
    >>> loss(logits, target, class_mask).backward()
    >>> float(logits.grad[:, 1].abs().sum())
    0.0
    """

    def __init__(self, dice_weight: float = 1.0, bce_weight: float = 1.0, smooth: float = 1e-5):
        super().__init__()
        self.dice_weight, self.bce_weight, self.smooth = dice_weight, bce_weight, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor, class_mask: torch.Tensor,
                valid: torch.Tensor | None = None) -> torch.Tensor:
        """logits, target: [B, C, *S]; class_mask: [B, C] (1 = annotated); valid: [B, 1, *S] or None."""
        logits = logits.float()
        target = target.to(logits.dtype)
        class_mask = class_mask.to(logits.dtype)
        if valid is None:
            valid = torch.ones_like(logits[:, :1])
        valid = valid.to(logits.dtype)
        spatial = [1] * (logits.ndim - 2)
        w = valid * class_mask.view(*class_mask.shape, *spatial)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        n = w.sum()
        bce = (bce * w).sum() / n.clamp_min(1.0)
        dice = _soft_dice(torch.sigmoid(logits), target, valid, class_mask, self.smooth)
        return self.dice_weight * dice + self.bce_weight * bce


class MaskedDiceCELoss(nn.Module):
    """Dice + cross-entropy on softmax logits ``[B, 1 + C, *S]``, masked per voxel.

    ``target`` is the label map ``[B, 1, *S]`` with values ``0..C``. Used only when every
    item annotates every class, so there is no per-class mask.
    """

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0, smooth: float = 1e-5):
        super().__init__()
        self.dice_weight, self.ce_weight, self.smooth = dice_weight, ce_weight, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor, class_mask: torch.Tensor | None = None,
                valid: torch.Tensor | None = None) -> torch.Tensor:
        logits = logits.float()
        labels = target[:, 0].long()
        if valid is None:
            valid = torch.ones_like(logits[:, :1])
        valid = valid.to(logits.dtype)
        ce = F.cross_entropy(logits, labels.clamp(0, logits.shape[1] - 1), reduction="none")
        ce = (ce * valid[:, 0]).sum() / valid.sum().clamp_min(1.0)
        onehot = F.one_hot(labels.clamp(0, logits.shape[1] - 1), logits.shape[1]).movedim(-1, 1).to(logits.dtype)
        all_classes = torch.ones(logits.shape[:2], dtype=logits.dtype, device=logits.device)
        dice = _soft_dice(torch.softmax(logits, 1), onehot, valid, all_classes, self.smooth)
        return self.dice_weight * dice + self.ce_weight * ce


def resize_target(t: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of a target or mask ``[B, C, *S]`` to ``size``."""
    if tuple(t.shape[2:]) == tuple(size):
        return t
    return F.interpolate(t.float(), size=tuple(size), mode="nearest")


class DeepSupervisionLoss(nn.Module):
    """Apply ``loss`` to each output head (full resolution first), weights halving per level.

    Targets and masks are resized to each head with nearest neighbour.
    """

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, outputs: Sequence[torch.Tensor], target: torch.Tensor, class_mask: torch.Tensor,
                valid: torch.Tensor | None = None) -> torch.Tensor:
        weights = [0.5**i for i in range(len(outputs))]
        total = 0.0
        for w, out in zip(weights, outputs):
            size = out.shape[2:]
            v = None if valid is None else resize_target(valid, size)
            total = total + w * self.loss(out, resize_target(target, size), class_mask, v)
        return total / sum(weights)
