"""A bundle's ``hyper_parameters.yaml``: derived from the data, read back with overrides.

:func:`derive_hyper_parameters` is what each template's ``fill_template_config`` calls:
spacing, patch size, intensity normalisation, channels, classes, output activation and
epochs (a budget of ~40k iterations in epochs of 250, unless told) come from ``datastats.yaml``
and the datalist; the rest are per-network defaults
a person can edit in the written YAML or override at train time (``--key=value``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from auto3dseg.engine.blockwise import DEFAULT_SW_MEMORY_GB
from auto3dseg.engine.budget import DEFAULT_ITERATIONS, DEFAULT_ITERATIONS_PER_EPOCH, parse_budget
from auto3dseg.engine.networks import min_patch_sides, patch_multiples
from auto3dseg.engine.transforms import channel_members

# re-exported: the scripts of bundles generated earlier import them from here
from .yaml_files import (  # noqa: F401
    BUNDLE_YAML_FIX,
    apply_overrides,
    load_bundle_config,
    read_bundle_yaml,
    read_yaml_file,
    relocate,
    write_yaml_atomic,
)

__all__ = [
    "NETWORK_DEFAULTS",
    "apply_overrides",
    "derive_hyper_parameters",
    "derive_intensity",
    "derive_num_epochs",
    "derive_patch_size",
    "network_resolution",
    "load_bundle_config",
    "spatial_dims_of",
    "output_activation",
    "kept_bundle_notes",
    "settings_overrides",
    "write_yaml_atomic",
]

#: per-network defaults; every value is written into the bundle's YAML
NETWORK_DEFAULTS: dict[str, dict[str, Any]] = {
    "segresnet": {
        "patch_size": 128, "learning_rate": 2e-4, "batch_size": 1, "num_patches_per_image": 2,
        "network": {"init_filters": 32, "blocks_down": [1, 2, 2, 4], "dsdepth": 4, "norm": "instance"},
    },
    "dints": {
        "patch_size": 96, "learning_rate": 2e-4, "batch_size": 1, "num_patches_per_image": 2,
        "network": {"num_blocks": 6, "num_depths": 3, "channel_mul": 0.5, "cell_op": 1},
    },
    "swinunetr": {
        "patch_size": 96, "learning_rate": 1e-4, "batch_size": 1, "num_patches_per_image": 2,
        "network": {"feature_size": 48, "use_v2": True, "use_checkpoint": False},
        "pretrained_ckpt": None,
    },
}

#: what changes for 2-D images (cells): larger patches, more of them per step
NETWORK_DEFAULTS_2D: dict[str, Any] = {"patch_size": 256, "batch_size": 4, "num_patches_per_image": 2,
                                       "sw_batch_size": 8}

#: training iterations a run aims at when no budget is given (a GPU-sized figure)
TARGET_ITERATIONS = DEFAULT_ITERATIONS


def output_activation(datalist: Mapping[str, Any]) -> str:
    """``softmax`` only when every training item annotates every class and no class is a
    group of others (softmax needs mutually exclusive, fully annotated classes); otherwise
    ``sigmoid`` (multi-label, loss masked per item).

    >>> table = [{"id": 1, "parts": []}, {"id": 2, "parts": []}]
    >>> output_activation({"class_table": table, "training": [{"annotated_mask": 3}]})
    'softmax'
    >>> output_activation({"class_table": table, "training": [{"annotated_mask": 1}]})
    'sigmoid'
    >>> nested = [{"id": 1, "cellmap_id": 51, "parts": []}, {"id": 2, "cellmap_id": 64, "parts": []}]  # er, er_mem_all
    >>> output_activation({"class_table": nested, "training": [{"annotated_mask": 3}]})
    'sigmoid'
    """
    table = datalist["class_table"]
    if any(len(m) > 1 for m in channel_members(table)):  # a group, or a CellMap class inside another (er_mem_all, er)
        return "sigmoid"
    every = sum(1 << (int(r["id"]) - 1) for r in table)
    items = datalist.get("training", [])
    if items and all("annotated_mask" not in it or (int(it["annotated_mask"]) & every) == every for it in items):
        return "softmax"
    return "sigmoid"


def _round_up(x: float, m: int) -> int:
    return int(math.ceil(x / m) * m)


def derive_patch_size(algo: str, median_shape: Sequence[float], network: Mapping[str, Any] | None = None,
                      max_side: int | None = None, spacing: Sequence[float] | None = None) -> list[int]:
    """Patch size per axis, each side a multiple of what the network needs on that axis.

    Without ``max_side`` (generation's default) the patch holds about as many voxels as a cube
    of the network's default side, shaped to cover the same physical extent on every axis
    (``spacing``, as nnU-Net plans it): an axis capped by the median image (rounded up to
    what the network takes) gives its voxels to the others. With ``max_side`` (``--patch_size``)
    every side is that, or the median image's where that is smaller.

    >>> derive_patch_size("segresnet", [64, 64, 30])
    [64, 64, 32]
    >>> derive_patch_size("segresnet", [500, 500, 40])
    [224, 224, 40]
    >>> derive_patch_size("swinunetr", [500, 500, 40], max_side=96)
    [96, 96, 64]
    >>> derive_patch_size("segresnet", [1000, 1000, 10], {"resolution": [6, 6, 40]}, spacing=[6, 6, 40])
    [456, 456, 10]
    """
    dims = len(median_shape)
    mults, lows = patch_multiples(algo, network, dims), min_patch_sides(algo, network, dims)
    caps = [max(low, _round_up(s, m)) for s, m, low in zip(median_shape, mults, lows)]
    if max_side:
        return [max(low, min(_round_up(int(max_side), m), cap)) for m, low, cap in zip(mults, lows, caps)]
    side = float(NETWORK_DEFAULTS[algo]["patch_size"])
    spacing = [float(v) for v in spacing] if spacing is not None and len(spacing) == dims else [1.0] * dims
    raw = _physical_cube(side ** dims, spacing, [float(c) for c in caps])
    # rounded down so that the patch stays within the default's voxels (and its memory)
    return [max(low, min(cap, int(math.floor(r * (1 + 1e-9) / m)) * m))
            for r, m, low, cap in zip(raw, mults, lows, caps)]


def _physical_cube(voxels: float, spacing: Sequence[float], caps: Sequence[float]) -> list[float]:
    """Sides (in voxels, unrounded) of a box of ``voxels`` voxels whose physical sides are equal,
    each at most its cap; what a capped axis cannot take goes to the others."""
    capped: dict[int, float] = {}
    while True:
        free = [i for i in range(len(spacing)) if i not in capped]
        if not free:
            return [capped[i] for i in range(len(spacing))]
        rest = voxels / math.prod(capped.values())
        extent = (rest * math.prod(spacing[i] for i in free)) ** (1.0 / len(free))  # nm on each free axis
        over = [i for i in free if extent / spacing[i] > caps[i]]
        if not over:
            return [capped.get(i, extent / spacing[i]) for i in range(len(spacing))]
        for i in over:
            capped[i] = caps[i]


def network_resolution(spacing: Sequence[float], ratio: float = 2.0) -> list[float] | None:
    """The voxel size a segresnet is told (``network.resolution``) when one axis is at least
    ``ratio`` times coarser than another (it then skips downsampling that axis first), else None.

    >>> network_resolution([6.0, 6.0, 40.0]), network_resolution([8.0, 8.0, 8.0])
    ([6.0, 6.0, 40.0], None)
    """
    sp = [float(v) for v in spacing]
    return sp if len(sp) == 3 and min(sp) > 0 and max(sp) / min(sp) >= ratio else None


def derive_intensity(modality: str, datastats: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Intensity normalisation for a modality (see :func:`auto3dseg.engine.transforms.intensity_transform`).

    EM and MRI: per-image z-score (contrast differs between EM datasets and sessions);
    light microscopy: per-image percentile scaling; CT: the dataset's foreground 0.5-99.5
    percentile range.
    """
    modality = (modality or "em").lower()
    if modality.startswith("ct") and datastats:
        fg = datastats["stats_summary"]["image_foreground_stats"]["intensity"]
        return {"mode": "range", "a_min": float(fg["percentile_00_5"]), "a_max": float(fg["percentile_99_5"])}
    if modality in ("lm", "light", "light_microscopy", "microscopy", "cellseg", "fluorescence", "brightfield"):
        return {"mode": "percentile", "lower": 1.0, "upper": 99.0}
    return {"mode": "zscore"}


def derive_num_epochs(target_iterations: int = TARGET_ITERATIONS,
                      iterations_per_epoch: int = DEFAULT_ITERATIONS_PER_EPOCH) -> int:
    """Epochs of ``iterations_per_epoch`` batches that reach ``target_iterations``.

    >>> derive_num_epochs(), derive_num_epochs(5000, 250)
    (160, 20)
    """
    return max(1, math.ceil(int(target_iterations) / max(1, int(iterations_per_epoch))))


def spatial_dims_of(datalist: Mapping[str, Any], median_shape: Sequence[float]) -> int:
    """2 for a datalist of 2-D images (``spatial_dims: 2``, or every image one slice thick),
    else the number of axes of the analysed shape.

    >>> spatial_dims_of({"spatial_dims": 2}, [512, 512, 1]), spatial_dims_of({}, [64, 64, 30])
    (2, 3)
    """
    if datalist.get("spatial_dims"):
        return int(datalist["spatial_dims"])
    return 2 if len(median_shape) == 3 and float(median_shape[2]) == 1.0 else len(median_shape)


def derive_hyper_parameters(algo: str, datastats: Mapping[str, Any], datalist: Mapping[str, Any], *,
                            datalist_path: str | os.PathLike, dataroot: str | os.PathLike, fold: int,
                            bundle_root: str | os.PathLike, num_epochs: int | None = None,
                            patch_size: int | None = None, budget: str | int | None = None) -> dict[str, Any]:
    """Every value a bundle needs, derived from the data (see module docstring).

    ``budget`` (iterations such as ``40000``, or a time per bundle such as ``2h``) sets the
    epochs instead of ``num_epochs``; see :mod:`auto3dseg.engine.budget`."""
    if algo not in NETWORK_DEFAULTS:
        raise ValueError(f"unknown algorithm {algo!r}; expected one of {sorted(NETWORK_DEFAULTS)}")
    summary = datastats["stats_summary"]["image_stats"]
    median_shape = list(summary["shape"]["median"])
    spacing = [float(s) for s in summary["spacing"]["median"]]
    dims = spatial_dims_of(datalist, median_shape)
    d = dict(NETWORK_DEFAULTS[algo], **(NETWORK_DEFAULTS_2D if dims == 2 else {}))
    median_shape, spacing = median_shape[:dims], spacing[:dims]  # 2-D images are stored x, y, 1
    channels = round(float(summary["channels"]["max"]))
    table = datalist["class_table"]
    activation = output_activation(datalist)
    batch = int(d["batch_size"])
    parsed = parse_budget(budget)  # checked here, so that a typo fails at generation, not at training
    ipe = DEFAULT_ITERATIONS_PER_EPOCH
    epochs = int(num_epochs) if num_epochs else derive_num_epochs(
        int(parsed["iterations"]) if parsed and "iterations" in parsed else TARGET_ITERATIONS, ipe)
    modality = str(datalist.get("modality", "em"))
    intensity = derive_intensity(modality, datastats)
    if datalist.get("intensity_range"):  # the converter normalised every image to this range already
        lo, hi = (float(v) for v in datalist["intensity_range"])
        intensity = {"mode": "range", "a_min": lo, "a_max": hi}
    network = dict(d["network"])
    if algo == "segresnet" and dims == 3:  # null for near-isotropic data (kept, so that it can be overridden)
        network["resolution"] = network_resolution(spacing)
    cfg: dict[str, Any] = {
        "algo": algo,
        "bundle_root": str(Path(bundle_root).resolve()),
        "ckpt_path": str(Path(bundle_root).resolve() / "model"),
        "data_list_file_path": str(Path(datalist_path).resolve()),
        "dataroot": str(Path(dataroot).resolve()),
        "fold": int(fold),
        "modality": modality,
        "spatial_dims": dims,
        "spacing": spacing,
        "input_channels": channels,
        "output_activation": activation,
        "class_names": [str(r["name"]) for r in table],
        "class_ids": [int(r["id"]) for r in table],
        "class_members": channel_members(table),
        "intensity": intensity,
        "patch_size": derive_patch_size(algo, median_shape, network, patch_size or (
            d["patch_size"] if dims == 2 else None), spacing),
        "num_epochs": epochs,
        "num_iterations_per_epoch": ipe,
        "budget": None if budget is None else str(budget),
        "num_epochs_per_validation": "auto",  # about a fifth of the run validating (engine/budget.py)
        "batch_size": batch,
        "num_patches_per_image": int(d["num_patches_per_image"]),
        "max_samples_per_class": 100_000,
        "learning_rate": float(d["learning_rate"]),
        "weight_decay": 1e-5,
        "amp": True,
        "deep_supervision": algo == "segresnet",
        "early_stop_patience": 30,
        "num_workers": 4,
        "cache_rate": 0.0,
        # crops preprocessed once (uncompressed arrays, statistics, class voxels): a draw reads two
        # patches; cache_dir null = <work_dir>/preprocessed (auto3dseg.engine.preprocessed)
        "cache": True,
        "cache_dir": None,
        "sw_batch_size": int(d.get("sw_batch_size", 2)),
        "sw_overlap": 0.25,
        "sw_memory_gb": DEFAULT_SW_MEMORY_GB,  # working memory of one sliding-window block (engine/blockwise.py)
        "resume": True,
        "seed": 0,
        # 2-D cell images are not resampled: one model sees every pixel size
        "check_spacing": dims != 2,
        "network": network,
    }
    if "pretrained_ckpt" in d:
        cfg["pretrained_ckpt"] = d["pretrained_ckpt"]
    return cfg


def _bundle_files(bundle: Path) -> list[str]:
    return sorted(str(f) for f in (bundle / "configs").glob("*.yaml"))


def _median_shape(work_dir: Path) -> list[float] | None:
    """The analysed median image shape (what generation capped the patch at), or None."""
    try:
        stats = yaml.safe_load((work_dir / "datastats.yaml").read_text())
        return [float(s) for s in stats["stats_summary"]["image_stats"]["shape"]["median"]]
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return None


def _own_settings(bundle: Any, cfg: Mapping[str, Any], given: Mapping[str, Any], median: list[float] | None, *,
                  num_epochs: int | None, patch_size: int | None) -> tuple[dict[str, Any], list[str]]:
    """({key: value} to override, what changes as text) for a bundle of the project's templates."""
    want: dict[str, Any] = {}
    said: list[str] = []
    if num_epochs and "num_epochs" not in given:
        if int(cfg.get("num_epochs") or 0) != int(num_epochs):
            want["num_epochs"] = int(num_epochs)
            said.append(f"num_epochs {cfg.get('num_epochs')} -> {num_epochs}")
        try:
            budget = parse_budget(cfg.get("budget"))
        except ValueError:
            budget = None  # a bad budget is reported by the override check or the training
        if budget and "iterations" in budget and "budget" not in given:
            want["budget"] = None  # an iteration budget would set the epochs instead
            said.append(f"budget {cfg.get('budget')} -> none (it would set the epochs)")
        elif budget:
            said.append(f"(at most: its time budget {cfg.get('budget')} sets the epochs after the first one)")
    if patch_size and "patch_size" not in given:
        dims = int(cfg.get("spatial_dims", 3))
        shape = (median or [float(patch_size)] * dims)[:dims]
        derived = derive_patch_size(bundle.algo, shape, cfg.get("network"), int(patch_size))
        if [int(p) for p in cfg.get("patch_size") or []] != derived:
            want["patch_size"] = derived
            said.append(f"patch_size {cfg.get('patch_size')} -> {derived}")
    return want, said


def _foreign_problems(bundle: Any, cfg: Mapping[str, Any], *, num_epochs: int | None,
                      patch_size: int | None) -> list[str]:
    """Why ``--num_epochs``/``--patch_size`` are not applied to a bundle of other templates (MONAI's
    official ones) whose config holds another value: the ``--override`` that would apply it."""
    from auto3dseg.bundles.generate import OFFICIAL_KEYS

    spec = OFFICIAL_KEYS.get(bundle.algo, {})
    out = []
    for what, value in (("num_epochs", num_epochs), ("patch_size", patch_size)):
        if not value:
            continue
        keys = spec.get(what, [])
        if what == "patch_size":
            mult = int(spec.get("patch_multiple", 16))
            value = [int(math.ceil(int(value) / mult) * mult)] * 3
        have = {k: _get(cfg, k) for k in keys}
        if keys and all(v == value for v in have.values()):
            continue
        key = keys[0] if keys else "KEY"
        out.append(f"--{what} {value if what == 'num_epochs' else patch_size}: {bundle.name} comes from other "
                   f"templates ({', '.join(f'{k}={v}' for k, v in have.items()) or 'no known key'}), which are not "
                   f"changed at training: pass --override {bundle.algo}:{key}="
                   + (str(value) if what == "num_epochs" else "[" + ",".join(map(str, value)) + "]")
                   + " (and the template's own settings that re-derive it), or regenerate with --force")
    return out


def _get(cfg: Mapping[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("#"):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def settings_overrides(bundles: Sequence[Any], work_dir: str | os.PathLike, *, num_epochs: int | None = None,
                       patch_size: int | None = None, overrides: Mapping[str, Any] | None = None,
                       force: bool = False) -> tuple[dict[str, Any], list[str]]:
    """``--num_epochs``/``--patch_size`` given to ``--mode train``: ``ALGO:key`` training overrides
    for the generated bundles whose config holds another value than generation would now write
    (the patch derived as at generation: rounded to the network, capped at the median image),
    and lines saying which bundles get which values.

    Parameters
    ----------
    bundles : sequence of Bundle
        The selected bundles; trained ones (unless ``force``) are only named in a note.
    overrides : mapping
        The explicit ``--override`` values: a key given there wins, and is not touched.

    Raises
    ------
    ValueError
        For a bundle of other templates (MONAI's official ones) that holds another value,
        naming the ``--override`` that would change it.
    """
    from auto3dseg.bundles.checks import check_overrides
    from auto3dseg.orchestration.train_bundles import overrides_for
    from auto3dseg.orchestration.workdir import list_bundles

    # the explicit overrides first: a bad one is named here, not met as a crash below
    check_overrides([b for b in bundles if force or not b.done], overrides or {},
                    {b.algo for b in list_bundles(Path(work_dir).resolve())})
    median = _median_shape(Path(work_dir))
    out: dict[str, Any] = {}
    lines: list[str] = []
    problems: list[str] = []
    for b in bundles:
        given = overrides_for(b.algo, overrides)
        cfg = load_bundle_config(_bundle_files(b.path), given)
        if "output_activation" not in cfg:  # not the project's templates
            problems += [] if b.done and not force else _foreign_problems(
                b, cfg, num_epochs=num_epochs, patch_size=patch_size)
            continue
        want, said = _own_settings(b, cfg, given, median, num_epochs=num_epochs, patch_size=patch_size)
        if not want:
            continue
        if b.done and not force:
            lines.append(f"note: {b.name} is trained already: not retrained with {', '.join(said)} (--force retrains "
                         "it; its old model/ is moved aside)")
            continue
        for key, value in want.items():
            name = f"{b.algo}:{key}"
            if name in out and out[name] != value:
                problems.append(f"--{key} gives {b.algo}'s bundles different values ({out[name]}, {value}: their "
                                f"networks differ): pass --override {b.algo}:{key}=... instead")
            out[name] = value
        lines.append(f"{b.name}: {', '.join(said)} (--num_epochs/--patch_size applied at training, as --override: "
                     "give them again when resuming)")
    if problems:
        raise ValueError("\n".join(problems))
    return out, lines


def kept_bundle_notes(bundles: Sequence[Any], work_dir: str | os.PathLike, *, num_epochs: int | None = None,
                      patch_size: int | None = None, budget: str | None = None) -> list[str]:
    """What ``--num_epochs``/``--patch_size``/``--budget`` given to ``--mode generate`` would have
    changed in the ``bundles`` it kept (generated before, no ``--force``): one line each, with
    how to apply them; empty when they hold those values already."""
    median = _median_shape(Path(work_dir))
    lines = []
    for b in bundles:
        try:
            cfg = load_bundle_config(_bundle_files(b.path), {})
        except (OSError, ValueError):
            continue  # an unreadable bundle is named when it is trained
        if "output_activation" not in cfg:  # other templates: what training would say of them
            said = [p.split(":")[0] for p in _foreign_problems(b, cfg, num_epochs=num_epochs, patch_size=patch_size)]
        else:
            said = _own_settings(b, cfg, {}, median, num_epochs=num_epochs, patch_size=patch_size)[1]
            said = [t for t in said if not t.startswith("(")]
        if budget and str(cfg.get("budget")) != str(budget):
            said.append(f"budget {cfg.get('budget')} -> {budget}")
        if said:
            lines.append(f"{b.name} was kept with its own settings, not those given ({', '.join(said)}): --force "
                         "generates it anew (the old one is moved to replaced/)"
                         + ("" if budget else "; --mode train with the same flags applies them at training"))
    return lines
