"""Bad input, round 3: constant training images stop the analysis; training children die with the
run that launched them and the lock names a live holder (or says its holder is dead)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import run_auto3dseg
from auto3dseg.analysis.analyze import DATASTATS, analyze
from auto3dseg.analysis.constant_images import ALLOW_ENV, ConstantImageError

ROOT = Path(__file__).resolve().parents[1]
CLASS_TABLE = [{"id": 1, "name": "a", "cellmap_id": 1, "instance": False, "parts": []},
               {"id": 2, "name": "b", "cellmap_id": 2, "instance": False, "parts": []}]


def _tiny_datalist(root: Path, images: list[np.ndarray]) -> Path:
    """A NIfTI datalist of one training item per image (random 3-class labels), 2 folds."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    items = []
    for i, img in enumerate(images):
        lab = rng.integers(0, 3, img.shape).astype(np.uint8)
        nib.save(nib.Nifti1Image(img, np.diag([8.0, 8.0, 8.0, 1.0])), root / f"img{i}.nii.gz")
        nib.save(nib.Nifti1Image(lab, np.diag([8.0, 8.0, 8.0, 1.0])), root / f"lab{i}.nii.gz")
        items.append({"image": f"img{i}.nii.gz", "label": f"lab{i}.nii.gz", "fold": i % 2})
    dl = {"name": "tiny", "num_folds": 2, "labels": {"0": "background", "1": "a", "2": "b"},
          "class_table": CLASS_TABLE, "training": items, "testing": []}
    path = root / "datalist.json"
    path.write_text(json.dumps(dl))
    return path


def _images(*kinds: str) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    out = []
    for k in kinds:
        if k == "zero":
            out.append(np.zeros((16, 16, 16), np.uint8))
        elif k == "flat":
            out.append(np.full((16, 16, 16), 77, np.uint8))
        else:
            out.append(rng.integers(20, 240, (16, 16, 16)).astype(np.uint8))
    return out


# --------------------------------------------------------------------------- case 2: constant images
def test_all_zero_and_constant_training_images_stop_the_analysis(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    dl = _tiny_datalist(tmp_path / "data", _images("ok", "zero", "ok", "flat"))
    with pytest.raises(ConstantImageError) as err:
        analyze(dl, tmp_path / "work", workers=0)
    msg = str(err.value)
    assert "\n" not in msg and str(dl) in msg
    # the all-zero image (MONAI's analysis skips it) and the constant 77 one (min == max), by item and value
    assert "training item 1 img1.nii.gz (every voxel 0" in msg and "training item 3 img3.nii.gz (every voxel 77" in msg
    assert "img0" not in msg and "img2" not in msg
    assert "train on nothing" in msg and "Remove them from the datalist" in msg and ALLOW_ENV in msg
    assert not (tmp_path / "work" / DATASTATS).exists()  # nothing a later step would trust
    # through the CLI: one line on stderr, exit 2
    rc = run_auto3dseg.main(["--mode", "analyze", "--datalist", str(dl), "--work_dir", str(tmp_path / "w2"),
                             "--workers", "0"])
    err_text = capsys.readouterr().err
    assert rc == 2
    line = next(x for x in err_text.splitlines() if x.startswith("error:"))
    assert "img1.nii.gz" in line and "img3.nii.gz" in line and "constant" in line
    assert "--allow_constant_images" in line
    # the flag trains on them anyway (monkeypatch restores the variable the CLI sets)
    monkeypatch.setenv(ALLOW_ENV, "0")
    rc = run_auto3dseg.main(["--mode", "analyze", "--datalist", str(dl), "--work_dir", str(tmp_path / "w3"),
                             "--workers", "0", "--allow_constant_images"])
    assert rc == 0 and (tmp_path / "w3" / DATASTATS).is_file()
    assert "WARNING: training on constant images anyway" in capsys.readouterr().err


def test_constant_images_trained_anyway_are_loud_in_the_review(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ALLOW_ENV, "1")
    dl = _tiny_datalist(tmp_path / "data", _images("ok", "zero", "ok", "ok"))
    stats = analyze(dl, tmp_path / "work", workers=0)
    assert stats.is_file()
    assert "WARNING: training on constant images anyway" in capsys.readouterr().err
    md = (tmp_path / "work" / "datastats_review.md").read_text()
    head = md.split("Source:")[0]
    assert "WARNING: 1 training item(s) have a constant image" in head and "img1.nii.gz (every voxel 0" in head
    review = json.loads((tmp_path / "work" / "datastats_review.json").read_text())
    assert [f for f in review["flags"] if f.startswith("[constant-image] training item 1 img1.nii.gz")]
    assert not [f for f in review["flags"] if f.startswith("[not-analysed]")]


def test_images_with_contrast_pass(tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    dl = _tiny_datalist(tmp_path / "data", _images("ok", "ok"))
    assert analyze(dl, tmp_path / "work", workers=0).is_file()
    review = json.loads((tmp_path / "work" / "datastats_review.json").read_text())
    assert review["constant_images"] == []


# --------------------------------------------------------------------------- case 1: training children die with the run
_PARENT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from auto3dseg.orchestration.locks import bundle_lock
    from auto3dseg.orchestration.train_bundles import launch_training

    bundle, child = Path(sys.argv[1]), sys.argv[2:]
    with bundle_lock(bundle) as lock:
        proc = launch_training(child, lock.child_env(os.environ.copy()), bundle, lock)
        print(proc.pid, flush=True)
        for line in proc.stdout:  # as train_bundles does: relay the child's output until it ends
            print(line, end="", flush=True)
""")

# the training's rank 0: takes the bundle lock (inherited from the parent run), says it is up, trains "for ever"
_TRAINING = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    from auto3dseg.orchestration.lifetime import die_with_torchrun
    from auto3dseg.orchestration.locks import bundle_lock
    if "--ignore-term" in sys.argv:  # a child that would survive its parent's death
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_torchrun()  # as auto3dseg.engine.training.train does first
    rank = int(os.environ.get("RANK", "0"))
    with bundle_lock(Path(sys.argv[1])) if rank == 0 else open(os.devnull):
        Path(sys.argv[2], f"rank{rank}.pid").write_text(str(os.getpid()))
        time.sleep(120)
""")


def _start_parent(tmp_path: Path, child: list[str]) -> tuple[subprocess.Popen, Path, Path]:
    bundle, pids = tmp_path / "segresnet_0", tmp_path / "pids"
    bundle.mkdir()
    pids.mkdir()
    (tmp_path / "parent.py").write_text(_PARENT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("AUTO3DSEG_LOCK_TOKENS", None)
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py"), str(bundle), *child], cwd=str(ROOT),
                              env=env, stdout=subprocess.PIPE, text=True)
    return parent, bundle, pids


def _wait_for(pids: Path, names: list[str], parent: subprocess.Popen, timeout: float = 60) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {n: int((pids / f"{n}.pid").read_text()) for n in names if (pids / f"{n}.pid").is_file()
                 and (pids / f"{n}.pid").read_text()}
        if len(found) == len(names):
            return found
        assert parent.poll() is None, "the parent run ended before its training started"
        time.sleep(0.1)
    raise AssertionError(f"the training processes {names} did not start in {timeout} s")


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    from auto3dseg.orchestration.locks import pid_alive

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if pid_alive(p)]


def _kill_all(pids) -> None:
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_training_child_dies_when_its_run_is_killed(tmp_path):
    from auto3dseg.orchestration.locks import bundle_lock

    (tmp_path / "train.py").write_text(_TRAINING)
    parent, bundle, pids = _start_parent(tmp_path, [sys.executable, str(tmp_path / "train.py"),
                                                    str(tmp_path / "segresnet_0"), str(tmp_path / "pids")])
    child = _wait_for(pids, ["rank0"], parent)["rank0"]
    try:
        assert json.loads((bundle / ".train.lock").read_text())["children"][0]["pid"] == child
        parent.kill()  # kill -9 of run_auto3dseg.py only
        parent.wait()
        assert _gone_within([child], 5) == [], "the training child outlived its killed parent"
        with bundle_lock(bundle, log=lambda *a: None):  # and the bundle is free again
            pass
    finally:
        _kill_all([child])


def _start_torchrun(tmp_path: Path) -> tuple[subprocess.Popen, Path, int, list[int]]:
    """A run whose training is torchrun with two workers (the fake rank above): the run, the
    bundle, torchrun's pid and the workers' pids once both are up."""
    (tmp_path / "train.py").write_text(_TRAINING)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2", "--standalone",
           str(tmp_path / "train.py"), str(tmp_path / "segresnet_0"), str(tmp_path / "pids")]
    parent, bundle, pids = _start_parent(tmp_path, cmd)
    torchrun = int(parent.stdout.readline())
    return parent, bundle, torchrun, list(_wait_for(pids, ["rank0", "rank1"], parent).values())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_torchrun_workers_die_when_the_run_is_killed(tmp_path):
    parent, _, torchrun, workers = _start_torchrun(tmp_path)
    try:
        parent.kill()
        parent.wait()
        assert _gone_within([torchrun, *workers], 40) == [], "torchrun or its workers outlived the killed run"
    finally:
        _kill_all([*workers, torchrun])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_torchrun_workers_die_when_torchrun_itself_is_killed(tmp_path):
    from auto3dseg.orchestration.locks import bundle_lock

    parent, bundle, torchrun, workers = _start_torchrun(tmp_path)
    try:
        os.kill(torchrun, signal.SIGKILL)  # torchrun cannot stop its workers: they must stop themselves
        assert _gone_within(workers, 20) == [], "torchrun's workers outlived it"
        parent.wait(timeout=30)  # the run sees its training end, and releases the bundle
        with bundle_lock(bundle, log=lambda *a: None):
            pass
    finally:
        _kill_all([*workers, torchrun])
        if parent.poll() is None:
            parent.kill()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG are Linux's")
def test_lock_names_the_live_child_when_its_recorded_holder_is_dead(tmp_path):
    from auto3dseg.orchestration.locks import LockBusy, bundle_lock

    (tmp_path / "train.py").write_text(_TRAINING)
    parent, bundle, pids = _start_parent(tmp_path, [sys.executable, str(tmp_path / "train.py"),
                                                    str(tmp_path / "segresnet_0"), str(tmp_path / "pids"),
                                                    "--ignore-term"])
    child = _wait_for(pids, ["rank0"], parent)["rank0"]
    try:
        parent.kill()
        parent.wait()
        time.sleep(0.5)
        with pytest.raises(LockBusy) as err:
            bundle_lock(bundle, log=lambda *a: None).acquire()
        msg = str(err.value)
        assert "\n" not in msg
        assert f"pid {parent.pid} on" in msg and "is dead" in msg  # the recorded holder, said to be dead
        assert f"still running in pid {child} (" in msg and f"kill {child}" in msg  # the live one, and what to do
    finally:
        _kill_all([child])
    assert _gone_within([child], 5) == []
    notes = []
    with bundle_lock(bundle, log=notes.append):  # the child gone: the lock is taken over, saying whose it was
        pass
    assert any(f"pid {parent.pid}" in n and "stale" in n for n in notes)


def test_a_lock_that_cannot_be_recorded_names_its_file_and_is_not_held(tmp_path, monkeypatch):
    """A full disk when a step's lock was recorded said "(unknown file): No space left on device"."""
    import errno

    from auto3dseg.orchestration import locks
    from converters.outputs import os_error_message

    def full(*_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(locks.os, "pwrite", full)
    with pytest.raises(OSError) as info:
        locks.step_lock(tmp_path, "ensemble").acquire()
    assert info.value.filename == str(tmp_path / ".ensemble.lock")
    assert f"{tmp_path / '.ensemble.lock'}: No space left on device" in os_error_message(info.value)
    monkeypatch.undo()
    with locks.step_lock(tmp_path, "ensemble", wait=0):  # the failed run holds nothing
        pass


def test_step_locks_name_the_mode_that_runs_them(tmp_path):
    """Stale-lock notes named "--mode cv" and "--mode tune", which do not exist."""
    from auto3dseg.orchestration.locks import step_lock

    assert step_lock(tmp_path, "tune").what.startswith("--mode tune_postprocess of ")
    assert "--mode oof" in step_lock(tmp_path, "cv").what and "--mode cv" not in step_lock(tmp_path, "cv").what
    assert step_lock(tmp_path, "ensemble").what == f"--mode ensemble of {tmp_path}"


def test_a_stale_lock_note_names_the_command_that_held_it(tmp_path):
    """tune_postprocess takes the oof step's lock: its stale note said "a previous --mode oof"."""
    import json

    from auto3dseg.orchestration.locks import step_lock

    (tmp_path / ".oof.lock").write_text(json.dumps({"pid": 999999, "host": "h", "started": "then", "token": "t",
                                                    "command": "run_auto3dseg.py --mode tune_postprocess"}))
    notes = []
    with step_lock(tmp_path, "oof", log=notes.append):
        pass
    assert len(notes) == 1 and "--mode tune_postprocess" in notes[0] and str(tmp_path / ".oof.lock") in notes[0]
    assert "previous --mode oof" not in notes[0] and "stale" in notes[0]
