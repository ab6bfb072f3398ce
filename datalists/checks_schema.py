"""The JSON-Schema and ``format`` checks of a datalist, with a fix for each known key."""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

from .schema import (
    _ITEM_EXAMPLE,
    _KEY_FIXES,
    _KNOWN_ITEM_KEYS,
    _REQUIRED_FIXES,
    _SECTIONS,
    _TRAIN_EXAMPLE,
    FORMAT_PREFIX,
    FORMAT_VERSION,
    _json_path,
    _json_type,
    _short,
    _type_words,
    load_schema,
)


class SchemaChecks:
    """The JSON-Schema and ``format`` checks of a datalist, with a fix for each known key.

    Mixed into the validator's checker, which provides ``data``, ``src``, ``problem``, ``items``
    and ``desc``.
    """

    # ----------------------------------------------------------------- schema

    def check_schema(self) -> None:
        from jsonschema import Draft202012Validator

        validator = Draft202012Validator(load_schema())
        errors = sorted(
            validator.iter_errors(self.data),
            key=lambda e: ([str(p) for p in e.absolute_path], str(e.validator)),
        )
        list_of_strings_done: set[str] = set()
        joined_done: set[tuple[Any, ...]] = set()
        seen: set[str] = set()
        for err in errors:
            path = list(err.absolute_path)
            section = path[0] if path and path[0] in _SECTIONS else None
            in_item = section is not None and len(path) >= 2 and isinstance(path[1], int)

            # "testing": ["images/a.nii.gz", ...]: one message for the whole list.
            if in_item and len(path) == 2 and err.validator == "type" and isinstance(err.instance, str):
                if section in list_of_strings_done:
                    continue
                list_of_strings_done.add(section)
                example = _ITEM_EXAMPLE if section == "testing" else _TRAIN_EXAMPLE
                self.problem(
                    f"'{section}'",
                    f"{section} must be a list of objects like {example}; got a list of strings "
                    f"(e.g. {section}[{path[1]}] = {err.instance!r}); wrap each path in an object",
                )
                continue

            # A string where datafold_read would join it with the data root.
            if (
                in_item and len(path) >= 3 and path[2] not in _KNOWN_ITEM_KEYS
                and isinstance(err.instance, str)
            ):
                key = path[2]
                if (section, path[1], key) in joined_done:
                    continue
                joined_done.add((section, path[1], key))
                root = str(self.root) if self.root is not None else "<dataroot>"
                self.problem(
                    self.desc(section, path[1]),
                    f"'{_json_path(path[2:])}' is a string ({err.instance!r}); MONAI's datafold_read "
                    f"joins every string in an item with the data root (it would become "
                    f"{os.path.join(root, err.instance)!r}); move '{key}' to a side file keyed by "
                    f"image path (the datalist's items_file) or store it as a number",
                )
                continue

            if in_item:
                where = self.desc(section, path[1])
                field = path[2:]
            else:
                where = f"'{_json_path(path)}'" if path else "top level"
                field = []
            text = self._schema_words(err, field, path)
            message = f"{self.src}: {where}: {text}"
            if message not in seen:
                seen.add(message)
                self.problems.append(message)

    def _schema_words(self, err: Any, field: list[Any], path: list[Any]) -> str:
        name = f"'{_json_path(field)}'" if field else ""
        subject = name or "it"
        key = next((p for p in reversed(path) if isinstance(p, str)), None)
        fix = _KEY_FIXES.get(key or "")
        v, inst = err.validator, err.instance
        if v == "required":
            missing = [k for k in err.validator_value if isinstance(inst, dict) and k not in inst]
            k = missing[0] if missing else err.validator_value[0]
            text = f"{name + ' ' if name else ''}has no '{k}' key"
            fix = _REQUIRED_FIXES.get(k)
        elif v == "type":
            text = f"{subject} must be {_type_words(err.validator_value)}, got {_json_type(inst)} {_short(inst)}"
        elif v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
            op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[v]
            text = f"{subject} must be {op} {err.validator_value}, got {_short(inst)}"
        elif v == "minItems":
            text = (f"{subject} is empty" if not inst else f"{subject} has {len(inst)} values")
            text += f"; it needs at least {err.validator_value}"
            if path == ["training"]:
                fix = f"add at least one training item like {_TRAIN_EXAMPLE}"
        elif v == "maxItems":
            text = f"{subject} has {len(inst)} values; at most {err.validator_value} are allowed"
        elif v == "minLength":
            text = f"{subject} is an empty string"
        elif v == "pattern":
            if key == "labels" or (path and path[0] == "labels"):
                text = f"labels key {inst!r} is not a class id"
                fix = "keys must be class ids written as whole numbers: '0', '1', ..."
            else:
                text = f"{subject} is {inst!r}, which does not have the form {err.validator_value!r}"
        elif v == "uniqueItems":
            dups = sorted({json.dumps(x) for x, n in Counter(json.dumps(y) for y in inst).items() if n > 1})
            text = f"{subject} repeats {', '.join(dups)}"
            fix = "list each id once"
        else:
            text = err.message
        return f"{text}; {fix}" if fix else text

    # ----------------------------------------------------------------- format

    def check_format(self) -> None:
        fmt = self.data.get("format")
        if isinstance(fmt, str) and fmt.startswith(FORMAT_PREFIX):
            version = fmt[len(FORMAT_PREFIX):]
            if version.isdigit() and int(version) > FORMAT_VERSION:
                self.problem(
                    "'format'",
                    f"format version {version} is newer than this validator understands "
                    f"({FORMAT_VERSION}); update the project or re-convert with this version",
                )
