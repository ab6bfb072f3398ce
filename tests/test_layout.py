"""The package layout's contracts: the lower layers never import the pipeline, and a bundle
generated before the layout change (its scripts import the old module paths, which are gone) is
migrated when the pipeline loads it, and trains and ensembles."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import pickle
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import run_auto3dseg
from auto3dseg.bundles.migrate import OLD_MODULES, old_module_aliases

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


def _tiny_datalist(root: Path) -> Path:
    """Four 24³ training items (2 folds) and one testing image, random intensities and labels."""
    rng = np.random.default_rng(0)
    affine = np.diag([8.0, 8.0, 8.0, 1.0])
    items = []
    for i in range(5):
        nib.save(nib.Nifti1Image(rng.integers(20, 240, (24, 24, 24)).astype(np.uint8), affine), root / f"img{i}.nii.gz")
        nib.save(nib.Nifti1Image(rng.integers(0, 3, (24, 24, 24)).astype(np.uint8), affine), root / f"lab{i}.nii.gz")
        items.append({"image": f"img{i}.nii.gz", "label": f"lab{i}.nii.gz", "fold": i % 2})
    table = [{"id": 1, "name": "mito", "cellmap_id": 3, "instance": False, "parts": []},
             {"id": 2, "name": "nuc", "cellmap_id": 28, "instance": False, "parts": []}]
    dl = {"name": "tiny", "num_folds": 2, "labels": {"0": "background", "1": "mito", "2": "nuc"},
          "class_table": table, "training": items[:4], "testing": [{"image": items[4]["image"]}]}
    (root / "datalist.json").write_text(json.dumps(dl))
    return root / "datalist.json"


def _as_before_the_move(folder: Path) -> None:
    """Rewrite ``folder``/scripts/*.py to the imports bundles had before the layout change."""
    back = {new: old for old, new in OLD_MODULES.items()}
    for path in (folder / "scripts").glob("*.py"):
        text = path.read_text()
        for new, old in back.items():
            text = text.replace(new, old)
        path.write_text(text)


def test_a_bundle_of_before_the_move_trains_and_ensembles_without_the_old_modules(tmp_path, capsys):
    """A bundle whose scripts import auto3dseg.bundle_algo/training/inference (the modules are gone)
    is migrated when the pipeline loads it, then trains and ensembles."""
    for old in OLD_MODULES:
        assert importlib.util.find_spec(old) is None, f"{old} should be gone"
    (tmp_path / "data").mkdir()
    dl = _tiny_datalist(tmp_path / "data")
    work = tmp_path / "work"
    common = ["--datalist", str(dl), "--work_dir", str(work)]
    assert run_auto3dseg.main(["--mode", "analyze", *common, "--workers", "0"]) == 0
    assert run_auto3dseg.main(["--mode", "generate", *common, "--algos", "segresnet", "--num_fold", "1",
                               "--num_epochs", "1", "--patch_size", "16"]) == 0
    bundle = work / "segresnet_0"
    for folder in (bundle, work / "algorithm_templates" / "segresnet"):
        _as_before_the_move(folder)
    assert "from auto3dseg.training import run" in (bundle / "scripts" / "train.py").read_text()
    assert "from auto3dseg.bundle_algo import" in (work / "algorithm_templates/segresnet/scripts/algo.py").read_text()
    capsys.readouterr()
    rc = run_auto3dseg.main(["--mode", "train", *common, "--algos", "segresnet", "--override", "num_workers=0",
                             "--override", "num_iterations_per_epoch=1", "--override", "segresnet:network#init_filters=8",
                             "--override", "segresnet:network#dsdepth=2", "--override", "sw_batch_size=4", "--gpus", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "bundle segresnet_0" in out and "scripts/algo.py, scripts/infer.py, scripts/train.py" in out
    assert "auto3dseg.training → auto3dseg.engine.training" in out
    assert (bundle / "training_done.json").is_file() and (bundle / "model" / "model.pt").is_file()
    for folder in (bundle, work / "algorithm_templates" / "segresnet"):
        for path in (folder / "scripts").glob("*.py"):
            assert not {n for n in _imports(path) if n in OLD_MODULES}, path
    assert run_auto3dseg.main(["--mode", "ensemble", *common, "--algos", "segresnet"]) == 0
    manifest = json.loads((work / "ensemble_output" / "ensemble.json").read_text())
    assert len(manifest["items"]) == 1 and Path(manifest["items"][0]["probabilities"]).is_dir()
    assert not [m for m in sys.modules if m in OLD_MODULES]


def test_a_legacy_pickle_naming_the_old_modules_loads_under_the_aliases_only():
    from auto3dseg.bundles.bundle_algo import CellmapBundleAlgo

    data = pickle.dumps(CellmapBundleAlgo, protocol=0).replace(b"auto3dseg.bundles.bundle_algo", b"auto3dseg.bundle_algo")
    assert b"auto3dseg.bundle_algo\n" in data
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(data)
    with old_module_aliases():
        assert pickle.loads(data) is CellmapBundleAlgo
    assert "auto3dseg.bundle_algo" not in sys.modules


def test_templates_import_the_new_paths():
    scripts = list((ROOT / "auto3dseg" / "bundles" / "algorithm_templates").glob("*/scripts/*.py"))
    assert len(scripts) >= 9
    for path in scripts:
        old = {n for n in _imports(path) if n in OLD_MODULES}
        assert not old, f"{path} imports {old}: new bundles should not depend on the re-exports"


def test_no_source_file_over_600_lines():
    sources = [p for folder in ("auto3dseg", "converters", "datalists") for p in (ROOT / folder).rglob("*.py")]
    sources.append(ROOT / "run_auto3dseg.py")
    long = {str(p.relative_to(ROOT)): n for p in sources if (n := len(p.read_text().splitlines())) > 600}
    assert long == {}


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "bench").glob("*.py")
                                          if "__main__" in p.read_text()))
def test_every_bench_script_answers_help(script):
    """`python bench/measure.py --help` ran "--help" as the command to measure (a traceback)."""
    import subprocess

    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "usage" in proc.stdout.lower() and "Traceback" not in proc.stderr, (
        proc.stdout[-500:] + proc.stderr[-2000:])


def test_measure_names_a_command_that_is_not_there():
    import subprocess

    run = [sys.executable, str(ROOT / "bench" / "measure.py")]
    for extra, rc, says in ((["nosuchcmd_x"], 127, "command not found: nosuchcmd_x"),
                            (["--", "nosuchcmd_x"], 127, "command not found: nosuchcmd_x"),
                            (["--"], 2, "no command to measure"),
                            ([str(ROOT / "README.md")], 126, "cannot run"), ([str(ROOT)], 126, "a folder, not a command")):
        proc = subprocess.run(run + extra, capture_output=True, text=True, timeout=120)
        assert proc.returncode == rc and says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    # the measured command's failure is the script's: a CI step measuring it sees it fail
    proc = subprocess.run(run + [sys.executable, "-c", "raise SystemExit(3)"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 3 and "returncode=3" in proc.stdout, proc.stdout + proc.stderr


def test_every_docstring_example_runs():
    """The examples in the docstrings are documentation a reader trusts: one had drifted from the
    code (a list of close class names) with nothing to tell."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "--doctest-modules", "-p", "no:cacheprovider",
                           "auto3dseg", "converters", "datalists"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert " passed" in proc.stdout.splitlines()[-1], proc.stdout[-300:]
