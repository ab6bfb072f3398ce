"""The package layout's contracts: the lower layers never import the pipeline, and the import
paths that bundles generated before the layout change use still resolve to the same objects."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("folder", ["converters", "datalists"])
def test_lower_layers_do_not_import_the_pipeline(folder):
    offenders = {str(p.relative_to(ROOT)): sorted(n for n in _imports(p) if n.split(".")[0] == "auto3dseg")
                 for p in (ROOT / folder).rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize("old, new, name", [
    ("auto3dseg.bundle_algo", "auto3dseg.bundles.bundle_algo", "CellmapBundleAlgo"),
    ("auto3dseg.training", "auto3dseg.engine.training", "run"),
    ("auto3dseg.inference", "auto3dseg.engine.inference", "InferClass"),
    ("auto3dseg.classes", "datalists.cellmap_classes", "CELLMAP_CLASSES"),
])
def test_paths_of_earlier_bundles_still_resolve(old, new, name):
    assert getattr(importlib.import_module(old), name) is getattr(importlib.import_module(new), name)


def test_templates_import_the_new_paths():
    scripts = list((ROOT / "auto3dseg" / "bundles" / "algorithm_templates").glob("*/scripts/*.py"))
    assert len(scripts) >= 9
    for path in scripts:
        old = {n for n in _imports(path) if n in ("auto3dseg.bundle_algo", "auto3dseg.training",
                                                   "auto3dseg.inference")}
        assert not old, f"{path} imports {old}: new bundles should not depend on the re-exports"


def test_no_source_file_over_600_lines():
    sources = [p for folder in ("auto3dseg", "converters", "datalists") for p in (ROOT / folder).rglob("*.py")]
    sources.append(ROOT / "run_auto3dseg.py")
    long = {str(p.relative_to(ROOT)): n for p in sources if (n := len(p.read_text().splitlines())) > 600}
    assert long == {}
