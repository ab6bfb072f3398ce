"""Sliding-window inference of an image of any size, block by block, in bounded memory.

MONAI's ``sliding_window_inference`` keeps one float32 value per class and voxel for the
whole image: a 1000³ test crop with 48 classes is 192 GB. Here the image is cut into
*blocks*: a core, plus a halo of a quarter patch on each side so that the windows covering
the core's edge still see the image around it. Each block goes through MONAI's sliding
window on its own; only its core is kept. The working memory is that of one block, sized
from a byte budget (``sw_memory_gb``), whatever the image's size. An image that fits the
budget is one block: exactly MONAI's sliding window over the whole image.

Intensity normalisation is computed once over the whole image (:func:`intensity_parameters`:
the same statistics MONAI's transforms would compute) and applied to each block as it is
read, so the stored image stays in its own dtype (uint8 EM: 1 byte per voxel).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["Block", "DEFAULT_SW_MEMORY_GB", "MAX_CHUNK", "block_core", "chunk_shape", "halo_of", "intensity_parameters", "normalise_region",
           "plan_blocks", "predict_blocks", "sw_memory_bytes"]

#: working memory of one block when the bundle config does not say (``sw_memory_gb``)
DEFAULT_SW_MEMORY_GB = 4.0
#: largest chunk side of a map written block by block (16 MiB per uint8 chunk)
MAX_CHUNK = 256


@dataclass(frozen=True)
class Block:
    """One block of an image: ``core`` (what it contributes, image coordinates), ``read``
    (core plus halo, clipped to the image) and ``inner`` (the core within ``read``)."""

    core: tuple[slice, ...]
    read: tuple[slice, ...]
    inner: tuple[slice, ...]


def halo_of(patch: Sequence[int]) -> tuple[int, ...]:
    """A quarter patch per axis (at least 1 voxel): enough context for the windows at a core's edge.

    >>> halo_of([128, 128, 32])
    (32, 32, 8)
    """
    return tuple(max(1, int(math.ceil(int(p) / 4))) for p in patch)


def _bytes_per_voxel(channels: int, in_channels: int) -> int:
    # MONAI's float32 accumulator (C) and count map (1), the normalised input, our float32 core (C)
    return 4 * (2 * int(channels) + int(in_channels) + 2)


def block_core(shape: Sequence[int], patch: Sequence[int], channels: int, budget_bytes: float,
               in_channels: int = 1) -> tuple[int, ...]:
    """Core size per axis: the whole image when it fits ``budget_bytes``, else the largest
    equal-sided core (at least one patch) whose block fits. Cores over :data:`MAX_CHUNK` are
    rounded down to a multiple of it, so that blocks write whole chunks of a map.

    >>> block_core([100, 100, 100], [32, 32, 32], 2, 1e9)
    (100, 100, 100)
    >>> block_core([1000, 1000, 1000], [64, 64, 64], 48, 4e9)
    (184, 184, 184)
    >>> block_core([1000, 1000, 1000], [64, 64, 64], 2, 4e9)
    (256, 256, 256)
    """
    shape = [int(s) for s in shape]
    halo = halo_of(patch)
    per_voxel = _bytes_per_voxel(channels, in_channels)

    def cost(side: int) -> int:
        return int(np.prod([min(s, side + 2 * h) for s, h in zip(shape, halo)], dtype=np.float64)) * per_voxel

    if int(np.prod(shape, dtype=np.float64)) * per_voxel <= budget_bytes:
        return tuple(shape)
    lo, hi = max(1, min(int(min(patch)), max(shape))), max(shape)
    if cost(lo) > budget_bytes:  # not even one patch fits: one patch per core, say it works
        return tuple(min(s, lo) for s in shape)
    while lo < hi:  # the largest side whose block fits
        mid = (lo + hi + 1) // 2
        if cost(mid) <= budget_bytes:
            lo = mid
        else:
            hi = mid - 1
    if lo > MAX_CHUNK:
        lo -= lo % MAX_CHUNK
    return tuple(min(s, lo) for s in shape)


def chunk_shape(shape: Sequence[int], core: Sequence[int]) -> tuple[int, ...]:
    """Chunks of a map written by cores ``core``: one chunk per core (at most :data:`MAX_CHUNK`).

    >>> chunk_shape([1000, 1000, 40], [184, 184, 40]), chunk_shape([600, 90], [600, 90])
    ((184, 184, 40), (256, 90))
    """
    return tuple(max(1, min(int(c), int(s), MAX_CHUNK)) for s, c in zip(shape, core))


def plan_blocks(shape: Sequence[int], core: Sequence[int], halo: Sequence[int]) -> list[Block]:
    """Blocks whose cores tile ``shape`` (the last core of an axis may be smaller).

    >>> [(b.core, b.read, b.inner) for b in plan_blocks([10], [6], [2])]  # doctest: +NORMALIZE_WHITESPACE
    [((slice(0, 6, None),), (slice(0, 8, None),), (slice(0, 6, None),)),
     ((slice(6, 10, None),), (slice(4, 10, None),), (slice(2, 6, None),))]
    """
    axes = []
    for size, c, h in zip(shape, core, halo):
        c = max(1, int(c))
        spans = []
        for start in range(0, int(size), c):
            stop = min(int(size), start + c)
            r0, r1 = max(0, start - int(h)), min(int(size), stop + int(h))
            spans.append((slice(start, stop), slice(r0, r1), slice(start - r0, stop - r0)))
        axes.append(spans)
    blocks = []
    for combo in np.ndindex(*[len(a) for a in axes]):
        parts = [axes[k][i] for k, i in enumerate(combo)]
        blocks.append(Block(tuple(p[0] for p in parts), tuple(p[1] for p in parts), tuple(p[2] for p in parts)))
    return blocks


def sw_memory_bytes(cfg: Mapping[str, Any], device: torch.device | None = None) -> float:
    """The block budget in bytes: ``sw_memory_gb`` of the config (default
    :data:`DEFAULT_SW_MEMORY_GB`), at most a quarter of the free RAM, and on a GPU at most
    half of its free memory (the block's accumulator then stays on the GPU)."""
    gb = cfg.get("sw_memory_gb")
    budget = float(gb if gb not in (None, "auto") else DEFAULT_SW_MEMORY_GB) * 2**30
    try:
        import psutil

        budget = min(budget, psutil.virtual_memory().available / 4)
    except Exception:  # noqa: BLE001 - no psutil reading: keep the configured figure
        pass
    if device is not None and device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = min(budget, free / 2)
    return budget


# ----------------------------------------------------------------------------- intensity
def _channel_moments(channel: np.ndarray, step: int = 1 << 24) -> tuple[float, float]:
    """Mean and population std of one channel, in float64, a slab at a time (no float copy of it all)."""
    flat = channel.reshape(-1)
    total, total_sq = 0.0, 0.0
    for start in range(0, flat.size, step):
        part = flat[start:start + step].astype(np.float64)
        total += float(part.sum())
        total_sq += float(np.dot(part, part))
    n = max(1, flat.size)
    mean = total / n
    return mean, math.sqrt(max(0.0, total_sq / n - mean * mean))


def intensity_parameters(image: np.ndarray, intensity: Mapping[str, Any]) -> dict[str, Any]:
    """What normalising ``image`` ``[C, *S]`` needs, computed once over the whole image.

    ``zscore``: per-channel mean and std (MONAI's ``NormalizeIntensityd``, channel-wise, a zero
    std read as 1); ``percentile``: per-channel lower/upper percentiles (MONAI's
    ``ScaleIntensityRangePercentilesd``); ``range``: nothing (fixed ``a_min``/``a_max``).

    >>> p = intensity_parameters(np.array([[0, 2, 4, 6]], np.uint8), {"mode": "zscore"})
    >>> p["mean"], [round(s, 4) for s in p["std"]]
    ([3.0], [2.2361])
    """
    mode = intensity.get("mode", "zscore")
    if mode == "zscore":
        moments = [_channel_moments(np.asarray(c)) for c in image]
        return {"mode": mode, "mean": [m for m, _ in moments], "std": [s if s > 0 else 1.0 for _, s in moments]}
    if mode == "percentile":
        from monai.transforms.utils_pytorch_numpy_unification import percentile

        lower, upper = float(intensity.get("lower", 1.0)), float(intensity.get("upper", 99.0))
        bounds = [(float(percentile(np.asarray(c, dtype=np.float32), lower)),
                   float(percentile(np.asarray(c, dtype=np.float32), upper))) for c in image]
        return {"mode": mode, "lower": [b[0] for b in bounds], "upper": [b[1] for b in bounds]}
    if mode == "range":
        return {"mode": mode, "a_min": float(intensity["a_min"]), "a_max": float(intensity["a_max"])}
    raise ValueError(f"unknown intensity mode {mode!r}; expected zscore, percentile or range")


def normalise_region(region: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """A region ``[C, *R]`` of the image normalised with the whole image's ``params``
    (:func:`intensity_parameters`); float32, as MONAI's transforms give it.

    >>> normalise_region(np.array([[0, 6]], np.uint8), {"mode": "zscore", "mean": [3.0], "std": [3.0]})
    array([[-1.,  1.]], dtype=float32)
    """
    out = np.empty(region.shape, dtype=np.float32)
    mode = params["mode"]
    for c in range(region.shape[0]):
        x = region[c].astype(np.float32, copy=False)
        if mode == "zscore":
            out[c] = (x - np.float32(params["mean"][c])) / np.float32(params["std"][c])
            continue
        lo, hi = (params["lower"][c], params["upper"][c]) if mode == "percentile" else (params["a_min"],
                                                                                        params["a_max"])
        if hi - lo == 0:  # MONAI's ScaleIntensityRange: a flat range only shifts
            out[c] = x - np.float32(lo)
            continue
        out[c] = np.clip((x - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0)
    return out


# ----------------------------------------------------------------------------- prediction
def _region_logits(model: torch.nn.Module, region: torch.Tensor, cfg: Mapping[str, Any], device: torch.device,
                   output_device: torch.device) -> torch.Tensor:
    """Logits ``[C, *R]`` of a normalised region ``[in_ch, *R]`` through MONAI's sliding window."""
    from monai.inferers import sliding_window_inference

    from auto3dseg.engine.inference import mirror_pad
    from auto3dseg.engine.networks import as_list

    spatial = region.shape[1:]
    patch = [int(p) for p in cfg["patch_size"]]
    # pad to at least one patch with the image's mirror image: zeros would be a dark band no
    # training patch showed (edge slices of a 10-slice SBEM volume scored Dice 0.04 with zeros)
    x = mirror_pad(region, patch).unsqueeze(0)
    use_amp = bool(cfg.get("amp", True)) and device.type == "cuda"
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
        logits = sliding_window_inference(
            x.to(output_device), patch, int(cfg.get("sw_batch_size", 2)), lambda t: as_list(model(t))[0].float(),
            overlap=float(cfg.get("sw_overlap", 0.25)), mode="gaussian", sw_device=device, device=output_device)
    starts = [(max(p, s) - s) // 2 for p, s in zip(patch, spatial)]
    return logits[0][(slice(None), *[slice(b, b + s) for b, s in zip(starts, spatial)])].float()


def tta_flips(spatial_dims: int, tta: Any = False) -> list[tuple[int, ...]]:
    """The flips of test-time augmentation, as dims of a ``[C, *S]`` tensor: ``[()]`` without it;
    with it every combination of the spatial axes (8 in 3-D, 4 in 2-D), as nnU-Net mirrors.

    >>> tta_flips(2), tta_flips(2, True)
    ([()], [(), (1,), (2,), (1, 2)])
    """
    from itertools import combinations

    if not tta:
        return [()]
    axes = range(1, spatial_dims + 1)
    return [c for n in range(spatial_dims + 1) for c in combinations(axes, n)]


@torch.no_grad()
def predict_blocks(model: torch.nn.Module, image: np.ndarray | torch.Tensor, cfg: Mapping[str, Any],
                   device: torch.device, params: Mapping[str, Any] | None = None,
                   budget_bytes: float | None = None, channels: int | None = None,
                   core: Sequence[int] | None = None) -> Iterator[tuple[Block, torch.Tensor]]:
    """Probabilities of ``image`` ``[in_ch, *S]``, one block at a time: yields ``(block, prob)``
    with ``prob`` ``[C, *core]`` (float32, on the CPU).

    ``params`` (:func:`intensity_parameters`) normalise each block as it is read from a raw
    image; without them the image is taken as already normalised. ``channels`` (the number of
    outputs) sizes the blocks; default the config's classes (plus background for softmax).
    ``core`` fixes the cores instead (several bundles on the same blocks). ``cfg["tta"]``
    true: each block is also predicted mirrored along every combination of its spatial axes
    (:func:`tta_flips`), and the probabilities are averaged.
    """
    patch = [int(p) for p in cfg["patch_size"]]
    spatial = tuple(int(s) for s in image.shape[1:])
    softmax = cfg.get("output_activation") == "softmax"
    n_out = int(channels or len(cfg.get("class_names") or []) + (1 if softmax else 0) or 1)
    budget = sw_memory_bytes(cfg, device) if budget_bytes is None else float(budget_bytes)
    if core is None:
        core = block_core(spatial, patch, n_out, budget, int(image.shape[0]))
    output_device = device if device.type == "cuda" else torch.device("cpu")
    for block in plan_blocks(spatial, core, halo_of(patch)):
        region = image[(slice(None), *block.read)]
        if params is not None:
            region = torch.from_numpy(normalise_region(np.asarray(region), params))
        elif not isinstance(region, torch.Tensor):
            region = torch.from_numpy(np.ascontiguousarray(region, dtype=np.float32))
        flips = tta_flips(len(spatial), cfg.get("tta"))
        prob = None
        for dims in flips:  # averaged in probability space
            logits = _region_logits(model, region.float().flip(dims) if dims else region.float(), cfg, device,
                                    output_device)
            logits = (logits.flip(dims) if dims else logits)[(slice(None), *block.inner)]
            p = torch.softmax(logits, 0) if softmax else logits.sigmoid_()
            prob = p if prob is None else prob.add_(p)
        if len(flips) > 1:
            prob = prob.div_(len(flips))
        yield block, prob.cpu()
