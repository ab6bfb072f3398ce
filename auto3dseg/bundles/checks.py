"""Checks of generated bundles before they train or predict: overrides that name no key of
the bundle (a typo would be ignored silently), and a class table that changed since the
bundle was generated (its channels would be read as other classes)."""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from auto3dseg.orchestration.workdir import Bundle

__all__ = ["ENGINE_KEYS", "bundle_keys", "check_class_tables", "check_overrides"]

#: keys the project's training engine reads that a bundle's YAML may leave out
ENGINE_KEYS = frozenset({"device", "pretrained_ckpt", "cache", "cache_dir", "sw_memory_gb"})


def _config(bundle: Path) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    for f in sorted((bundle / "configs").glob("*")):
        if f.suffix in (".yaml", ".yml"):
            cfg.update(yaml.safe_load(f.read_text()) or {})
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


def check_overrides(bundles: Sequence[Bundle], overrides: Mapping[str, Any], algos: Iterable[str] = ()) -> None:
    """Raise ``ValueError`` for an override whose key no selected bundle of its network has,
    or whose ``ALGO:`` prefix names no network; the message lists the nearest valid keys.

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
    problems = []
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
    if problems:
        raise ValueError("unknown training override(s), nothing was trained:\n  " + "\n  ".join(problems))


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
    bad = []
    for b in bundles:
        cfg = _config(b.path)
        if "class_ids" in cfg and "class_names" in cfg:  # the project's templates
            have = (list(map(str, cfg["class_names"])), [int(i) for i in cfg["class_ids"]])
            if have != (names, ids):
                bad.append(f"{b.name}: classes {have[0]} (ids {have[1]})")
        elif isinstance(cfg.get("class_names"), list):  # MONAI's official templates: names from input.yaml
            have_names = _names(cfg["class_names"])
            if have_names != _names(official_class_config(dl)[0]["class_names"]):
                bad.append(f"{b.name}: class_names {have_names}")
    if bad:
        raise ValueError(
            f"bundles were generated for another class table than {datalist} has now (classes {names}, ids {ids}):\n  "
            + "\n  ".join(bad) + "\nTheir outputs would be read as the wrong classes. Regenerate them: run_auto3dseg.py "
            f"--mode generate --datalist {datalist} --work_dir {work_dir} --force (old bundles are moved to replaced/; "
            "then train again)")
