"""Bundles generated before the package layout changed, brought up to date when they are loaded.

Such a bundle's ``scripts/algo.py``, ``scripts/train.py`` and ``scripts/infer.py`` (and the copy of
the templates in ``<work_dir>/algorithm_templates``, which MONAI's ``algo_from_json`` imports)
import ``auto3dseg.bundle_algo``, ``auto3dseg.training`` and ``auto3dseg.inference``, modules that
no longer exist. :func:`migrate_work_dir` rewrites those imports to the new paths (each file
under a temporary name, then renamed; a log line names the bundle and the files), and
:func:`old_module_aliases` lets a legacy ``algo_object.pkl`` that names the old modules be
unpickled (the aliases exist only while it loads), so nothing imports the old paths afterwards.

Examples
--------
>>> rewrite_old_imports("from auto3dseg.training import run\\nimport auto3dseg.training_data\\n")[0]
'from auto3dseg.engine.training import run\\nimport auto3dseg.training_data\\n'
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["OLD_MODULES", "migrate_bundle", "migrate_work_dir", "old_module_aliases", "rewrite_old_imports"]

#: module paths of before the layout change → where their contents live now
OLD_MODULES = {
    "auto3dseg.bundle_algo": "auto3dseg.bundles.bundle_algo",
    "auto3dseg.training": "auto3dseg.engine.training",
    "auto3dseg.inference": "auto3dseg.engine.inference",
    "auto3dseg.classes": "datalists.cellmap_classes",
}
# a whole dotted name: not auto3dseg.training_data, not x_auto3dseg.training
_OLD = re.compile(r"(?<![\w.])(" + "|".join(re.escape(k) for k in OLD_MODULES) + r")(?!\w)")


def rewrite_old_imports(text: str) -> tuple[str, int]:
    """``text`` with every old module path replaced by the new one, and the number replaced."""
    return _OLD.subn(lambda m: OLD_MODULES[m.group(1)], text)


def _rewrite_file(path: Path) -> set[str]:
    """Rewrite ``path`` in place (temporary name + rename, same mode) when it names an old module;
    the old modules it named."""
    text = path.read_text()
    found = set(_OLD.findall(text))
    if not found:
        return found
    new, _ = rewrite_old_imports(text)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(new)
    os.chmod(tmp, path.stat().st_mode & 0o7777)
    os.replace(tmp, path)
    return found


def _migrate_scripts(folder: Path, label: str, log) -> list[str]:
    """Rewrite the ``*.py`` of ``folder``/scripts; log and return the files changed (relative to ``folder``)."""
    changed, names = [], set()
    for p in sorted((folder / "scripts").glob("*.py")):
        if found := _rewrite_file(p):
            changed.append(str(p.relative_to(folder)))
            names |= found
    if changed:
        moves = ", ".join(f"{old} → {OLD_MODULES[old]}" for old in sorted(names))
        log(f"note: {label} was generated before the package layout changed; updated {', '.join(changed)} to "
            f"the new module paths ({moves})")
    return changed


def migrate_bundle(bundle: str | os.PathLike, log=print) -> list[str]:
    """Rewrite the old module paths in ``<bundle>/scripts/*.py``; the files changed (none: up to date)."""
    bundle = Path(bundle)
    return _migrate_scripts(bundle, f"bundle {bundle.name} ({bundle})", log)


def migrate_work_dir(work_dir: str | os.PathLike, bundles: Sequence[str | os.PathLike] | None = None,
                     log=print) -> dict[str, list[str]]:
    """Migrate ``bundles`` (default: every bundle of ``work_dir``) and the templates copied into
    ``<work_dir>/algorithm_templates``; returns ``{name: files changed}`` for what changed."""
    from auto3dseg.orchestration.workdir import list_bundles

    work = Path(work_dir)
    paths = [Path(b) for b in bundles] if bundles is not None else [b.path for b in list_bundles(work)]
    out: dict[str, list[str]] = {}
    for b in paths:
        if changed := migrate_bundle(b, log):
            out[b.name] = changed
    templates = work / "algorithm_templates"
    for t in sorted(templates.glob("*/scripts")) if templates.is_dir() else []:
        if changed := _migrate_scripts(t.parent, f"template {t.parent.name} ({t.parent})", log):
            out[f"algorithm_templates/{t.parent.name}"] = changed
    return out


@contextlib.contextmanager
def old_module_aliases() -> Iterator[None]:
    """While open, the old module paths import as the new modules (for unpickling a legacy
    ``algo_object.pkl``); afterwards they are gone again."""
    added = []
    for old, new in OLD_MODULES.items():
        if old not in sys.modules:
            sys.modules[old] = importlib.import_module(new)
            added.append(old)
    try:
        yield
    finally:
        for old in added:
            sys.modules.pop(old, None)
