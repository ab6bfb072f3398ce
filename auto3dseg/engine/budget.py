"""Training budgets: how many epochs of how many iterations, and why.

A budget is a number of optimiser steps (``40000``) or a time per bundle (``2h``,
``90min``, ``45s``). An iteration budget fixes the epochs at once; a time budget is turned
into epochs after the first one, from how long it took (validation included), so that the
learning-rate schedule still anneals to its end inside the time given.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["DEFAULT_ITERATIONS", "DEFAULT_ITERATIONS_PER_EPOCH", "VALIDATION_SHARE", "epochs_for_time", "initial_plan",
           "parse_budget", "validation_interval"]

#: the optimiser steps a run aims at when nothing else is said (a GPU-sized figure)
DEFAULT_ITERATIONS = 40_000
#: batches per epoch (nnU-Net's 250)
DEFAULT_ITERATIONS_PER_EPOCH = 250

#: the part of the training time validation should take when ``num_epochs_per_validation: auto``
VALIDATION_SHARE = 0.2

_TIME = {"s": 1 / 60, "sec": 1 / 60, "m": 1.0, "min": 1.0, "h": 60.0, "hr": 60.0, "d": 1440.0}


def parse_budget(text: Any) -> dict[str, float] | None:
    """``"40000"`` → ``{"iterations": 40000}``; ``"2h"`` → ``{"minutes": 120}``; None/"" → None.

    >>> parse_budget("40000"), parse_budget("90min"), parse_budget("1.5h"), parse_budget(None)
    ({'iterations': 40000}, {'minutes': 90.0}, {'minutes': 90.0}, None)
    """
    if text is None or str(text).strip() in ("", "none", "null"):
        return None
    t = str(text).strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+", t):
        n = int(t)
        if n < 1:
            raise ValueError(f"budget {text!r}: a number of iterations must be at least 1")
        return {"iterations": n}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(s|sec|m|min|h|hr|d)", t)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"budget {text!r}: give iterations (40000) or a time per bundle (45s, 30min, 2h, 1d)")
    return {"minutes": float(m.group(1)) * _TIME[m.group(2)]}


def initial_plan(cfg: dict) -> tuple[int, str]:
    """(epochs, reason) before training starts.

    >>> initial_plan({"num_epochs": 160, "num_iterations_per_epoch": 250, "budget": "5000"})
    (20, 'budget 5000 iterations / 250 per epoch')
    >>> initial_plan({"num_epochs": 160, "num_iterations_per_epoch": 250, "budget": "100"})[1].split(";")[0]
    'budget 100 iterations / 250 per epoch (rounded up to whole epochs: 250 iterations'

    """
    ipe = int(cfg.get("num_iterations_per_epoch", 0) or 0)
    budget = parse_budget(cfg.get("budget"))
    cap = int(cfg["num_epochs"])
    if budget and "iterations" in budget:
        if not ipe:
            raise ValueError("an iteration budget needs num_iterations_per_epoch > 0")
        n, epochs = int(budget["iterations"]), max(1, math.ceil(budget["iterations"] / ipe))
        why = f"budget {n} iterations / {ipe} per epoch"
        if epochs * ipe != n:
            why += f" (rounded up to whole epochs: {epochs * ipe} iterations; to train exactly {n}, set " \
                   f"num_iterations_per_epoch to a divisor of {n} with --override)"
        return epochs, why
    if budget:
        return cap, f"time budget {budget['minutes']:g} min: epochs set after the first one (at most {cap})"
    per = f"{ipe} iterations" if ipe else "one pass over the training items"
    return cap, f"num_epochs {cap} of {per}"


def epochs_for_time(minutes: float, epoch_seconds: float, cap: int) -> int:
    """Epochs that fit in ``minutes`` at ``epoch_seconds`` each, between 1 and ``cap``.

    >>> epochs_for_time(30, 12.0, 1000), epochs_for_time(30, 12.0, 100), epochs_for_time(1, 120.0, 100)
    (150, 100, 1)
    """
    return int(max(1, min(cap, math.floor(minutes * 60.0 / max(epoch_seconds, 1e-6)))))


def validation_interval(val_voxels: float, patch: list[int], patches_per_epoch: int, num_epochs: int,
                        overlap: float = 0.25, share: float = VALIDATION_SHARE) -> tuple[int, float]:
    """Epochs between validations (``num_epochs_per_validation: auto``) so that validating takes
    about ``share`` of the training time, and the cost of one validation in epochs.

    An epoch trains ``patches_per_epoch`` patches (forward and backward: about 3 forward passes
    each); a validation runs the network once over every validation voxel, ``1 / (1 - overlap)``
    times per axis (the sliding windows' overlap). At the challenge's size one validation of a
    fold costs about 10 epochs on the same device: validating every epoch would spend 90 % of
    the run validating. At least 4 validations are kept (the best model is chosen among them).

    >>> validation_interval(3e5, [32, 32, 32], 6, 2)              # the demo: every epoch
    (1, 1.21)
    >>> validation_interval(1.3e10, [128, 128, 128], 500, 160)    # the challenge: every 40th
    (40, 9.8)
    """
    per_epoch = 3.0 * max(1, patches_per_epoch) * math.prod(int(p) for p in patch)
    cost = float(val_voxels) * (1.0 / (1.0 - float(overlap))) ** len(patch) / per_epoch
    every = math.ceil(cost / share) if cost > share else 1
    return int(max(1, min(every, num_epochs // 4))), round(cost, 2)
