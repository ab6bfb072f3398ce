"""Training hot paths on CPU, each against a named baseline measured in the same run.

1. **Data pipeline memory** (14 classes). Ours: ``auto3dseg.engine.transforms.training_transforms``,
   which keeps the label a one-channel uint8 map up to the patch crop and expands only
   the cropped patches to one channel per class (``LabelToChannelsd`` last). Baseline:
   the same transforms with the expansion moved to right after loading/padding, i.e. the
   whole crop is one-hot encoded before ``RandCropByLabelClassesd`` (the naive recipe).
   ``ClassesToIndicesd`` still runs on the label *map* in the baseline, so the crop
   centres are identical; since the expansion now also creates ``valid`` before the crop,
   ``valid`` is added to the keys of the crop, flip and rotate transforms (otherwise the
   baseline's ``valid`` would stay whole-crop sized). With the same random state both
   variants must yield bit-identical patches, which is checked.
   Each variant runs in ``--repeats`` fresh processes on a synthetic NIfTI crop (uint8
   EM-like image, uint8 label map with values 0..14, every class present): one untimed
   warm-up item, then ``--items`` timed items. Reported: median peak RSS (``VmHWM``), the
   same over the RSS of a process that only imports torch, MONAI, nibabel and the
   transforms (the "floor", measured in its own process), and seconds per item. Both with
   glibc's default malloc (what a training run gets; freed heap memory is often kept, so
   the peak varies from process to process) and with ``MALLOC_MMAP_THRESHOLD_=1048576``
   (large arrays are returned to the OS when freed: the peak of the live data).
   ``--steps`` adds the RSS peak of each transform.

2. **Seconds per training iteration** of segresnet, dints and swinunetr
   (``auto3dseg.engine.training.make_model`` / ``make_loss`` / ``train_step``) on a synthetic
   collated batch, with our masked Dice+BCE loss against MONAI's plain, unmasked
   ``DiceCELoss(sigmoid=True)`` (wrapped in MONAI's ``DeepSupervisionLoss`` so that it
   also takes segresnet's extra heads, as MONAI's own segresnet template does). Each
   network runs in a fresh process with a fixed seed; after ``--warmup`` untimed steps,
   training steps with the two losses alternate (M O, O M, M O, ...) on the same model and
   batch, so that both see the same machine load. Reported: s/iter (forward + loss +
   backward + AdamW step, ``train_step``) mean and min over ``--iters`` steps per loss, the
   peak RSS of a step (VmHWM reset before each step), and the loss alone (forward +
   backward on fixed network outputs, best of 5) to isolate the loss's own cost.

Peak RSS is read from ``/proc/self/status`` (``VmHWM``, the high-water mark of the
process's own address space; ``ru_maxrss`` is the fallback). ``VmHWM`` is used because on
Linux ``ru_maxrss`` of a child can inherit its parent's high-water mark through
fork/exec.

Usage::

    .venv/bin/python bench/bench_training.py            # full run (about 7 min on 2 cores)
    .venv/bin/python bench/bench_training.py --quick    # small run (about 2 min)

Figures go to stdout as Markdown tables (and to ``<out>/bench_training.json``); paste
them into bench/RESULTS.md with the machine description printed above them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine_info import current_rss_mib, machine_description, peak_rss_mib, reset_peak_rss  # noqa: E402

N_CLASSES = 14
ALGOS = ("segresnet", "dints", "swinunetr")


# ----------------------------------------------------------------------------- helpers
def pipeline_cfg(patch: int) -> dict:
    return {
        "patch_size": [patch] * 3,
        "num_patches_per_image": 2,
        "intensity": {"mode": "zscore"},
        "class_ids": list(range(1, N_CLASSES + 1)),
        "class_members": [[i] for i in range(1, N_CLASSES + 1)],
        "output_activation": "sigmoid",
    }


def make_crop(folder: Path, size: int, seed: int = 0) -> dict:
    """Synthetic EM-like crop: uint8 image and uint8 label map (0..14, every class present)."""
    import nibabel as nib

    img_path, lab_path = folder / f"img_{size}.nii.gz", folder / f"lab_{size}.nii.gz"
    if not (img_path.is_file() and lab_path.is_file()):
        rng = np.random.default_rng(seed)
        lab = np.zeros((size,) * 3, dtype=np.uint8)
        # a few boxes per class, 1/16 .. 1/4 of the crop per side; later classes overwrite earlier ones
        for c in range(1, N_CLASSES + 1):
            for _ in range(6):
                ext = rng.integers(size // 16, size // 4 + 1, 3)
                lo = [int(rng.integers(0, size - e)) for e in ext]
                lab[lo[0]:lo[0] + ext[0], lo[1]:lo[1] + ext[1], lo[2]:lo[2] + ext[2]] = c
        present = np.unique(lab)
        assert set(range(N_CLASSES + 1)) <= set(present.tolist()), present
        img = (60 + 10 * lab.astype(np.int16) + rng.normal(0, 15, lab.shape)).clip(0, 255).astype(np.uint8)
        aff = np.diag([8.0, 8.0, 8.0, 1.0])
        nib.save(nib.Nifti1Image(img, aff), img_path)
        nib.save(nib.Nifti1Image(lab, aff), lab_path)
    return {"image": str(img_path), "label": str(lab_path), "annotated_mask": (1 << N_CLASSES) - 1}


# ----------------------------------------------------------------------------- workers (fresh processes)
def worker_floor(_: dict) -> dict:
    import monai  # noqa: F401
    import nibabel  # noqa: F401
    import torch  # noqa: F401

    import auto3dseg.engine.transforms  # noqa: F401
    return {"peak_rss_mib": peak_rss_mib()}


def build_pipeline(variant: str, cfg: dict):
    """``ours``: training_transforms(cfg) as is. ``baseline``: one-hot before the crop."""
    from monai.transforms import (
        ClassesToIndicesd,
        Compose,
        RandCropByLabelClassesd,
        RandFlipd,
        RandRotate90d,
        SpatialPadd,
    )

    from auto3dseg.engine.transforms import LabelToChannelsd, training_transforms

    ours = training_transforms(cfg)
    if variant == "ours":
        return ours
    ts = list(ours.transforms)
    expand = next(t for t in ts if isinstance(t, LabelToChannelsd))
    ts.remove(expand)
    pad = next(i for i, t in enumerate(ts) if isinstance(t, SpatialPadd) and "label" in t.keys)
    cls = next(i for i, t in enumerate(ts) if isinstance(t, ClassesToIndicesd))
    assert cls == pad + 1, "expected ClassesToIndicesd right after the label's SpatialPadd"
    # class indices from the label map (identical to ours), then the whole-crop expansion
    ts.insert(cls + 1, expand)
    # ``valid`` now exists before the crop: crop/flip/rotate it with image and label
    for t in ts:
        if isinstance(t, (RandCropByLabelClassesd, RandFlipd, RandRotate90d)):
            t.keys = tuple(t.keys) + (expand.valid_key,)
    return Compose(ts)


def worker_pipeline(spec: dict) -> dict:
    import hashlib

    import torch
    from monai.data import list_data_collate

    base = peak_rss_mib()
    pipe = build_pipeline(spec["variant"], pipeline_cfg(spec["patch"]))
    pipe.set_random_state(seed=spec["seed"])
    item = spec["item"]
    # like a DataLoader worker with batch_size 1 (the bundles' setting): transform one item,
    # collate its patches (list_data_collate copies them into one batch), hand it over
    # (here: hash it), and drop both before the next item
    out = pipe(dict(item))  # warm-up item, not timed
    views = _count_views(out)
    del out
    digest = hashlib.sha256()
    times = []
    for _ in range(spec["items"]):
        t0 = time.perf_counter()
        out = pipe(dict(item))
        batch = list_data_collate([out])
        times.append(time.perf_counter() - t0)
        views += _count_views(out)
        n_patches = len(out)
        del out
        for key in ("image", "label", "valid", "class_mask"):
            v = batch[key]
            v = v.as_tensor() if hasattr(v, "as_tensor") else torch.as_tensor(v)
            digest.update(key.encode() + str(tuple(v.shape)).encode() + str(v.dtype).encode())
            digest.update(np.ascontiguousarray(v.numpy()).tobytes())
        shapes = {k: list(batch[k].shape) for k in ("image", "label", "valid")}
        del batch
    return {"peak_rss_mib": peak_rss_mib(), "import_rss_mib": base, "s_per_item": float(np.mean(times)),
            "s_per_item_min": float(np.min(times)), "digest": digest.hexdigest(), "batch_shapes": shapes,
            "patches_per_item": n_patches, "patches_viewing_whole_crop": views}


def _count_views(patches) -> int:
    """Patch tensors that are views into a larger (whole-crop) storage: no flip or rotation
    copied them, so they keep the whole crop's tensor alive until collated."""
    import torch

    n = 0
    for patch in patches:
        for key in ("image", "label", "valid"):
            v = patch[key]
            v = v.as_tensor() if hasattr(v, "as_tensor") else torch.as_tensor(v)
            n += v.untyped_storage().nbytes() > v.numel() * v.element_size()
    return n


def worker_steps(spec: dict) -> dict:
    """Peak and resident RSS after each transform of one variant (second item; VmHWM reset
    before each transform), to see where the pipeline's memory goes."""
    from monai.transforms import apply_transform

    pipe = build_pipeline(spec["variant"], pipeline_cfg(spec["patch"]))
    pipe.set_random_state(seed=spec["seed"])
    pipe(dict(spec["item"]))  # warm-up item
    data = dict(spec["item"])
    rows = []
    for t in pipe.transforms:
        before = current_rss_mib()
        reset_peak_rss()
        data = apply_transform(t, data, map_items=True)
        rows.append({"transform": type(t).__name__, "keys": list(getattr(t, "keys", ())), "before_mib": before,
                     "peak_mib": peak_rss_mib(), "after_mib": current_rss_mib()})
    return {"steps": rows}


class MonaiDiceCE:
    """MONAI's DiceCELoss(sigmoid=True) behind the (outputs, target, class_mask, valid) call
    of ``train_step``: masks ignored, every head through MONAI's DeepSupervisionLoss."""

    def __init__(self):
        from monai.losses import DeepSupervisionLoss, DiceCELoss

        self.loss = DeepSupervisionLoss(DiceCELoss(sigmoid=True))

    def __call__(self, outputs, target, class_mask=None, valid=None):
        return self.loss(outputs, target.float())  # interpolation of the heads' targets needs floats


def synthetic_batch(batch: int, patch: int, seed: int) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    shape = (patch,) * 3
    label = torch.zeros((batch, N_CLASSES, *shape), dtype=torch.uint8)
    for b in range(batch):
        for c in range(N_CLASSES):
            lo = torch.randint(0, patch // 2, (3,), generator=g).tolist()
            ext = torch.randint(patch // 8, patch // 2, (3,), generator=g).tolist()
            label[b, c, lo[0]:lo[0] + ext[0], lo[1]:lo[1] + ext[1], lo[2]:lo[2] + ext[2]] = 1
    valid = torch.ones((batch, 1, *shape), dtype=torch.uint8)
    valid[:, :, -patch // 8:] = 0  # some padding, as at a crop's border
    class_mask = torch.ones((batch, N_CLASSES))
    class_mask[1:, N_CLASSES // 2:] = 0  # partially annotated items, as in CellMap
    image = torch.randn((batch, 1, *shape), generator=g) + label[:, :1].float()
    return {"image": image, "label": label, "valid": valid, "class_mask": class_mask}


def worker_train(spec: dict) -> dict:
    """One network, both losses in the same process, steps interleaved (M O O M M O ...) so
    that both see the same machine load; the peak RSS of each step is taken by resetting
    VmHWM before it."""
    import torch

    from auto3dseg.bundles.config import NETWORK_DEFAULTS
    from auto3dseg.engine.networks import as_list
    from auto3dseg.engine.training import make_loss, make_model, train_step

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    base = peak_rss_mib()
    algo = spec["algo"]
    cfg = {"algo": algo, "class_ids": list(range(1, N_CLASSES + 1)), "output_activation": "sigmoid",
           "input_channels": 1, "spatial_dims": 3, "network": dict(NETWORK_DEFAULTS[algo]["network"])}
    torch.manual_seed(spec["seed"])
    model = make_model(cfg)
    losses = {"monai": MonaiDiceCE(), "ours": make_loss(cfg)}
    opt = torch.optim.AdamW(model.parameters(), lr=float(NETWORK_DEFAULTS[algo]["learning_rate"]), weight_decay=1e-5)
    batch = synthetic_batch(spec["batch"], spec["patch"], spec["seed"])
    device = torch.device("cpu")
    deep = algo == "segresnet"  # as derive_hyper_parameters sets it
    for i in range(spec["warmup"]):
        train_step(model, batch, losses["ours" if i % 2 else "monai"], opt, device, deep_supervision=deep)
    after_warmup = peak_rss_mib()
    per_step_peak = reset_peak_rss()
    times: dict = {k: [] for k in losses}
    peaks: dict = {k: [] for k in losses}
    values: dict = {k: [] for k in losses}
    for i in range(spec["iters"]):
        for name in (("monai", "ours") if i % 2 == 0 else ("ours", "monai")):
            if per_step_peak:
                reset_peak_rss()
            t0 = time.perf_counter()
            values[name].append(train_step(model, batch, losses[name], opt, device, deep_supervision=deep))
            times[name].append(time.perf_counter() - t0)
            peaks[name].append(peak_rss_mib())
    # the loss alone: forward + backward on fixed network outputs
    model.train()
    with torch.no_grad():
        outs = as_list(model(batch["image"]))
    if not deep:
        outs = outs[:1]
    loss_times: dict = {k: [] for k in losses}
    for _ in range(5):
        for name, fn in losses.items():
            leaves = [o.detach().float().requires_grad_() for o in outs]
            t0 = time.perf_counter()
            fn(leaves, batch["label"], batch["class_mask"], batch["valid"]).backward()
            loss_times[name].append(time.perf_counter() - t0)
    return {
        "import_rss_mib": base, "peak_after_warmup_mib": after_warmup, "per_step_peak": per_step_peak,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "heads": len(outs),
        "threads": torch.get_num_threads(),
        **{name: {"s_per_iter": float(np.mean(times[name])), "s_per_iter_min": float(np.min(times[name])),
                  "step_peak_rss_mib": float(max(peaks[name])), "loss_s": float(np.min(loss_times[name])),
                  "last_loss": values[name][-1]} for name in losses},
    }


WORKERS = {"floor": worker_floor, "pipeline": worker_pipeline, "train": worker_train, "steps": worker_steps}


#: glibc malloc settings of the pipeline runs: the default (dynamic mmap threshold, what a
#: training run gets) and a fixed 1 MiB mmap threshold (every large array is its own
#: mapping, returned to the OS when freed: the live-memory peak without heap retention)
MALLOC_MODES = {"default": {}, "mmap>=1MiB": {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}}


def _median(xs) -> float:
    return float(np.median(xs))


def spawn(spec: dict, env: dict | None = None) -> dict:
    """Run one worker in a fresh interpreter (with ``env`` added); returns its JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    full_env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_",)}
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, env={**full_env, **(env or {})})
    if res.returncode != 0:
        raise RuntimeError(f"worker {spec.get('kind')} failed ({res.returncode}):\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Full run: .venv/bin/python bench/bench_training.py (about 7 min on 2 cores); "
                                       "figures go to stdout as Markdown and to <out>/bench_training.json.")
    p.add_argument("--quick", action="store_true",
                   help="small run: 128^3 crop, 2 timed items, batch 1 and 1 timed iteration per loss and network")
    p.add_argument("--size", type=int, default=None,
                   help="edge of the synthetic crop for the pipeline benchmark, in voxels (default 256, 128 with --quick)")
    p.add_argument("--items", type=int, default=None,
                   help="timed pipeline items per variant, after one untimed warm-up item (default 3, 2 with --quick)")
    p.add_argument("--repeats", type=int, default=None,
                   help="fresh processes per pipeline variant and malloc setting; the median peak is reported "
                        "(default 3, 1 with --quick)")
    p.add_argument("--pipeline-patch", type=int, default=96,
                   help="patch edge of the pipeline benchmark (RandCropByLabelClassesd, 2 patches per item; default 96)")
    p.add_argument("--algos", default=",".join(ALGOS), help="comma-separated networks for the training benchmark (default: segresnet,dints,swinunetr)")
    p.add_argument("--patch", type=int, default=64,
                   help="patch edge of the training benchmark (default 64, swinunetr's minimum)")
    p.add_argument("--batch", type=int, default=None, help="patches per training batch (default 2, 1 with --quick)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed training steps before timing, alternating MONAI's loss and ours (default 1)")
    p.add_argument("--iters", type=int, default=None,
                   help="timed training iterations per loss (default 3, 1 with --quick)")
    p.add_argument("--threads", type=int, default=0, help="torch threads in the training workers (default 0: torch's default, one per core)")
    p.add_argument("--seed", type=int, default=0, help="seed of the transforms, weights and synthetic data (default 0)")
    p.add_argument("--steps", action="store_true",
                   help="also print the RSS peak of each transform of both pipeline variants (one item each)")
    p.add_argument("--skip-pipeline", action="store_true", help="skip the data pipeline benchmark")
    p.add_argument("--skip-training", action="store_true", help="skip the training-iteration benchmark")
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "training"),
                   help="scratch folder for the synthetic crop and bench_training.json (default bench/out/training)")
    p.add_argument("--worker", default=None, metavar="JSON",
                   help="internal: run one measurement described by JSON in this process and print its result")
    args = p.parse_args()

    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(WORKERS[spec["kind"]](spec)))
        return 0

    size = args.size or (128 if args.quick else 256)
    items = args.items or (2 if args.quick else 3)
    iters = args.iters or (1 if args.quick else 3)
    repeats = args.repeats or (1 if args.quick else 3)
    batch = args.batch or (1 if args.quick else 2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": machine_description(), "argv": sys.argv[1:]}
    print(f"machine: {results['machine']}\n")

    if not args.skip_pipeline:
        t = time.perf_counter()
        item = make_crop(out, size, args.seed)
        print(f"<!-- synthetic crop {size}^3 ready in {time.perf_counter() - t:.0f} s -->")
        load0 = os.getloadavg()[0]
        variants = (("baseline", "baseline: one-hot before crop"), ("ours", "ours: one-hot after crop"))
        runs: dict = {}
        for mode, env in MALLOC_MODES.items():
            runs[mode] = {"floor": spawn({"kind": "floor"}, env)["peak_rss_mib"]}
            for v, _ in variants:
                runs[mode][v] = [spawn({"kind": "pipeline", "variant": v, "item": item, "items": items,
                                        "seed": args.seed, "patch": args.pipeline_patch}, env)
                                 for _ in range(repeats)]
        load1 = os.getloadavg()[0]
        digests = {r["digest"] for m in runs.values() for v, _ in variants for r in m[v]}
        same = len(digests) == 1
        results["pipeline"] = {"size": size, "items": items, "repeats": repeats, "runs": runs,
                               "identical_patches": same, "load": [load0, load1]}
        first = runs["default"]["ours"][0]
        print(f"### Data pipeline, {N_CLASSES} classes, {size}^3 crop, {first['patches_per_item']} patches of "
              f"{args.pipeline_patch}^3 per item, 1 warm-up + {items} timed items per process, "
              f"{repeats} process(es) per variant\n")
        print(f"floor (a process that imports torch, monai, nibabel, auto3dseg.engine.transforms): "
              f"{runs['default']['floor']:.0f} MiB; patches identical across variants and runs: "
              f"{'yes' if same else 'NO'}; collated batch shapes {first['batch_shapes']}\n")
        nviews = {v: sum(r["patches_viewing_whole_crop"] for m in runs.values() for r in m[v]) for v, _ in variants}
        print(f"patch tensors still viewing the whole crop before collation (no flip/rotation copied them), over all "
              f"items and runs: baseline {nviews['baseline']}, ours {nviews['ours']}\n")
        print("| glibc malloc | variant | peak RSS MiB, median (min-max) | over floor MiB, median | s/item, median |")
        print("|---|---|---|---|---|")
        for mode, m in runs.items():
            f = m["floor"]
            for v, name in variants:
                peaks = [r["peak_rss_mib"] for r in m[v]]
                print(f"| {mode} | {name} | {_median(peaks):.0f} ({min(peaks):.0f}-{max(peaks):.0f}) "
                      f"| {_median(peaks) - f:.0f} | {_median([r['s_per_item'] for r in m[v]]):.2f} |")
            pb, po = _median([r["peak_rss_mib"] for r in m["baseline"]]), _median([r["peak_rss_mib"] for r in m["ours"]])
            tb, to = _median([r["s_per_item"] for r in m["baseline"]]), _median([r["s_per_item"] for r in m["ours"]])
            print(f"| {mode} | **ratio ours/baseline** | **{po / pb:.2f}** | **{(po - f) / max(1e-9, pb - f):.2f}** "
                  f"| **{to / tb:.2f}** |")
        print(f"\n1-min load average before/after: {load0:.2f} / {load1:.2f} (on {os.cpu_count()} cores)\n")
        if args.steps:
            env = MALLOC_MODES["mmap>=1MiB"]
            f = runs["mmap>=1MiB"]["floor"]
            steps = {v: spawn({"kind": "steps", "variant": v, "item": item, "seed": args.seed,
                               "patch": args.pipeline_patch}, env)["steps"] for v, _ in variants}
            results["pipeline"]["steps"] = steps
            print("Per transform (second item, glibc mmap threshold 1 MiB, VmHWM reset before each transform; "
                  "MiB over the floor):\n")
            print("| variant | transform | keys | RSS before | peak during | RSS after |")
            print("|---|---|---|---|---|---|")
            for v, rows_ in steps.items():
                for r in rows_:
                    print(f"| {v} | {r['transform']} | {','.join(map(str, r['keys']))} | {r['before_mib'] - f:.0f} "
                          f"| {r['peak_mib'] - f:.0f} | {r['after_mib'] - f:.0f} |")
            print()
        sys.stdout.flush()

    if not args.skip_training:
        algos = [a.strip() for a in args.algos.split(",") if a.strip()]
        load0 = os.getloadavg()[0]
        print(f"### Training iteration on CPU, patch {args.patch}^3, batch {batch}, {N_CLASSES} sigmoid channels, "
              f"{args.warmup} warm-up + {iters} timed iterations per loss (interleaved in one process per network)\n")
        print("| network | params M | loss | s/iter (mean) | s/iter (min) | loss fwd+bwd s | step peak RSS MiB |")
        print("|---|---|---|---|---|---|---|")
        train_rows: dict = {}
        for algo in algos:
            r = spawn({"kind": "train", "algo": algo, "patch": args.patch, "batch": batch, "warmup": args.warmup,
                       "iters": iters, "seed": args.seed, "threads": args.threads})
            train_rows[algo] = r
            for loss, name in (("monai", "MONAI DiceCELoss (unmasked)"), ("ours", "ours: masked Dice+BCE")):
                x = r[loss]
                print(f"| {algo} | {r['params_m']:.1f} | {name} | {x['s_per_iter']:.2f} | {x['s_per_iter_min']:.2f} "
                      f"| {x['loss_s']:.3f} | {x['step_peak_rss_mib']:.0f} |")
            m, o = r["monai"], r["ours"]
            print(f"| {algo} | | **ratio ours/MONAI** | **{o['s_per_iter'] / m['s_per_iter']:.2f}** "
                  f"| **{o['s_per_iter_min'] / m['s_per_iter_min']:.2f}** | **{o['loss_s'] / m['loss_s']:.2f}** "
                  f"| **{o['step_peak_rss_mib'] / m['step_peak_rss_mib']:.2f}** |")
            sys.stdout.flush()
        load1 = os.getloadavg()[0]
        print(f"\n1-min load average before/after: {load0:.2f} / {load1:.2f} (on {os.cpu_count()} cores); "
              f"torch threads {next(iter(train_rows.values()))['threads'] if train_rows else '?'}; "
              f"step peak RSS = VmHWM reset before each step "
              f"({'yes' if all(r['per_step_peak'] for r in train_rows.values()) else 'NO: whole-process peak'})")
        results["training"] = {"patch": args.patch, "batch": batch, "iters": iters, "load": [load0, load1],
                               **train_rows}

    (out / "bench_training.json").write_text(json.dumps(results, indent=1))
    print(f"\n<!-- raw figures: {out / 'bench_training.json'} -->")
    return 0


if __name__ == "__main__":
    sys.exit(main())
