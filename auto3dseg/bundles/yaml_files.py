"""A bundle's YAML files, as a person may have edited them: read with every error naming the
file and line (a key given twice included), overridden with ``a#b=value`` keys, relocated
when the bundle was copied, and written atomically.

>>> apply_overrides({"network": {"init_filters": 32}}, {"network#init_filters": "16"})
{'network': {'init_filters': 16}}
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["BUNDLE_YAML_FIX", "apply_overrides", "load_bundle_config", "read_bundle_yaml", "read_yaml_file",
           "relocate", "write_yaml_atomic"]


def _parse_value(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return yaml.safe_load(v)
        except yaml.YAMLError:
            return v
    return v


def apply_overrides(cfg: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Set ``key`` or nested ``a#b`` keys; string values are read as YAML (``"[64,64,32]"``).

    >>> apply_overrides({"network": {"dsdepth": 4}, "num_epochs": 9}, {"network#dsdepth": "2", "num_epochs": 3})
    {'network': {'dsdepth': 2}, 'num_epochs': 3}
    """
    out = dict(cfg)
    for key, value in overrides.items():
        parts = str(key).split("#")
        node = out
        for p in parts[:-1]:
            node[p] = dict(node.get(p) or {})
            node = node[p]
        node[parts[-1]] = _parse_value(value)
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a mapping key given twice (YAML would keep the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (also on line {seen[key].line + 1}): YAML would keep the "
                    "last one without a word; keep one", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def read_yaml_file(path: str | os.PathLike, fix: str = "fix the file there") -> Any:
    """A YAML file a person may have edited; a syntax error, or a key given twice in one mapping,
    is a ``ValueError`` naming the file, line and column, and ``fix``.

    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "hp.yaml"
    >>> _ = f.write_text("learning_rate: [1e-4")
    >>> read_yaml_file(f)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: .../hp.yaml:1:21: not valid YAML (expected ',' or ']', but got '<stream end>'); fix the file there
    """
    try:
        with open(path) as fh:
            return yaml.load(fh, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{where}: not valid YAML ({problem}); {fix}") from None


#: what to do about a bundle's YAML file that cannot be read
BUNDLE_YAML_FIX = ("fix the file there, or generate the bundle again (--mode generate --force moves this one to "
                   "replaced/)")


def read_bundle_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """One YAML file of a bundle as a dict (an empty file gives ``{}``); a syntax error or a file
    holding something other than ``KEY: VALUE`` lines is a ``ValueError`` naming the file and the fix.

    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "hp.yaml"
    >>> _ = f.write_text("- 1e-4")
    >>> read_bundle_yaml(f)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: .../hp.yaml: holds list, not KEY: VALUE lines; fix the file there, or generate ...
    """
    data = read_yaml_file(path, BUNDLE_YAML_FIX) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: holds {type(data).__name__}, not KEY: VALUE lines; {BUNDLE_YAML_FIX}")
    return dict(data)


def load_bundle_config(config_file: str | Sequence[str], overrides: Mapping[str, Any] | None = None) -> dict:
    """Read a bundle's YAML file(s) (comma-separated string or list, later files win)
    and apply ``overrides``. Comma-separated lists are what MONAI's launcher passes."""
    files = config_file.split(",") if isinstance(config_file, str) else list(config_file)
    cfg: dict[str, Any] = {}
    for f in files:
        f = f.strip().strip("'\"")
        if not f:
            continue
        cfg.update(read_bundle_yaml(f))
    if not cfg and any(str(f).strip() for f in files):
        raise ValueError(f"{', '.join(str(f).strip() for f in files)}: no settings (an emptied file?); "
                         f"{BUNDLE_YAML_FIX}")
    first = Path(files[0].strip().strip("'\"")).resolve() if files else None
    if first is not None and first.parent.name == "configs" and (first.parent.parent / "scripts").is_dir():
        cfg = relocate(cfg, first.parent.parent)
    if "patch_size" in (overrides or {}) and isinstance(_parse_value(overrides["patch_size"]), int):
        overrides = dict(overrides)
        overrides["patch_size"] = [int(overrides["patch_size"])] * int(cfg.get("spatial_dims", 3))
    return apply_overrides(cfg, overrides or {})


def relocate(cfg: dict[str, Any], bundle_dir: Path) -> dict[str, Any]:
    """Point ``bundle_root`` and a ``ckpt_path`` under it at ``bundle_dir`` when the bundle was
    moved or copied (a work_dir on another file system): a copy must never write into, or
    read from, the original's checkpoints.

    >>> relocate({"bundle_root": "/old/segresnet_0", "ckpt_path": "/old/segresnet_0/model"},
    ...          Path("/new/segresnet_0"))["ckpt_path"]
    '/new/segresnet_0/model'
    """
    old = cfg.get("bundle_root")
    old_root, new_root = Path(old or ""), Path(bundle_dir)
    if not old or old_root == new_root:
        return cfg
    out = dict(cfg, bundle_root=str(new_root))
    ckpt = cfg.get("ckpt_path")
    if ckpt:
        try:
            out["ckpt_path"] = str(new_root / Path(ckpt).relative_to(old_root))
        except ValueError:
            pass  # a checkpoint folder outside the bundle stays where it is
    return out


def write_yaml_atomic(path: str | os.PathLike, data: Any, header: str = "") -> None:
    """Write YAML to a temporary name in the same folder, then rename over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    with open(tmp, "w") as fh:
        if header:
            fh.write(header)
        yaml.safe_dump(data, fh, sort_keys=False, default_flow_style=None)
    os.replace(tmp, path)
