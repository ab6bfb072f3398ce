"""Side by side: our pipeline against nnU-Net v2 on the real SBEM mitochondria sample.

The data and split are those of ``bench/quality_sbem.py``: crop1 of ``../shared/data/em_sbem_mito``
(16 x 768 x 704 voxels at 40 x 6 x 6 nm), z slices 0-9 train, cut into three y-slabs (slab 0
validates, slabs 1-2 train: fold 0 of 2), slices 10-15 are held out and predicted by both.
The label is binary mito (instance id > 0).

* **ours**: ``run_auto3dseg.py --mode full`` with segresnet as quality_sbem.py drives it (patch 96,
  init_filters 16, 50 iterations per epoch, no loader workers) and ``--budget <minutes>m``,
  then ``--mode predict`` on the held-out slices with and without ``--tta``;
* **nnU-Net**: its own environment (``--setup``), used through its console commands only:
  ``nnUNetv2_plan_and_preprocess`` (3d_fullres; 2d if that fails), ``nnUNetv2_train ... -tr
  nnUNetTrainerBudget -device cpu`` (``bench/nnunet_trainer_budget.py``: nnU-Net's default
  trainer stopped at the same wall-clock budget, epochs of about a twentieth of it (4 to 50
  iterations), their number fitted to the budget after the first one as ours are, no final
  validation) with our fold written as its ``splits_final.json``, then ``nnUNetv2_predict``
  from ``checkpoint_final.pth`` with and without ``--disable_tta``. Its planner sizes patch
  and batch for a GPU's memory, whatever the device: on a CPU that is the main difference, so
  nnU-Net is also trained a second time from plans made with ``-gpu_memory_target``
  (``--small_target_gb``, 1 GB: a patch a CPU trains at nearer our pace), as a third column.

Both sides get the same threads (``--threads``: OMP/MKL threads and torch threads), no data
loader processes (ours ``num_workers=0``, nnU-Net ``nnUNet_n_proc_DA=0``), the same budget for
the training loop, and the same post-processing and scoring of the held-out slices
(``quality_sbem.scores``: Dice of the mito masks; instance F1 at IoU >= 0.5 of 26-connected
objects after ``auto3dseg.postprocess`` with mito's parameters). Reported: Dice and F1 with and
without test-time mirroring, training iterations reached and per second (from each training
log), predict times, TTA's cost and gain, and each side's planned patch, batch, spacing,
normalisation and network. Markdown to stdout, JSON to ``bench/out/compare_nnunet.json``; every
external command's output goes to ``<workdir>/logs/``.

Usage::

    .venv/bin/python bench/compare_nnunet.py --setup         # nnU-Net's env: ~1-3 min, ~2 GB
    .venv/bin/python bench/compare_nnunet.py --minutes 10    # the comparison (~55 min on 2 cores)
    .venv/bin/python bench/compare_nnunet.py --minutes 1 --skip_ours   # while developing
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
import quality_sbem as q  # noqa: E402  (the same data, split and scoring)
from nnunet_env import (NNUNET_VERSION, TRAINER, CommandFailed, env_tool, env_versions,  # noqa: E402
                        install_trainer, run, say, setup_env)

DATASET_ID, DATASET = 501, "Dataset501_SBEMMito"
TRAIN_SLICES = 10
ITERATIONS_PER_EPOCH = 50  # quality_sbem.py's num_iterations_per_epoch; nnU-Net's trainer gets the same


def thread_env(threads: int, extra: dict | None = None) -> dict:
    """This process's environment with every thread pool set to ``threads`` (and ``extra``)."""
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[k] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env


def cpu_prefix(threads: int) -> list[str]:
    """``taskset`` onto ``threads`` cores when the machine has more, so both sides get the same cores."""
    if (os.cpu_count() or 1) > threads and shutil.which("taskset"):
        return ["taskset", "-c", f"0-{threads - 1}"]
    return []


def machine() -> dict:
    """CPU model, cores and RAM of this machine."""
    info = {"platform": platform.platform(), "cores": os.cpu_count(), "cpu": platform.processor() or "?"}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
        info["cpu"] = m.group(1).strip() if m else info["cpu"]
        kb = int(re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.M).group(1))
        info["ram_gib"] = round(kb / 2 ** 20, 1)
    except (OSError, AttributeError):
        pass
    return info


# ---------------------------------------------------------------- nnU-Net's side

def write_nnunet_raw(raw: Path, em: np.ndarray, labels: np.ndarray) -> Path:
    """nnU-Net's raw dataset: the training y-slabs cut as quality_sbem.py cuts them, and the held-out
    slices; written as ours are (``_nifti``: array x, y, z, affine diag(6, 6, 40) nm), so nnU-Net reads
    z, y, x arrays at spacing 40, 6, 6. Returns the held-out image's path."""
    d = raw / DATASET
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, em.shape[1], 4).astype(int)
    for k in range(3):
        ys = slice(bounds[k], bounds[k + 1])
        q._nifti(d / "imagesTr" / f"slab{k}_0000.nii.gz", em[:TRAIN_SLICES, ys])
        q._nifti(d / "labelsTr" / f"slab{k}.nii.gz", (labels[:TRAIN_SLICES, ys] > 0).astype(np.uint8))
    q._nifti(d / "imagesTs" / "heldout_0000.nii.gz", em[TRAIN_SLICES:])
    (d / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "EM"}, "labels": {"background": 0, "mito": 1}, "numTraining": 3,
        "file_ending": ".nii.gz", "name": "SBEM mito (CDeep3M sample, crop1)",
        "description": "z slices 0-9 in three y-slabs; spacing (z, y, x) 40 x 6 x 6 nm, in the NIfTI affine",
        "spacing_zyx_nm": list(q.SPACING_ZYX)}, indent=1))
    return d / "imagesTs" / "heldout_0000.nii.gz"


def write_splits(preprocessed: Path) -> None:
    """Our folds as nnU-Net's ``splits_final.json``: fold 0 trains on slabs 1-2 and validates on slab 0."""
    splits = [{"train": ["slab1", "slab2"], "val": ["slab0"]}, {"train": ["slab0"], "val": ["slab1", "slab2"]}]
    (preprocessed / DATASET / "splits_final.json").write_text(json.dumps(splits, indent=1))


def nnunet_plans(preprocessed: Path, config: str, plans_name: str = "nnUNetPlans") -> dict:
    """The planner's choices for ``config`` from ``<plans_name>.json``."""
    plans = json.loads((preprocessed / DATASET / f"{plans_name}.json").read_text())
    c = plans["configurations"][config]
    arch = c.get("architecture", {})
    kw = arch.get("arch_kwargs", {})
    return {"config": config, "patch_size_zyx": c.get("patch_size"), "batch_size": c.get("batch_size"),
            "spacing_zyx": c.get("spacing"), "normalisation": c.get("normalization_schemes"),
            "network": arch.get("network_class_name", "?").rsplit(".", 1)[-1], "stages": kw.get("n_stages"),
            "features_per_stage": kw.get("features_per_stage"), "strides": kw.get("strides")}


def parse_nnunet_log(folder: Path) -> dict:
    """Epochs, iterations and seconds of the training loop from nnU-Net's ``training_log_*.txt``.

    Iterations are counted by the budget trainer (``done (...): E epochs, I iterations in S s``),
    since the budget may cut the last epoch short; without that line, epochs x iterations per epoch.
    """
    text = "\n".join(p.read_text(errors="replace") for p in sorted(folder.glob("training_log_*.txt")))
    epoch_s = [float(x) for x in re.findall(r"Epoch time: ([\d.]+) s", text)]
    sized = re.search(r"budget trainer: one iteration ([\d.]+) s: (\d+) training", text)
    ipe = int(sized.group(2)) if sized else ITERATIONS_PER_EPOCH
    done = re.search(r"budget trainer: done \((.+?)\): (\d+) epochs, (\d+) iterations in ([\d.]+) s", text)
    iterations = int(done.group(3)) if done else len(epoch_s) * ipe
    loop_s = float(done.group(4)) if done else sum(epoch_s)
    return {"epochs": len(epoch_s), "iterations_per_epoch": ipe, "iterations": iterations, "loop_seconds": loop_s,
            "it_per_s": iterations / max(loop_s, 1e-6), "stop": done.group(1) if done else "?",
            "seconds_per_iteration_measured": float(sized.group(1)) if sized else None}


def checkpoint_facts(path: Path, key: str) -> dict:
    """Parameters of the network whose weights are under ``key`` in the checkpoint at ``path``, and
    nnU-Net's test-time mirroring axes where the checkpoint records them."""
    import torch

    ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    unique = {v.data_ptr(): v.numel() for k, v in ckpt[key].items()  # nnU-Net's decoder also lists the encoder
              if isinstance(v, torch.Tensor) and v.is_floating_point() and "num_batches_tracked" not in k}
    axes = ckpt.get("inference_allowed_mirroring_axes")
    return {"parameters": int(sum(unique.values())), "mirror_axes": list(axes) if axes is not None else None}


def read_nifti_zyx(path: Path) -> np.ndarray:
    """A NIfTI written by nnU-Net, as a z, y, x array."""
    import nibabel as nib

    return np.asarray(nib.load(str(path)).dataobj).T


def nnunet_side(args, em: np.ndarray, labels: np.ndarray, work: Path, logs: Path) -> dict:
    """Plan and preprocess (nnU-Net's default plans, and with ``--small_target_gb`` a second plans file
    for that GPU memory target), then train fold 0 for the budget and predict the held-out slices
    with and without TTA for each plans file; score. Returns ``{plans_name: side}``."""
    env_dir = Path(args.env)
    if env_versions(env_dir).get("nnunetv2") != NNUNET_VERSION:
        raise CommandFailed(f"no nnU-Net {NNUNET_VERSION} environment in {env_dir}: run with --setup first")
    trainer = install_trainer(env_dir)  # the current bench/nnunet_trainer_budget.py
    shutil.rmtree(work, ignore_errors=True)
    for old in logs.glob("nnunet_*.log"):
        old.unlink()
    raw, pre, res = work / "nnUNet_raw", work / "nnUNet_preprocessed", work / "nnUNet_results"
    env = thread_env(args.threads, {"nnUNet_raw": raw, "nnUNet_preprocessed": pre, "nnUNet_results": res,
                                    "nnUNet_n_proc_DA": 0, "nnUNet_def_n_proc": args.threads, "nnUNet_compile": "f",
                                    "NNUNET_BUDGET_MINUTES": args.minutes, "NNUNET_BUDGET_THREADS": args.threads,
                                    "NNUNET_BUDGET_ITERATIONS": ITERATIONS_PER_EPOCH})
    plan_env = {**env, "nnUNet_n_proc_DA": str(args.threads)}  # its planner sets torch threads to this: not 0
    tool = lambda name: cpu_prefix(args.threads) + [env_tool(env_dir, name)]  # noqa: E731
    heldout = write_nnunet_raw(raw, em, labels)
    config, note = "3d_fullres", "3d_fullres planned and trained"
    try:
        run(tool("nnUNetv2_plan_and_preprocess") + ["-d", DATASET_ID, "-c", config, "-np", args.threads,
                                                    "--verify_dataset_integrity"],
            logs / "nnunet_plan_3d_fullres.log", plan_env, "nnU-Net plan + preprocess (3d_fullres)")
    except CommandFailed as exc:
        say(f"3d_fullres planning failed, trying 2d: {exc}")
        config, note = "2d", f"2d: 3d_fullres planning failed ({str(exc).splitlines()[0]})"
        run(tool("nnUNetv2_plan_and_preprocess") + ["-d", DATASET_ID, "-c", config, "-np", args.threads],
            logs / "nnunet_plan_2d.log", plan_env, "nnU-Net plan + preprocess (2d)")
    write_splits(pre)
    plans = {"nnUNetPlans": f"{note}; nnU-Net's default plans (a GPU memory target of 8 GB)"}
    if args.small_target_gb:
        name = f"nnUNetPlans_{args.small_target_gb:g}GB"
        run(tool("nnUNetv2_plan_experiment") + ["-d", DATASET_ID, "-gpu_memory_target", args.small_target_gb,
                                                "-overwrite_plans_name", name],
            logs / f"nnunet_plan_{name}.log", plan_env, f"nnU-Net plan for {args.small_target_gb:g} GB")
        run(tool("nnUNetv2_preprocess") + ["-d", DATASET_ID, "-plans_name", name, "-c", config, "-np", args.threads],
            logs / f"nnunet_preprocess_{name}.log", plan_env, f"nnU-Net preprocess ({name})")
        plans[name] = (f"{config}, planned with -gpu_memory_target {args.small_target_gb:g} (a patch of the size "
                       "a CPU trains at about our pace)")
    out = {}
    for name, why in plans.items():
        side = {"trainer": trainer, "config_note": why}
        side.update(_nnunet_train_predict(args, tool, env, pre, res, heldout, labels, config, name, logs))
        out[name] = side
    return out


def _nnunet_train_predict(args, tool, env: dict, pre: Path, res: Path, heldout: Path, labels: np.ndarray,
                          config: str, plans_name: str, logs: Path) -> dict:
    """Train fold 0 of ``plans_name`` for the budget; predict the held-out slices with and without TTA."""
    out: dict = {"plans": nnunet_plans(pre, config, plans_name)}
    tag = "" if plans_name == "nnUNetPlans" else f"_{plans_name}"
    out["train_command_seconds"] = run(
        tool("nnUNetv2_train") + [DATASET_ID, config, 0, "-tr", TRAINER, "-p", plans_name, "-device", "cpu"],
        logs / f"nnunet_train{tag}.log", env, f"nnU-Net train, {plans_name} ({args.minutes:g} min)")
    fold = res / DATASET / f"{TRAINER}__{plans_name}__{config}" / "fold_0"
    out["training"] = parse_nnunet_log(fold)
    out["training"]["log"] = str(next(iter(sorted(fold.glob("training_log_*.txt"))), fold))
    out["training"]["patches_per_iteration"] = out["plans"]["batch_size"] or 1
    out.update(checkpoint_facts(fold / "checkpoint_final.pth", "network_weights"))
    truth = labels[TRAIN_SLICES:]
    for tta in (False, True):
        pred = res.parent / f"pred{tag}_{'tta' if tta else 'notta'}"
        cmd = tool("nnUNetv2_predict") + ["-i", heldout.parent, "-o", pred, "-d", DATASET_ID, "-c", config, "-f", 0,
                                          "-tr", TRAINER, "-p", plans_name, "-chk", "checkpoint_final.pth",
                                          "-device", "cpu", "-npp", 1, "-nps", 1] + ([] if tta else ["--disable_tta"])
        seconds = run(cmd, logs / f"nnunet_predict{tag}_{'tta' if tta else 'notta'}.log", env,
                      f"nnU-Net predict, {plans_name}, {'with' if tta else 'without'} TTA")
        mask = read_nifti_zyx(pred / "heldout.nii.gz") > 0
        if mask.shape != truth.shape:
            raise CommandFailed(f"nnU-Net's prediction {pred / 'heldout.nii.gz'} is {mask.shape}, not {truth.shape}")
        out["tta" if tta else "no_tta"] = {**q.scores(mask, truth), "predict_seconds": seconds}
    return out


# ---------------------------------------------------------------- our side

def parse_our_log(log: Path) -> dict:
    """Epochs, iterations and seconds of our training loop from the bundle's ``training.log``."""
    text = log.read_text(errors="replace")
    plan = re.search(r"\] \d+ epochs x (\d+) iterations of (\d+) x (\d+) patches", text)
    epochs = re.findall(r"\] epoch (\d+)/(\d+) .*?([\d.]+)s  ETA", text)
    ipe, batch, per_image = (int(g) for g in plan.groups()) if plan else (ITERATIONS_PER_EPOCH, 1, 1)
    seconds = sum(float(e[2]) for e in epochs)
    done = int(epochs[-1][0]) if epochs else 0
    iterations = done * ipe
    return {"epochs": done, "iterations_per_epoch": ipe, "iterations": iterations, "loop_seconds": seconds,
            "it_per_s": iterations / max(seconds, 1e-6), "patches_per_iteration": batch * per_image, "log": str(log)}


def our_config(bundle: Path) -> dict:
    """Our bundle's choices, from the configuration its training ran with (``model/effective_config.yaml``,
    i.e. ``configs/hyper_parameters.yaml`` with the overrides), else ``configs/hyper_parameters.yaml``.

    Patch and spacing are stored x, y, z (NIfTI order) and reported z, y, x as nnU-Net's are.
    """
    import yaml

    path = bundle / "model" / "effective_config.yaml"
    path = path if path.exists() else bundle / "configs" / "hyper_parameters.yaml"
    cfg = yaml.safe_load(path.read_text()) or {}
    zyx = (lambda v: list(v)[::-1] if v and int(cfg.get("spatial_dims", 3)) == 3 else v)  # noqa: E731
    batch, per_image = int(cfg.get("batch_size", 1)), int(cfg.get("num_patches_per_image", 1))
    return {"source": str(path.relative_to(bundle)), "patch_size_zyx": zyx(cfg.get("patch_size")),
            "batch_size": batch * per_image, "batch_note": f"{batch} image(s) x {per_image} patches",
            "spacing_zyx": zyx(cfg.get("spacing")), "normalisation": cfg.get("intensity"),
            "network": {"segresnet": "SegResNetDS"}.get(cfg.get("algo"), cfg.get("algo")),
            "network_args": cfg.get("network") or {}, "deep_supervision": cfg.get("deep_supervision"),
            "learning_rate": cfg.get("learning_rate")}


def ours_side(args, em: np.ndarray, labels: np.ndarray, work: Path, logs: Path) -> dict:
    """``run_auto3dseg.py --mode full`` with a time budget as quality_sbem.py drives it, then predict ± ``--tta``."""
    shutil.rmtree(work, ignore_errors=True)
    for old in logs.glob("ours_*.log"):
        old.unlink()
    datalist = q.write_dataset(work / "nifti", em, labels, TRAIN_SLICES)
    wd = work / "work_dir"
    env = thread_env(args.threads)
    py = cpu_prefix(args.threads) + [sys.executable, str(ROOT / "run_auto3dseg.py")]
    out: dict = {}
    out["train_command_seconds"] = run(py + [
        "--mode", "full", "--datalist", datalist, "--work_dir", wd, "--workers", "0", "--algos", "segresnet",
        "--num_fold", "1", "--budget", f"{args.minutes:g}m", "--patch_size", "96", "--override", "num_workers=0",
        "--override", f"num_iterations_per_epoch={ITERATIONS_PER_EPOCH}", "--override",
        "segresnet:network#init_filters=16"], logs / "ours_full.log", env,
        f"ours: analyze, generate, train ({args.minutes:g} min), ensemble")
    bundle = wd / "segresnet_0"
    out["training"] = parse_our_log(bundle / "training.log")
    out["plans"] = our_config(bundle)
    out.update(checkpoint_facts(bundle / "model" / "model.pt", "state_dict"))
    out["mirror_axes"] = [0, 1, 2]  # --tta: every combination of the three spatial axes
    from auto3dseg.ensembling.probability_maps import open_probability_map

    truth = labels[TRAIN_SLICES:]
    image = work / "nifti" / "images" / "heldout.nii.gz"
    for tta in (False, True):
        pred = work / ("pred_tta" if tta else "pred_notta")
        seconds = run(py + ["--mode", "predict", "--work_dir", wd, "--images", image, "--output_dir", pred]
                      + (["--tta"] if tta else []), logs / f"ours_predict_{'tta' if tta else 'notta'}.log", env,
                      f"ours: predict {'with' if tta else 'without'} --tta")
        pmap = open_probability_map(pred / "heldout_prob.zarr")
        mask = pmap.mask(pmap.n_channels - 1 if pmap.n_channels == 1 else 1, 0.5)  # as quality_sbem.py reads it
        out["tta" if tta else "no_tta"] = {**q.scores(mask, truth), "predict_seconds": seconds}
    return out


# ---------------------------------------------------------------- report

def _cell(side: dict | None, path: str, fmt: str = "{}") -> str:
    """``side[a][b]`` formatted, or an em dash where a side was skipped or a value is missing."""
    v = side
    for k in path.split("."):
        v = v.get(k) if isinstance(v, dict) else None
    return "—" if v is None else fmt.format(v)


def add_figures(side: dict | None) -> None:
    """Derived figures of one side, in place: training patches/s and voxels/s; TTA's cost (predict time
    ratio) and gain (Dice and F1 change)."""
    if not side:
        return
    tr = side.get("training", {})
    if "it_per_s" in tr:
        tr["patches_per_s"] = tr["it_per_s"] * tr.get("patches_per_iteration", 1)
        patch = side.get("plans", {}).get("patch_size_zyx") or []
        tr["voxels_per_s"] = tr["patches_per_s"] * float(np.prod(patch)) if patch else None
    if "tta" in side and "no_tta" in side:
        a, b = side["no_tta"], side["tta"]
        side["tta_effect"] = {"time_ratio": b["predict_seconds"] / max(a["predict_seconds"], 1e-6),
                              "dice_gain": b["dice"] - a["dice"], "f1_gain": b["f1"] - a["f1"]}


def markdown(report: dict) -> str:
    """The comparison as Markdown."""
    o, nn = report.get("ours"), report.get("nnunet") or {}
    sides = [("ours (segresnet)", o)] + [(f"nnU-Net, {k}", v) for k, v in nn.items()]
    first = next((v for _, v in sides if v), {})
    rows = [("Dice, no TTA", "no_tta.dice", "{:.3f}"), ("instance F1, no TTA", "no_tta.f1", "{:.3f}"),
            ("objects (truth " + str(first.get("no_tta", {}).get("true_objects", "?")) + "), no TTA",
             "no_tta.objects", "{}"),
            ("Dice, TTA", "tta.dice", "{:.3f}"), ("instance F1, TTA", "tta.f1", "{:.3f}"),
            ("TTA gain in Dice", "tta_effect.dice_gain", "{:+.3f}"),
            ("TTA gain in F1", "tta_effect.f1_gain", "{:+.3f}"),
            ("predict time, no TTA (s)", "no_tta.predict_seconds", "{:.1f}"),
            ("predict time, TTA (s)", "tta.predict_seconds", "{:.1f}"),
            ("TTA cost (time ratio)", "tta_effect.time_ratio", "{:.2f}x"),
            ("training iterations reached", "training.iterations", "{}"),
            ("epochs x iterations per epoch", "training.epochs", "{}"),
            ("training it/s (validation in the time)", "training.it_per_s", "{:.3f}"),
            ("training patches/s", "training.patches_per_s", "{:.3f}"),
            ("training voxels/s (patch voxels x patches/s)", "training.voxels_per_s", "{:,.0f}"),
            ("training loop (s)", "training.loop_seconds", "{:.0f}"),
            ("training command, setup included (s)", "train_command_seconds", "{:.0f}"),
            ("patch (z, y, x)", "plans.patch_size_zyx", "{}"),
            ("patches per iteration (batch)", "plans.batch_size", "{}"),
            ("spacing (z, y, x)", "plans.spacing_zyx", "{}"), ("normalisation", "plans.normalisation", "{}"),
            ("network", "plans.network", "{}"), ("parameters", "parameters", "{:,}"),
            ("test-time mirroring axes (z, y, x = 0, 1, 2)", "mirror_axes", "{}")]
    lines = [f"Budget {report['minutes']:g} min of training each; {report['threads']} threads; "
             f"{report['machine']['cpu']}, {report['machine']['cores']} cores, "
             f"{report['machine'].get('ram_gib', '?')} GiB; torch {report['versions'].get('torch')}, monai "
             f"{report['versions'].get('monai')}, nnunetv2 {report['versions'].get('nnunetv2', '—')}. Held-out: "
             f"z slices {TRAIN_SLICES}-15 of crop1, trained on slices 0-{TRAIN_SLICES - 1} (fold 0: slabs 1-2 train, "
             "slab 0 validates). Both: augmentation in the training process (ours num_workers=0, nnU-Net "
             "nnUNet_n_proc_DA=0), the same post-processing and scoring (quality_sbem.scores).", "",
             "| | " + " | ".join(t for t, _ in sides) + " |", "|---" * (len(sides) + 1) + "|"]
    for name, path, fmt in rows:
        if path == "training.epochs":
            cells = [_cell(s, "training.epochs") + " x " + _cell(s, "training.iterations_per_epoch") if s else "—"
                     for _, s in sides]
        else:
            cells = [_cell(s, path, fmt) for _, s in sides]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for key, n in nn.items():
        lines += ["", f"nnU-Net, {key}: {n['config_note']}; {n['plans']['stages']} stages, features "
                      f"{n['plans']['features_per_stage']}, strides {n['plans']['strides']}; training stopped: "
                      f"{n['training']['stop']}; one training iteration measured "
                      f"{_cell(n, 'training.seconds_per_iteration_measured', '{:.1f}')} s; "
                      f"trainer {n['trainer']['note']}."]
    if o:
        lines += ["", f"ours: {o['plans']['source']}: network {o['plans']['network_args']}, deep supervision "
                      f"{o['plans']['deep_supervision']}, {o['plans']['batch_note']}; --tta mirrors along all 3 axes."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison (or ``--setup``); return the exit status."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0,
                   help="wall-clock budget of each side's training loop, in minutes (default 10)")
    p.add_argument("--workdir", default=str(BENCH / "out" / "compare_nnunet"),
                   help="work folder: ours/, nnunet/ (nnUNet_raw, nnUNet_preprocessed, nnUNet_results) and logs/; "
                        "a side's folder is emptied when it runs (default bench/out/compare_nnunet)")
    p.add_argument("--env", default=str(BENCH / "out" / "nnunet_env"),
                   help="nnU-Net's virtual environment (default bench/out/nnunet_env)")
    p.add_argument("--setup", action="store_true",
                   help=f"create --env (CPU torch of our torch's version, nnunetv2=={NNUNET_VERSION}, the budget "
                        "trainer) and exit; kept if it already holds that nnunetv2")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for both sides (torch, OpenMP, MKL; default 2)")
    p.add_argument("--small_target_gb", type=float, default=1.0,
                   help="also train nnU-Net planned with this -gpu_memory_target (GB), whose patch a CPU trains at "
                        "about our pace; 0 = nnU-Net's default plans only (default 1)")
    p.add_argument("--skip_ours", action="store_true", help="run nnU-Net's side only")
    p.add_argument("--skip_nnunet", action="store_true", help="run our side only")
    args = p.parse_args(argv)
    work = Path(args.workdir).resolve()
    logs = work / "logs"
    try:
        if args.setup:
            setup_env(Path(args.env).resolve(), logs)
            return 0
        if args.minutes <= 0 or args.threads < 1:
            p.error("--minutes must be positive and --threads at least 1")
        if not q.SAMPLE.is_dir():
            print(f"error: {q.SAMPLE} is absent: this benchmark needs ../shared/data/em_sbem_mito", file=sys.stderr)
            return 2
        import monai
        import torch

        torch.set_num_threads(args.threads)
        em, labels = q.load_crop()
        report: dict = {"when": datetime.datetime.now().isoformat(timespec="seconds"), "minutes": args.minutes,
                        "threads": args.threads, "machine": machine(), "args": vars(args),
                        "versions": {"torch": torch.__version__, "monai": monai.__version__, "python":
                                     platform.python_version()}, "ours": None, "nnunet": None,
                        "settings": {"loader_workers": 0, "iterations_per_epoch_ours": ITERATIONS_PER_EPOCH,
                                     "ours": "segresnet, --patch_size 96, init_filters 16 (as quality_sbem.py)",
                                     "nnunet": f"{TRAINER}, -device cpu, checkpoint_final.pth, no final validation"}}
        if not args.skip_nnunet:
            report["versions"].update({f"nnunet_env_{k}": v for k, v in env_versions(Path(args.env)).items()})
            report["versions"]["nnunetv2"] = report["versions"].get("nnunet_env_nnunetv2")
        t0 = time.perf_counter()
        if not args.skip_ours:
            report["ours"] = ours_side(args, em, labels, work / "ours", logs)
        if not args.skip_nnunet:
            report["nnunet"] = nnunet_side(args, em, labels, work / "nnunet", logs)
        for side in [report["ours"], *(report["nnunet"] or {}).values()]:
            add_figures(side)
        report["total_seconds"] = time.perf_counter() - t0
    except CommandFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(markdown(report))
    out = BENCH / "out" / "compare_nnunet.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    say(f"{report['total_seconds'] / 60:.1f} min in all; JSON in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
