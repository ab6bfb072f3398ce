"""``bench/gpu_check.sh --cpu-dry-run``: the GPU check's every code path on the CPU with tiny sizes,
so that the script a lent GPU runs in one shot cannot rot (about 3 minutes on 2 cores).

The run is real: the built-in data converted and analysed, each network's bundle config derived
from it and trained, validated and run over a volume, MONAI's official segresnet (when ``../shared``
holds it) stepped at the same patch, a 2-process torchrun (gloo) checked against its reference,
and ``--mode full`` taken to the submission. Its figures are CPU dry-run figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = ROOT.parent / "shared" / "monai_official_templates"


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """The dry run once, with ``$OUT`` set: (the finished process, the ``$OUT`` folder)."""
    base = tmp_path_factory.mktemp("gpu_check")
    out = base / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    env.pop("GPU_CHECK_OFFICIAL", None)
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--cpu-dry-run", "--work", str(base / "work")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    return proc, out


def test_dry_run_exits_zero_and_writes_the_table(dry_run):
    proc, out = dry_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    table = (out / "gpu_check.md").read_text()
    assert table in proc.stdout  # the same table on stdout and in $OUT
    assert table.startswith("## CPU dry run figures (NOT GPU figures): CPU: ")  # never passed off as GPU figures
    assert (out / "gpu_check_logs.txt").read_text().count("===== ") >= 8  # data (3), networks, ddp (2), full


def test_every_network_was_trained_validated_and_timed(dry_run):
    _, out = dry_run
    res = json.loads((out / "gpu_check.json").read_text())
    assert res["mode"] == "dry" and res["device"]["name"].startswith("CPU")
    lines = (out / "gpu_check.md").read_text().splitlines()
    for algo in ("segresnet", "dints", "swinunetr"):
        rows = res["pieces"][algo]["rows"]
        assert rows and {r["variant"] for r in rows} <= {"data patch", "default patch"}, rows
        for r in rows:
            assert r["s_per_iter"] > 0 and r["val_s"] > 0 and r["volume_s"] > 0 and r["val_crops"] == 3
            assert r["train_peak_mib"] > 0 and r["infer_peak_mib"] > 0 and r["loss"] > 0
        assert any(ln.startswith(f"| {algo}, data patch | ") for ln in lines)
    # patches derived as the bundles derive them (capped at 32 in the dry run; swinunetr's minimum is 64)
    assert res["pieces"]["segresnet"]["rows"][0]["patch"] == [32, 32, 32]
    assert [r["patch"] for r in res["pieces"]["swinunetr"]["rows"]] == [[64, 64, 64]]


def test_official_template_row_or_the_reason_it_was_skipped(dry_run):
    _, out = dry_run
    res = json.loads((out / "gpu_check.json").read_text())
    table = (out / "gpu_check.md").read_text()
    official = res["pieces"]["official"]
    if not (OFFICIAL / "segresnet" / "configs" / "hyper_parameters.yaml").is_file():
        assert official["status"].startswith("skipped: MONAI's official templates not found")
        assert "| MONAI official segresnet (step-level) | " in table
        return
    ours = {r["variant"]: r for r in res["pieces"]["segresnet"]["rows"]}
    for r in official["rows"]:
        assert r["patch"] == ours[r["variant"]]["patch"] and r["batch"] == ours[r["variant"]]["batch"]
        assert r["s_per_iter"] > 0 and r["volume_s"] > 0
    segresnet_row = next(ln for ln in table.splitlines() if ln.startswith("| segresnet, data patch | "))
    ratios = segresnet_row.split(" | ")[5].split(", ")
    assert len(ratios) == 3 and all(float(x) > 0 for x in ratios)


def test_torchrun_losses_equal_the_reference(dry_run):
    _, out = dry_run
    ddp = json.loads((out / "gpu_check.json").read_text())["pieces"]["ddp"]
    assert ddp["ok"] and ddp["processes"] == 2 and ddp["torchrun"]["world"] == 2
    assert ddp["torchrun"]["backend"] == "gloo"
    assert len(ddp["reference"]["losses"]) == len(ddp["torchrun"]["losses"]) == 2
    assert ddp["max_rel_diff"] <= 1e-4 < ddp["step_change"]  # the tolerance is far below one step's change
    assert "| torchrun (gloo) | " in (out / "gpu_check.md").read_text()


def test_full_run_ends_with_the_submission(dry_run):
    _, out = dry_run
    full = json.loads((out / "gpu_check.json").read_text())["pieces"]["full"]
    assert full["ok"] and full["rc"] == 0 and full["submission"]
    assert "--gpus cpu" in full["command"] and full["score"] is not None
    row = next(ln for ln in (out / "gpu_check.md").read_text().splitlines() if ln.startswith("| `--mode full"))
    assert "PASS" in row and "submission.zip written" in row
