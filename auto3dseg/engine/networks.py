"""The three networks of the bundles, built from a bundle's ``network`` config.

Every network maps ``[B, in_channels, *patch]`` to ``[B, out_channels, *patch]`` logits.
SegResNetDS also returns lower-resolution heads in training mode (deep supervision);
:func:`as_list` puts both cases in one shape for the loss.

Nothing is downloaded: SwinUNETR starts from random weights unless ``pretrained_ckpt``
names a local checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["NETWORKS", "as_list", "build_network", "load_pretrained", "min_patch_side", "min_patch_sides",
           "patch_multiple", "patch_multiples"]

NETWORKS = ("segresnet", "dints", "swinunetr")

#: every patch side must be a multiple of this for the network to round-trip its input size
_PATCH_MULTIPLE = {"segresnet": 8, "dints": 16, "swinunetr": 32}
#: the networks instance-normalise their bottleneck, which needs > 1 voxel: 2 a side after
#: segresnet's 8x and SwinUNETR's 32x downsampling
_MIN_PATCH_SIDE = {"segresnet": 16, "dints": 16, "swinunetr": 64}


def patch_multiple(algo: str, network: Mapping[str, Any] | None = None) -> int:
    """Smallest number every patch side must be a multiple of for ``algo``.

    >>> patch_multiple("swinunetr")
    32
    """
    network = network or {}
    if algo == "segresnet":
        return 2 ** (len(network.get("blocks_down", (1, 2, 2, 4))) - 1)
    if algo == "dints":
        return 2 ** (int(network.get("num_depths", 3)) + 1)
    return _PATCH_MULTIPLE[algo]


def min_patch_side(algo: str, network: Mapping[str, Any] | None = None) -> int:
    """Smallest patch side ``algo`` trains on (a multiple of :func:`patch_multiple`)."""
    return max(_MIN_PATCH_SIDE[algo], patch_multiple(algo, network))


def patch_multiples(algo: str, network: Mapping[str, Any] | None = None, spatial_dims: int = 3) -> list[int]:
    """What each patch side must be a multiple of. A segresnet given ``resolution`` (the voxel
    size of an anisotropic dataset) does not downsample its coarse axis until the others have
    caught up (MONAI's ``SegResNetDS``), so that axis needs a smaller multiple.

    >>> patch_multiples("segresnet", {"resolution": [6.0, 6.0, 40.0]})
    [8, 8, 2]
    >>> patch_multiples("dints", {}, 2)
    [16, 16]
    """
    network = network or {}
    if algo == "segresnet" and network.get("resolution"):
        from monai.networks.nets.segresnet_ds import scales_for_resolution

        scales = scales_for_resolution([float(r) for r in network["resolution"]],
                                       n_stages=len(network.get("blocks_down", (1, 2, 2, 4))))
        return [int(v) for v in np.prod(np.array(scales[:-1]), axis=0)]
    return [patch_multiple(algo, network)] * int(spatial_dims)


def min_patch_sides(algo: str, network: Mapping[str, Any] | None = None, spatial_dims: int = 3) -> list[int]:
    """Smallest patch side per axis (see :func:`min_patch_side`; an axis the network does not
    downsample as often needs fewer voxels)."""
    low = min_patch_side(algo, network)
    return [m if m < patch_multiple(algo, network) else max(low, m)
            for m in patch_multiples(algo, network, spatial_dims)]


def dints_fixed_topology(num_blocks: int, num_depths: int, cell_op: int = 1) -> list[np.ndarray]:
    """A fixed DiNTS architecture code: every path between neighbouring resolutions active,
    each with one operation (``cell_op``: 0 skip, 1 conv 3x3x3, 2-4 anisotropic convs).

    DiNTS normally searches this code; we train the densest fixed topology instead (search
    may come later). Returns ``[arch_code_a, arch_code_c]`` as TopologyInstance expects.
    """
    n_paths = 3 * num_depths - 2
    arch_a = np.ones((num_blocks, n_paths), dtype=np.float32)
    arch_c = np.full((num_blocks, n_paths), cell_op, dtype=np.int64)
    return [arch_a, arch_c]


def build_network(algo: str, in_channels: int, out_channels: int, network: Mapping[str, Any] | None = None,
                  spatial_dims: int = 3) -> nn.Module:
    """Build ``algo``'s network.

    Parameters
    ----------
    algo : {"segresnet", "dints", "swinunetr"}
    in_channels, out_channels : int
    network : mapping, optional
        Keyword options of the network (the ``network`` section of a bundle config).
    spatial_dims : int
        3 for EM volumes, 2 for images.

    Examples
    --------
    >>> net = build_network("segresnet", 1, 3, {"init_filters": 8, "dsdepth": 1})
    >>> net(torch.zeros(1, 1, 16, 16, 16)).shape
    torch.Size([1, 3, 16, 16, 16])
    """
    network = dict(network or {})
    if algo == "segresnet":
        from monai.networks.nets import SegResNetDS

        return SegResNetDS(
            spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
            init_filters=int(network.get("init_filters", 32)),
            blocks_down=tuple(network.get("blocks_down", (1, 2, 2, 4))),
            dsdepth=int(network.get("dsdepth", 4)), norm=network.get("norm", "instance"),
            resolution=tuple(float(r) for r in network["resolution"]) if network.get("resolution") else None,
        )
    if algo == "dints":
        from monai.networks.nets import DiNTS, TopologyInstance

        num_blocks, num_depths = int(network.get("num_blocks", 6)), int(network.get("num_depths", 3))
        space = TopologyInstance(
            arch_code=dints_fixed_topology(num_blocks, num_depths, int(network.get("cell_op", 1))),
            channel_mul=float(network.get("channel_mul", 0.5)), num_blocks=num_blocks, num_depths=num_depths,
            spatial_dims=spatial_dims, use_downsample=True, device="cpu",
        )
        return DiNTS(dints_space=space, in_channels=in_channels, num_classes=out_channels,
                     spatial_dims=spatial_dims, use_downsample=True)
    if algo == "swinunetr":
        from monai.networks.nets import SwinUNETR

        return SwinUNETR(
            in_channels=in_channels, out_channels=out_channels, spatial_dims=spatial_dims,
            feature_size=int(network.get("feature_size", 48)), use_checkpoint=bool(network.get("use_checkpoint", False)),
            use_v2=bool(network.get("use_v2", True)),
        )
    raise ValueError(f"unknown network {algo!r}; expected one of {NETWORKS}")


def as_list(output: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Network output as a list, full resolution first (deep-supervision heads follow)."""
    if isinstance(output, torch.Tensor):
        return [output]
    return list(output)


def load_pretrained(model: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Load matching weights from a local checkpoint; returns (missing, unexpected) keys.

    Accepts a bare state dict or one under ``state_dict`` / ``model``. Layers whose shape
    differs (e.g. the output head for another number of classes) are left as they are.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained_ckpt {path} does not exist; give a local file or null")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    missing = sorted(set(own) - set(usable))
    unexpected = sorted(set(state) - set(usable))
    return missing, unexpected
