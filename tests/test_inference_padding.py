"""Prediction of a volume thinner than the patch: padding must not invent a dark border."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from auto3dseg.engine.inference import mirror_pad, predict_array


class LocalMean(nn.Module):
    """A stand-in network: the mean of a 5³ neighbourhood (its own borders replicated), so
    its output depends on what surrounds a voxel, as a real network's does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(x, (2,) * 6, mode="replicate")
        mean = nn.functional.avg_pool3d(x, 5, stride=1)
        return 20.0 * (mean - 0.5)


def _dice_per_slice(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    inter = (pred & truth).sum(axis=(1, 2))
    return 2.0 * inter / (pred.sum(axis=(1, 2)) + truth.sum(axis=(1, 2)))


def _volume() -> tuple[torch.Tensor, np.ndarray]:
    truth = np.zeros((10, 32, 32), bool)
    truth[:, 8:24, 8:24] = True  # an object through every slice of a 10-slice volume
    rng = np.random.default_rng(0)
    image = np.where(truth, 0.8, 0.2) + rng.normal(0, 0.02, truth.shape)
    return torch.from_numpy(image[None].astype(np.float32)), truth


CFG = {"patch_size": [16, 16, 16], "sw_batch_size": 2, "sw_overlap": 0.25, "output_activation": "sigmoid",
       "amp": False}


def test_edge_slices_score_like_middle_ones():
    image, truth = _volume()
    prob = predict_array(LocalMean(), image, CFG, torch.device("cpu"))
    assert tuple(prob.shape) == (1, 10, 32, 32)
    dice = _dice_per_slice(prob[0].numpy() > 0.5, truth)
    middle = dice[3:7].mean()
    assert middle > 0.9
    assert dice[0] >= middle - 0.1 and dice[-1] >= middle - 0.1, dice


def test_zero_padding_would_lose_the_edge_slices():
    """The same check with the old constant padding fails: the test above has teeth."""
    image, truth = _volume()
    padded = nn.functional.pad(image, (0, 0, 0, 0, 3, 3))  # 10 -> 16 slices of zeros around
    logits = LocalMean()(padded[None])[0, :, 3:13]
    dice = _dice_per_slice(torch.sigmoid(logits)[0].numpy() > 0.5, truth)
    assert dice[0] < dice[3:7].mean() - 0.1


def test_mirror_pad_reaches_any_size_and_leaves_large_images_alone():
    x = torch.arange(6, dtype=torch.float32).reshape(1, 2, 3)
    y = mirror_pad(x, [7, 3])
    assert tuple(y.shape) == (1, 7, 3)
    assert torch.equal(y[0, 2:4], x[0]) and torch.equal(y[0, 1], x[0, 0]) and torch.equal(y[0, 4], x[0, 1])
    assert mirror_pad(x, [2, 3]) is x
