"""Per-class post-processing parameters: packaged YAML ← user YAML ← overrides.

The packaged ``resources/postprocess.yaml`` explains every key. A user file has the
same layout and holds only what it changes.

Examples
--------
>>> params = load_postprocess_params(overrides={"mito": {"threshold": 0.4}})
>>> params_for(params, "mito")["threshold"], params_for(params, "er")["threshold"]
(0.4, 0.5)
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from importlib import resources
from typing import Any

import yaml

from datalists.cellmap_classes import class_by_name

__all__ = ["INSTANCE_KEYS", "PARAM_TYPES", "acting_params", "load_postprocess_params", "params_for", "refuse_empty_file"]

#: every key a class entry may hold, with the type its value must have
PARAM_TYPES: dict[str, tuple[type, ...]] = {
    "threshold": (int, float),
    "min_size_nm3": (int, float),
    "connectivity": (int,),
    "watershed": (bool,),
    "min_distance_nm": (int, float),
    "h_nm": (int, float),
}
_CONNECTIVITIES = (4, 6, 8, 18, 26)
#: the keys that act only on instance classes (how a mask is split into objects)
INSTANCE_KEYS = ("connectivity", "min_size_nm3", "watershed", "min_distance_nm", "h_nm")


class ParamsTypeError(TypeError, ValueError):
    """A post-processing parameter file holds a value of the wrong type (a ``ValueError`` too,
    so that a command line reports it as the user's mistake it is)."""


def expected_type(types: tuple[type, ...]) -> str:
    """What a value of ``types`` looks like, for messages.

    Examples
    --------
    >>> expected_type((int,)), expected_type((int, float)), expected_type((bool,))
    ('a whole number (e.g. 16)', 'a number (e.g. 0.5)', 'true or false')
    """
    if bool in types:
        return "true or false"
    return "a number (e.g. 0.5)" if float in types else "a whole number (e.g. 16)"


def _check(entries: Any, source: str) -> dict[str, dict[str, Any]]:
    """Validate ``{class: {key: value}}`` read from ``source``; errors name both."""
    if entries is None:
        return {}
    if not isinstance(entries, Mapping):
        raise ParamsTypeError(f"{source}: expected a mapping of class name to parameters, got "
                              f"{type(entries).__name__}")
    checked: dict[str, dict[str, Any]] = {}
    for name, entry in entries.items():
        semantic = False
        if name != "default":
            try:
                semantic = not class_by_name(str(name)).instance
            except KeyError as err:
                raise ValueError(f"{source}: {err.args[0]}") from None
        if not isinstance(entry, Mapping):
            raise ParamsTypeError(f"{source}: entry {name!r} must be a mapping of parameters")
        unused = [k for k in entry if k in INSTANCE_KEYS] if semantic else []
        if unused:  # accepted, they would silently change nothing
            raise ValueError(f"{source}: {name} is a semantic class (scored as a mask, never split into objects): "
                             f"{', '.join(unused)} {'applies' if len(unused) == 1 else 'apply'} to instance classes only; remove them from {name!r} "
                             "(only threshold acts on it)")
        for key, value in entry.items():
            if key not in PARAM_TYPES:
                raise ValueError(f"{source}: unknown key {key!r} in {name!r}; known keys: {', '.join(PARAM_TYPES)}")
            # bool is an int in Python: reject it where a number is meant, and vice versa
            if not isinstance(value, PARAM_TYPES[key]) or (isinstance(value, bool) and bool not in PARAM_TYPES[key]):
                raise ParamsTypeError(f"{source}: {name}.{key} = {value!r} has the wrong type: expected "
                                      f"{expected_type(PARAM_TYPES[key])}")
            if key == "connectivity" and value not in _CONNECTIVITIES:
                raise ValueError(f"{source}: {name}.connectivity = {value} is not one of {_CONNECTIVITIES}")
            if key == "threshold" and not 0.0 <= value <= 1.0:
                raise ValueError(f"{source}: {name}.threshold = {value} is not in [0, 1]")
            if key in ("min_size_nm3", "min_distance_nm", "h_nm") and value < 0:
                raise ValueError(f"{source}: {name}.{key} = {value} is negative")
        checked[str(name)] = dict(entry)
    return checked


def _merge(base: dict[str, dict[str, Any]], new: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    merged = copy.deepcopy(base)
    for name, entry in new.items():
        merged.setdefault(name, {}).update(entry)
    return merged


def load_postprocess_params(path: str | None = None, overrides: Mapping[str, Mapping[str, Any]] | None = None
                            ) -> dict[str, dict[str, Any]]:
    """Post-processing parameters per class name: packaged defaults ← ``path`` ← ``overrides``.

    Parameters
    ----------
    path : str, optional
        A YAML file with the layout of ``auto3dseg/resources/postprocess.yaml``
        (``default:`` and one entry per class), holding only the keys it changes.
    overrides : mapping, optional
        ``{class name: {key: value}}`` applied last (e.g. from a command line).

    Returns
    -------
    dict
        ``{"default": {...}, class name: {key: value, ...}}``; class entries hold only the
        keys set for that class: read them with :func:`params_for`.

    Raises
    ------
    ValueError
        On an unknown key or class name, or a value out of range; the message names the
        file (or ``overrides``) and the key.
    TypeError
        On a value of the wrong type (or an entry that is not a mapping), named likewise.

    Examples
    --------
    >>> load_postprocess_params()["default"]["connectivity"]
    26
    >>> load_postprocess_params(overrides={"mito": {"treshold": 0.4}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: overrides: unknown key 'treshold' in 'mito'; known keys: threshold, ...
    """
    packaged_path = "auto3dseg/resources/postprocess.yaml"
    text = resources.files("auto3dseg").joinpath("resources/postprocess.yaml").read_text()
    params = _check(yaml.safe_load(text), packaged_path)
    if path is not None:
        params = _merge(params, _check(read_user_yaml(path), str(path)))
    if overrides:
        params = _merge(params, _check(overrides, "overrides"))
    missing = set(PARAM_TYPES) - set(params.get("default", {}))
    if missing:
        raise ValueError(f"{packaged_path}: 'default' lacks {sorted(missing)}")
    return params


def read_user_yaml(path: str | os.PathLike[str]) -> Any:
    """A user's YAML file; a syntax error is a ``ValueError`` naming the file, line and column.

    >>> read_user_yaml("/nonexistent.yaml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: parameter file /nonexistent.yaml not found; check the path
    """
    from auto3dseg.bundles.config import read_yaml_file

    try:
        return read_yaml_file(path, "fix the file there (the packaged defaults show the layout)")
    except FileNotFoundError:
        raise FileNotFoundError(f"parameter file {path} not found; check the path") from None


def refuse_empty_file(path: str | os.PathLike[str], flag: str = "--postprocess_params") -> None:
    """Refuse a user's parameter file that holds nothing (empty, or comments only: a file not yet
    written or cut short): the run would use the packaged defaults while its user believes the
    file's values act. ``{}`` says "the packaged defaults" on purpose and is accepted.

    >>> import tempfile
    >>> f = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False); _ = f.write("# todo\\n"); f.close()
    >>> refuse_empty_file(f.name)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: --postprocess_params ...yaml holds no setting (empty, or comments only): ...
    """
    if read_user_yaml(path) is None:
        raise ValueError(f"{flag} {path} holds no setting (empty, or comments only): the packaged defaults would be "
                         "used as if it were not given; write the values it should change (the layout: "
                         "auto3dseg/resources/postprocess.yaml, or postprocess_cells.yaml for cells), or write {} "
                         "to mean the packaged defaults")


def acting_params(params: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``params`` without the keys that do nothing for their class (instance keys of a semantic
    class), as a file that :func:`load_postprocess_params` accepts must be written.

    >>> acting_params({"cyto": {"threshold": 0.4, "watershed": False}, "mito": {"watershed": True}})
    {'cyto': {'threshold': 0.4}, 'mito': {'watershed': True}}
    """
    out: dict[str, dict[str, Any]] = {}
    for name, entry in params.items():
        try:
            semantic = name != "default" and not class_by_name(str(name)).instance
        except KeyError:
            semantic = False
        out[str(name)] = {k: v for k, v in dict(entry).items() if not (semantic and k in INSTANCE_KEYS)}
    return out


def params_for(params: Mapping[str, Mapping[str, Any]], class_name: str) -> dict[str, Any]:
    """The complete parameters of one class: its own entry over ``default``.

    Examples
    --------
    >>> p = {"default": {"threshold": 0.5, "watershed": False}, "ves": {"watershed": True}}
    >>> params_for(p, "ves"), params_for(p, "er")
    ({'threshold': 0.5, 'watershed': True}, {'threshold': 0.5, 'watershed': False})
    """
    return {**params["default"], **params.get(class_name, {})}
