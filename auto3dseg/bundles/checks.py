"""Checks of generated bundles before they train or predict: overrides that name no key of
the bundle (a typo would be ignored silently) or give a value of the wrong type (it would
end the training with a traceback), a class table that changed since the bundle was
generated (its channels would be read as other classes), and images given to predict that
were never converted (:func:`raw_image_problem`)."""

from __future__ import annotations

import ast
import difflib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from auto3dseg.orchestration.workdir import Bundle

__all__ = ["ENGINE_KEYS", "bundle_keys", "channel_rule_changes", "check_class_tables", "check_overrides",
           "older_channels_note", "override_value_problem", "raw_image_problem", "training_value"]

#: keys the project's training engine reads that a bundle's YAML may leave out, with a value of
#: the type each takes (None: any value, or null)
ENGINE_DEFAULTS: dict[str, Any] = {"device": "cuda", "pretrained_ckpt": None, "cache": True, "cache_dir": None,
                                   "sw_memory_gb": 4.0}
ENGINE_KEYS = frozenset(ENGINE_DEFAULTS)

#: keys whose value is more than its YAML type says: (check, what is expected, example)
_KNOWN_VALUES: dict[str, tuple[Any, str, str]] = {
    "num_epochs_per_validation": (lambda v: v == "auto" or (_is_int(v) and int(v) >= 1),
                                  "auto or a whole number >= 1", "5"),
    # counts that make no sense at 0 or below: a run of -3 epochs "finished" with no weights
    **{k: (lambda v: _is_int(v) and int(v) >= 1, "a whole number >= 1", ex) for k, ex in (
        ("num_epochs", "50"), ("num_iterations_per_epoch", "250"), ("batch_size", "2"),
        ("num_patches_per_image", "2"), ("sw_batch_size", "4"), ("num_images_per_batch", "2"))},
    "num_workers": (lambda v: _is_int(v) and int(v) >= 0, "a whole number >= 0", "4"),
    "sw_memory_gb": (lambda v: v in (None, "auto") or (_is_number(v) and 0 < float(v) < 1e6), "a number > 0 or auto",
                     "8"),
    "learning_rate": (lambda v: _is_number(v) and not isinstance(v, bool) and 0 < float(v) < float("inf"),
                      "a number > 0", "2e-4"),
    # network sizes (a 0 or a word fails deep in the network's constructor, naming no key)
    **{k: (lambda v: _is_int(v) and int(v) >= 1, "a whole number >= 1", ex) for k, ex in (
        ("init_filters", "32"), ("dsdepth", "4"), ("feature_size", "48"), ("num_blocks", "6"),
        ("num_depths", "3"))},
    "blocks_down": (lambda v: isinstance(v, list) and len(v) >= 1 and all(_is_int(x) and int(x) >= 1 for x in v),
                    "a list of whole numbers >= 1", "[1,2,2,4]"),
    # segresnet's voxel size (network#resolution): it then skips downsampling a coarse axis first
    "resolution": (lambda v: v is None or (isinstance(v, list) and len(v) in (2, 3) and all(
        _is_number(x) and not isinstance(x, bool) and 0 < float(x) < float("inf") for x in v)),
        "null or one positive voxel size per axis", "[6,6,40]"),
}


def _config(bundle: Path) -> dict[str, Any]:
    from auto3dseg.bundles.config import BUNDLE_YAML_FIX, read_bundle_yaml

    cfg: dict[str, Any] = {}
    for f in sorted((bundle / "configs").glob("*")):
        if f.suffix in (".yaml", ".yml"):
            data = read_bundle_yaml(f)
            if not data and f.name == "hyper_parameters.yaml":  # an override check would only say "no key"
                raise ValueError(f"{f}: no settings (an emptied file?); {BUNDLE_YAML_FIX}")
            cfg.update(data)
        elif f.suffix == ".json":
            cfg.update(json.loads(f.read_text()) or {})
    return cfg


def _flatten(cfg: Mapping[str, Any], prefix: str = "") -> Iterable[str]:
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        yield name
        if isinstance(value, Mapping):
            yield from _flatten(value, name + "#")


def bundle_keys(bundle: str | os.PathLike) -> set[str]:
    """Every key an override may set in ``bundle``: its configs' keys, nested ones as ``a#b``."""
    cfg = _config(Path(bundle))
    keys = set(_flatten(cfg))
    if "output_activation" in cfg:  # the project's engine
        keys |= ENGINE_KEYS
    return keys


def training_value(value: Any) -> Any:
    """An override's value as the training script receives it: the command line's text read
    as a Python literal (what ``fire`` does), a string then as YAML (what the bundle does).

    >>> training_value("250"), training_value("1e-4"), training_value("true"), training_value("abc")
    (250, 0.0001, True, 'abc')
    >>> training_value("[96,96,96]"), training_value("null")
    ([96, 96, 96], None)
    """
    if not isinstance(value, str):
        return value
    try:
        parsed: Any = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        parsed = value
    if isinstance(parsed, str):
        try:
            parsed = yaml.safe_load(parsed)
        except yaml.YAMLError:
            pass
    return parsed


def _is_int(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _text(v: Any) -> str:
    """A value as it is typed after ``--override key=``."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_text(x) for x in v) + "]"
    return "null" if v is None else str(v)


def _expected(key: str, current: Any) -> tuple[Any, str] | None:
    """(check, what is expected) for a key holding ``current``; None when anything goes."""
    if current is None or isinstance(current, str):
        return None  # a path, a name, an expression of another template, or unset
    if isinstance(current, bool):
        return (lambda v: isinstance(v, bool)), "true or false"
    if isinstance(current, int):
        return _is_int, "a whole number"
    if isinstance(current, float):
        return _is_number, "a number"
    if isinstance(current, (list, tuple)):
        numbers = bool(current) and all(_is_number(x) for x in current)
        if key.split("#")[-1] == "patch_size" and numbers:  # one side for every axis, or one per axis
            n = len(current)
            return (lambda v: (_is_int(v) and int(v) >= 1) or (isinstance(v, list) and len(v) == n
                                                               and all(_is_int(x) and x >= 1 for x in v))), \
                f"a list of {n} whole numbers or one number"
        if numbers:
            return (lambda v: isinstance(v, list) and all(_is_number(x) for x in v)), "a list of numbers"
        return (lambda v: isinstance(v, list)), "a list"
    if isinstance(current, Mapping):
        return (lambda v: isinstance(v, Mapping)), "a mapping (or set its keys one by one as KEY#NAME=VALUE)"
    return None


def override_value_problem(raw_key: str, value: Any, current: Any, holder: str = "the bundle") -> str | None:
    """What is wrong with ``--override raw_key=value`` for a key that holds ``current`` now in
    ``holder`` (None: nothing). ``budget`` is read as :func:`auto3dseg.engine.budget.parse_budget` does.

    >>> print(override_value_problem("num_iterations_per_epoch", "abc", 250, "segresnet_0"))
    ... # doctest: +NORMALIZE_WHITESPACE
    --override num_iterations_per_epoch=abc: expected a whole number >= 1 (segresnet_0 has 250),
    e.g. --override num_iterations_per_epoch=250
    >>> override_value_problem("learning_rate", "1e-4", 2e-4) is None
    True
    """
    key = str(raw_key).rpartition(":")[2]
    parsed = training_value(value)
    shown = f"--override {raw_key}={_text(value) if not isinstance(value, str) else value}"
    if key == "budget":
        from auto3dseg.engine.budget import parse_budget

        try:
            parse_budget(parsed)
        except ValueError:
            return (f"{shown}: expected iterations or a time per bundle, e.g. --override {raw_key}=5000 or "
                    f"--override {raw_key}=2h (or null for none)")
        return None
    known = key.split("#")[-1]  # training#num_epochs in MONAI's dints
    if known in _KNOWN_VALUES:
        ok, what, example = _KNOWN_VALUES[known]
        if ok(parsed):
            return None
        has = f" ({holder} has {_text(current)})" if current is not None and ok(current) else ""
        return f"{shown}: expected {what}{has}, e.g. --override {raw_key}={_text(current) if has else example}"
    rule = _expected(key, current)
    if rule is None or rule[0](parsed):
        return None
    return f"{shown}: expected {rule[1]} ({holder} has {_text(current)}), e.g. --override {raw_key}={_text(current)}"


def _lookup(cfg: Mapping[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("#"):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _leaves(cfg: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in cfg.items():
        if isinstance(value, Mapping):
            yield from _leaves(value, f"{prefix}{key}#")
        else:
            yield f"{prefix}{key}", value


def check_bundle_files(bundles: Sequence[Bundle], overrides: Mapping[str, Any] | None = None) -> None:
    """Raise ``ValueError`` naming the file, key and fix when a bundle's YAML (a person may edit
    it) does not parse, or holds a value the training would fail on (``num_epochs: abc``,
    ``learning_rate: -1``): found before anything is trained or moved, not as a traceback of the
    training process. Keys an override sets are not judged (the override wins). Values are judged
    in the project's own bundles only; other templates' files only need to parse."""
    given = {str(k).rpartition(":")[2]: str(k).rpartition(":")[0] for k in (overrides or {})}
    problems: list[str] = []
    from auto3dseg.bundles.config import BUNDLE_YAML_FIX, read_bundle_yaml

    for b in bundles:
        files = {}
        for f in sorted((b.path / "configs").glob("*.y*ml")):
            data = read_bundle_yaml(f)
            if not data and f.name == "hyper_parameters.yaml":
                raise ValueError(f"{f}: no settings (an emptied file?); {BUNDLE_YAML_FIX}")
            files[f] = data
        if not any("output_activation" in d for d in files.values()):
            continue  # another template's bundle (MONAI's official ones): its keys mean what it says they mean
        for f, data in files.items():
            for key, value in _leaves(data):
                rule = _KNOWN_VALUES.get(key.split("#")[-1])
                if rule is None or (isinstance(value, str) and value[:1] in "$@%"):
                    continue  # an expression: the preflight judges what the engine makes of it
                if key in given and given[key] in ("", b.algo):
                    continue
                if not rule[0](value):
                    problems.append(f"{f}: {key}: {_text(value)}: expected {rule[1]}, e.g. {key.split('#')[-1]}: "
                                    f"{rule[2]}; fix the file (or give --override {b.algo}:{key}=...)")
    if problems:
        raise ValueError("\n".join(problems) + "\nnothing was trained")


def check_overrides(bundles: Sequence[Bundle], overrides: Mapping[str, Any], algos: Iterable[str] = ()) -> None:
    """Raise ``ValueError`` for an override whose key no selected bundle of its network has,
    or whose ``ALGO:`` prefix names no network (the message lists the nearest valid keys),
    or whose value is not of the type the key holds (one line naming the override, what is
    expected and an example).

    Parameters
    ----------
    bundles : sequence of Bundle
        The bundles about to train.
    overrides : mapping
        ``{"key": value, "algo:key": value}`` as given on the command line.
    algos : iterable of str
        Other network names a prefix may name (bundles of the work_dir not selected now).
    """
    names = {b.algo for b in bundles} | set(algos)
    problems: list[str] = []
    types: list[str] = []
    for raw in overrides:
        prefix, sep, key = str(raw).rpartition(":")
        if sep and prefix not in names:
            near = difflib.get_close_matches(prefix, sorted(names), n=3)
            problems.append(f"--override {raw}=...: no network {prefix!r} in this work_dir"
                            + (f" (did you mean {' or '.join(near)}?)" if near else "")
                            + f"; networks: {', '.join(sorted(names))}")
            continue
        for b in bundles:
            if sep and b.algo != prefix:
                continue
            keys = bundle_keys(b.path)
            if key not in keys:
                near = difflib.get_close_matches(key, sorted(keys), n=3, cutoff=0.6)
                problems.append(f"--override {raw}=...: {b.name} has no key {key!r}"
                                + (f"; did you mean {' or '.join(near)}?" if near else "")
                                + f" (every key: {b.path / 'configs'}/*.yaml; nested keys as a#b)")
                break  # one message per override is enough
            cfg = _config(b.path)
            current = _lookup(cfg, key) if key in set(_flatten(cfg)) else ENGINE_DEFAULTS.get(key)
            wrong = override_value_problem(str(raw), overrides[raw], current, b.name)
            if wrong:
                types.append(f"{wrong}; nothing was trained")
                break
    if problems:
        raise ValueError("unknown training override(s), nothing was trained:\n  " + "\n  ".join(problems + types))
    if types:
        raise ValueError("\n".join(types))


def _table_of(dl: Mapping[str, Any]) -> tuple[list[str], list[int]]:
    table = dl.get("class_table") or []
    return [str(r["name"]) for r in table], [int(r["id"]) for r in table]


def _names(class_names: list) -> list[str]:
    """Class names of a ``class_names`` list (names, or ``{name, index}`` rows)."""
    return [str(c.get("name")) if isinstance(c, Mapping) else str(c) for c in class_names]


def check_class_tables(bundles: Sequence[Bundle], datalist: str | os.PathLike, work_dir: str | os.PathLike) -> None:
    """Raise ``ValueError`` when a bundle was generated for another class table than
    ``datalist``'s (classes re-ordered, renamed, added or removed since)."""
    from auto3dseg.bundles.generate import official_class_config

    datalist = Path(datalist)
    try:
        dl = json.loads(datalist.read_text())
    except (OSError, ValueError):
        return  # the datalist's own problems are reported where it is read
    if not dl.get("class_table"):
        return
    names, ids = _table_of(dl)
    bad, reordered = [], []
    for b in bundles:
        cfg = _config(b.path)
        if "class_ids" in cfg and "class_names" in cfg:  # the project's templates
            have = (list(map(str, cfg["class_names"])), [int(i) for i in cfg["class_ids"]])
            if have != (names, ids):
                bad.append(f"{b.name}: classes {have[0]} (ids {have[1]})")
                reordered.append(sorted(zip(*have)) == sorted(zip(names, ids)))
        elif isinstance(cfg.get("class_names"), list):  # MONAI's official templates: names from input.yaml
            have_names = _names(cfg["class_names"])
            if have_names != (now := _names(official_class_config(dl)[0]["class_names"])):
                bad.append(f"{b.name}: class_names {have_names}")
                reordered.append(sorted(have_names) == sorted(now))
    if bad:
        regenerate = (f"run_auto3dseg.py --mode generate --datalist {datalist} --work_dir {work_dir} --force (old "
                      "bundles are moved to replaced/; then train again)")
        fix = f"Their outputs would be read as the wrong classes. Regenerate them: {regenerate}"
        if all(reordered):
            fix = (f"Only the order of the rows differs, and it is the order of the networks' output channels: put "
                   f"the class_table rows of {datalist} back in the bundles' order (or regenerate: {regenerate})")
        raise ValueError(
            f"bundles were generated for another class table than {datalist} has now (classes {names}, ids {ids}):\n  "
            + "\n  ".join(bad) + "\n" + fix)


def channel_rule_changes(bundles: Sequence[Bundle], datalist: str | os.PathLike) -> list[str]:
    """One line per bundle of the project's templates whose channels count other label values
    than this version derives from ``datalist``'s class table (``class_members``): bundles
    generated by an older version, before a class inside another (``er_mem_all`` in ``er``)
    counted in both channels. Trained as they are, such a channel learns those voxels as absent.

    >>> channel_rule_changes([], "no_such_datalist.json")
    []
    """
    from auto3dseg.engine.transforms import channel_members

    try:
        table = json.loads(Path(datalist).read_text()).get("class_table") or []
        now = channel_members(table)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return []  # the datalist's own problems are reported where it is read
    names = [str(r.get("name")) for r in table]
    out = []
    for b in bundles:
        have = _config(b.path).get("class_members")
        if not isinstance(have, list) or len(have) != len(now):
            continue  # another template's bundle, or another table (check_class_tables names that)
        diff = [f"{n} counts {sorted(h)} (now {m})" for n, h, m in zip(names, have, now)
                if sorted(int(v) for v in h) != sorted(m)]
        if diff:
            out.append(f"{b.name}: " + "; ".join(diff))
    return out


def older_channels_note(bundles: Sequence[Bundle], datalist: str | os.PathLike,
                        work_dir: str | os.PathLike) -> str | None:
    """A warning naming the trained ``bundles`` of :func:`channel_rule_changes` (their maps
    are usable, but those channels learnt the inner classes as absent); None when there are none."""
    changes = channel_rule_changes(bundles, datalist)
    if not changes:
        return None
    return (f"warning: {len(changes)} bundle(s) were trained by an older version whose channels leave out classes "
            "inside the channel's class (their maps under-segment it there):\n  " + "\n  ".join(changes)
            + f"\nFor better maps: run_auto3dseg.py --mode generate --work_dir {work_dir} --force, then train again")


#: image files as they come from a microscope or the CellSeg challenge: never what predict reads
RAW_IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


def _is_zarr(path: Path) -> bool:
    return any(p.lower().endswith(".zarr") for p in path.parts) or (path.is_dir() and any(
        (path / m).exists() for m in (".zgroup", ".zarray", "zarr.json")))


def raw_image_problem(images: Sequence[str | os.PathLike], kind: str | None = None) -> str | None:
    """One line when some of ``--images`` look like raw images (TIFF, PNG, JPEG, BMP, a Zarr
    store) rather than the NIfTI the converters write, saying how to convert them; else None.

    Parameters
    ----------
    images : sequence of path
        What ``--mode predict --images`` was given.
    kind : {"cells", "cellmap"} or None
        The work_dir's data (which converter to name); None names both.

    Examples
    --------
    >>> raw_image_problem(["new/a.nii.gz"]) is None
    True
    >>> raw_image_problem(["raw/cell_01.tif"], "cells").split(":")[0]
    'raw/cell_01.tif'
    """
    maps = [str(p) for p in images if str(p).rstrip("/").endswith(("_prob.zarr", "_prob.nii.gz"))]
    if maps:
        return (f"{maps[0]}: a probability map (what --mode ensemble and predict write), not an image; give the "
                "converted image it was predicted from (the converter's images/<name>.nii.gz)")
    raw = [str(p) for p in images if Path(p).suffix.lower() in RAW_IMAGE_SUFFIXES or _is_zarr(Path(p))]
    if not raw:
        return None
    more = f" (and {len(raw) - 1} more raw image(s))" if len(raw) > 1 else ""
    first = Path(raw[0])
    what = "a Zarr store" if _is_zarr(first) else f"a raw {first.suffix.lower().lstrip('.').upper()} image"
    cells = (f"python -m converters.cells.convert --images {first.parent} --output_dir OUT (images without a label "
             f"are converted for prediction), then --images OUT/images/{first.stem}.nii.gz")
    cellmap = ("python -m converters.cellmap.convert --data_root DIR (or --datasplit CSV) --test_manifest CSV "
               "--output_dir OUT (the test crops to predict), then --images OUT/images/<crop>.nii.gz")
    how = {"cells": cells, "cellmap": cellmap}.get(kind or "", f"2-D cells: {cells}; CellMap: {cellmap}")
    return (f"{raw[0]}: {what}{more}; --mode predict needs the converted image (the NIfTI the converter writes, "
            f"normalised as the training data were): convert it first: {how}")
