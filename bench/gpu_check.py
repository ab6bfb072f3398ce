"""GPU figures in one shot, piece by piece, for ``bench/gpu_check.sh`` (its header says how to run it).

On the built-in data, with the configs ``--mode generate`` derives from it, each piece in its own
process under a time cap: segresnet, dints, swinunetr (``train_step`` with AMP on a batch of the
bundle's loader, peak memory, ``validate`` and ``predict_blocks``, at the data's patch and at the
network's default one); MONAI's official segresnet at the same patches and batch; torchrun (2
processes against a 1-process reference); ``run_auto3dseg.py --mode full`` ending in a submission.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MARK = "GPU_CHECK_RESULT "
ALGOS = ("segresnet", "dints", "swinunetr")
#: the deadline of the whole GPU run, counted from the shell script's start (setup included)
GPU_BUDGET_S = 480
#: torchrun's and the reference's losses may differ by this, relative: both in fp32 (AMP, TF32 off,
#: deterministic cuDNN) on the same weights and patches, only the all-reduce's order and kernel choice
#: differ (~1e-7 a step, which Adam may amplify for tiny gradients); unsynchronised replicas or a
#: wrong shard move the loss by about one step's change (reported beside it; ~3e-2 in the dry run)
DDP_RTOL = 1e-4
CARRY_DIR = ROOT / "bench" / "out" / "gpu_check_carry"
#: per mode: timed/warm-up steps, synthetic volume side, patch cap per variant (None: the bundle's own),
#: network changes, piece estimates and caps in seconds, and the --mode full arguments
MODES: dict[str, dict[str, Any]] = {
    "gpu": {"iters": 20, "warmup": 5, "volume": 256, "ddp_steps": 3,
            "variants": {"data patch": None, "default patch": 10_000}, "network": {}, "cfg": {},
            "estimate": {"data": 20, "network": 40, "official": 40, "ddp": 40, "full": 180},
            "cap": {"data": 60, "network": 90, "official": 90, "ddp": 90, "full": 240},
            "full": "--gpus 1 --workers 4 --num_epochs 1 --override num_iterations_per_epoch=10".split()},
    "dry": {"iters": 1, "warmup": 1, "volume": 48, "ddp_steps": 2,
            "variants": {"data patch": 32, "default patch": 48}, "cfg": {"num_workers": 0},
            "network": {"segresnet": {"init_filters": 8}, "dints": {"num_blocks": 3}, "swinunetr": {"feature_size": 12},
                        "official": {"init_filters": 8}},
            "estimate": {"data": 8, "network": 12, "swinunetr": 30, "official": 20, "ddp": 15, "full": 55},
            "cap": {"data": 120, "network": 150, "official": 150, "ddp": 150, "full": 300},
            "full": ("--gpus cpu --workers 0 --num_fold 1 --num_epochs 1 --patch_size 32 --override num_workers=0 "
                     "--override num_iterations_per_epoch=2 --override segresnet:network#init_filters=8 --override "
                     "dints:network#num_blocks=3 --override swinunetr:network#feature_size=12").split()},
}


# ----------------------------------------------------------------------------- environment, data and configs
def official_templates() -> Path | None:
    """MONAI's official templates: ``$GPU_CHECK_OFFICIAL``, ``../shared`` or the carried copy."""
    for cand in (os.environ.get("GPU_CHECK_OFFICIAL"), ROOT.parent / "shared" / "monai_official_templates",
                 CARRY_DIR / "official"):
        if cand and (Path(cand) / "segresnet" / "configs" / "hyper_parameters.yaml").is_file():
            return Path(cand)
    return None


def device_info() -> dict[str, Any]:
    """Versions, the GPU count, and the device's name (``torch.cuda.get_device_name``, else the CPU's)."""
    import monai
    import torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.machine())
    return {"torch": torch.__version__, "monai": monai.__version__, "python": platform.python_version(),
            "cuda": torch.version.cuda, "gpus": torch.cuda.device_count(), "name": torch.cuda.get_device_name(0)
            if torch.cuda.is_available() else f"CPU: {cpu}, {os.cpu_count()} cores"}


def prepare_data(work: Path, py: str, cap: float) -> dict[str, Any]:
    """The built-in data through the real commands: synthetic → converter (2 folds) → analyze."""
    syn, nifti = work / "synthetic_cellmap", work / "nifti"
    steps = [[py, "-m", "converters.cellmap.synthetic", "--out", str(syn), "--force"],
             [py, "-m", "converters.cellmap.convert", "--datasplit", str(syn / "datasplit.csv"),
              "--test_manifest", str(syn / "test_crop_manifest.csv"), "--output_dir", str(nifti),
              "--num_folds", "2", "--workers", "2", "--force"],
             [py, "run_auto3dseg.py", "--mode", "analyze", "--datalist", str(nifti / "datalist.json"),
              "--work_dir", str(work / "analysis"), "--workers", "0", "--force"]]
    t0 = time.time()
    for i, cmd in enumerate(steps):
        res = run_process(cmd, cap - (time.time() - t0), work / "logs" / f"data_{i}.log")
        if res["rc"] != 0:
            raise RuntimeError(f"data preparation failed: {' '.join(cmd)}\n" + "\n".join(res["tail"]))
    return {"work": str(work), "synthetic": str(syn), "datalist": str(nifti / "datalist.json"), "dataroot": str(nifti),
            "datastats": str(work / "analysis" / "datastats.yaml"), "seconds": round(time.time() - t0, 1)}


def bundle_config(algo: str, data: dict, mode: str, variant: str) -> dict[str, Any]:
    """The config ``--mode generate`` writes for fold 0 (tiny networks in the dry run); ``default
    patch`` is the patch a crop larger than the network's default side derives."""
    import yaml

    from auto3dseg.bundles.config import derive_hyper_parameters, derive_patch_size

    m, datastats = MODES[mode], yaml.safe_load(Path(data["datastats"]).read_text())
    cfg = derive_hyper_parameters(algo, datastats, json.loads(Path(data["datalist"]).read_text()),
                                  datalist_path=data["datalist"], dataroot=data["dataroot"], fold=0,
                                  bundle_root=Path(data["work"]) / "bundles" / f"{algo}_0")
    cfg["network"].update(m["network"].get(algo, {}))
    side = m["variants"][variant]
    median = datastats["stats_summary"]["image_stats"]["shape"]["median"] if variant == "data patch" else [side] * 3
    cfg["patch_size"] = derive_patch_size(algo, median, cfg["network"], side if mode == "dry" else None)
    return {**cfg, **m["cfg"]}


def loader_batches(cfg: dict) -> tuple[dict, list]:
    """One training batch drawn by the bundle's loader, and fold 0's validation crops."""
    from auto3dseg.engine.training import fold_items
    from auto3dseg.engine.training_data import make_loader, prepare_cache
    from auto3dseg.engine.transforms import training_transforms, validation_transforms

    train_items, val_items = fold_items(cfg["data_list_file_path"], cfg["dataroot"], 0)
    prepare_cache(train_items + val_items, cfg)
    no_workers = {**cfg, "num_workers": 0}
    loader, _ = make_loader(train_items, training_transforms(cfg), no_workers, 0, 1, shuffle=True, seed=0)
    val, _ = make_loader(val_items, validation_transforms(cfg), {**no_workers, "batch_size": 1}, 0, 1, shuffle=False)
    return next(iter(loader)), list(val)


# ----------------------------------------------------------------------------- timing and pieces (own processes)
def peak_mib(device, reset: bool = False) -> float:
    """Peak GPU memory allocated (``torch.cuda.max_memory_allocated``; on the CPU the process's peak
    RSS, VmHWM) since the last call with ``reset``, which starts a new peak."""
    import torch

    if device.type == "cuda":
        if reset:
            torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    if reset:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM back to the current RSS (Linux >= 4.0)
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def timed(fn: Callable[[], Any], device, repeats: int = 1) -> float:
    """Seconds per call of ``fn``, with ``torch.cuda.synchronize`` before and after on CUDA."""
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - t0) / repeats


def measure(step: Callable[[], float], val: Callable[[], Any], volume: Callable[[], Any], device, m: dict) -> dict:
    """s/iter and peak memory of ``step``; time and peak of ``val`` (validation crops) and ``volume``."""
    for _ in range(m["warmup"]):
        step()
    peak_mib(device, reset=True)
    out = {"s_per_iter": timed(step, device, m["iters"]), "train_peak_mib": peak_mib(device), "loss": step()}
    val()  # warm-up: the first inference call selects its kernels
    peak_mib(device, reset=True)
    return {**out, "val_s": timed(val, device), "volume_s": timed(volume, device), "infer_peak_mib": peak_mib(device)}


def ours(cfg: dict, batch: dict, val_crops: list, vol, device) -> tuple[Any, Callable, Callable, Callable]:
    """Our bundle's network and the step, validation and block-wise prediction that training runs."""
    import torch

    from auto3dseg.engine.blockwise import intensity_parameters, predict_blocks
    from auto3dseg.engine.training import make_loss, make_model, train_step, validate

    model, loss_fn = make_model(cfg).to(device), make_loss(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg["learning_rate"]), weight_decay=1e-5)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None  # as _train makes it
    params = intensity_parameters(vol, cfg["intensity"])
    return (model, lambda: train_step(model, batch, loss_fn, opt, device, True, scaler, cfg["deep_supervision"]),
            lambda: validate(model, val_crops, cfg, device),
            lambda: [p for _, p in predict_blocks(model, vol, cfg, device, params)])


def official(cfg: dict, batch: dict, val_crops: list, vol, device, template: Path, mode: str) -> tuple:
    """MONAI's official segresnet as its segmenter.py trains and validates it, at ``cfg``'s patch:
    network and loss from its config (depth for the patch as generation picks it), channels-last,
    autocast + GradScaler, and its default ``SlidingWindowInfererAdapt`` (overlap 0.625, 1 window)."""
    import torch
    import yaml
    from monai.bundle import ConfigParser
    from monai.inferers import SlidingWindowInfererAdapt
    from monai.losses import DeepSupervisionLoss
    from monai.utils import optional_import

    from auto3dseg.bundles.generate import official_settings
    from auto3dseg.engine.blockwise import intensity_parameters, normalise_region

    hp = yaml.safe_load((template / "segresnet" / "configs" / "hyper_parameters.yaml").read_text())
    depth = official_settings("segresnet", template / "segresnet", patch_size=min(cfg["patch_size"]))[0]
    net = {**hp["network"], "in_channels": 1, "out_channels": len(cfg["class_ids"]),
           "blocks_down": depth["network#blocks_down"], **MODES[mode]["network"].get("official", {})}
    if str(net["norm"]).upper() == "INSTANCE_NVFUSER" and not optional_import("apex.normalization",
                                                                              name="InstanceNorm3dNVFuser")[1]:
        net["norm"] = "INSTANCE"  # what its segmenter.py does without apex
    fmt, amp = torch.channels_last_3d, device.type == "cuda"
    model = ConfigParser({"network": net}).get_parsed_content("network").to(device).to(memory_format=fmt)
    loss_fn = DeepSupervisionLoss(ConfigParser({"sigmoid": True, "loss": hp["loss"]}).get_parsed_content("loss"))
    opt = torch.optim.AdamW(model.parameters(), lr=float(hp["learning_rate"]), weight_decay=1e-5)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    x, y = batch["image"].as_subclass(torch.Tensor), batch["label"].as_subclass(torch.Tensor).float()
    inferer = SlidingWindowInfererAdapt(roi_size=cfg["patch_size"], sw_batch_size=1, overlap=0.625, mode="gaussian",
                                        cache_roi_weight_map=True, progress=False)

    def step() -> float:  # segmenter.py's train_epoch, one batch
        model.train()
        opt.zero_grad(set_to_none=True)  # its loop sets every p.grad = None: the same
        with torch.autocast(device.type, enabled=amp):
            logits = model(x.to(device=device, memory_format=fmt))
        loss = loss_fn(logits, y.to(device=device, memory_format=fmt))
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return float(loss.detach())

    @torch.no_grad()
    def infer(image: torch.Tensor) -> torch.Tensor:
        model.eval()
        with torch.autocast(device.type, enabled=amp):
            return inferer(inputs=image[None].to(device=device, memory_format=fmt), network=model)

    vol_t = torch.from_numpy(normalise_region(vol, intensity_parameters(vol, {"mode": "zscore"})))
    return (model, step, lambda: [infer(b["image"][0].as_subclass(torch.Tensor)) for b in val_crops],
            lambda: infer(vol_t))


def piece_measure(spec: dict) -> dict:
    """Every patch variant of one network (``spec['algo']``, or ``official`` at segresnet's patches)."""
    import numpy as np
    import torch

    m, device = MODES[spec["mode"]], torch.device("cuda" if torch.cuda.is_available() else "cpu")
    vol = np.random.default_rng(0).integers(0, 256, (1, *[m["volume"]] * 3), dtype=np.uint8)
    rows: list[dict] = []
    for variant in m["variants"]:
        cfg = bundle_config("segresnet" if spec["algo"] == "official" else spec["algo"], spec["data"], spec["mode"],
                            variant)
        if any(r["patch"] == cfg["patch_size"] for r in rows):
            continue  # swinunetr's smallest patch (64) is both of the dry run's
        batch, val_crops = loader_batches(cfg)
        torch.manual_seed(0)
        model, *fns = (official(cfg, batch, val_crops, vol, device, Path(spec["official"]), spec["mode"])
                       if spec["algo"] == "official" else ours(cfg, batch, val_crops, vol, device))
        rows.append({"variant": variant, "patch": cfg["patch_size"], "batch": len(batch["image"]),
                     "val_crops": len(val_crops), "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
                     **measure(*fns, device, m)})
        del model, fns
    return {"rows": rows}


def reference_step(model, shards: list[dict], loss_fn, opt, deep: bool) -> float:
    """One optimiser step whose gradient is the mean of the shards' gradients (what DDP computes)."""
    from auto3dseg.engine.networks import as_list

    model.train()
    opt.zero_grad(set_to_none=True)
    total = 0.0
    for s in shards:
        loss = loss_fn(as_list(model(s["image"]))[: None if deep else 1], s["label"], s["class_mask"], s["valid"])
        (loss / len(shards)).backward()
        total += float(loss.detach()) / len(shards)
    opt.step()
    return total


def piece_ddp(spec: dict) -> dict:
    """``spec['steps']`` fp32 steps of segresnet on the patches of one loader draw. Under torchrun:
    DDP, rank r trains on patches r::world, the loss is the ranks' mean. Else (the reference): one
    process, each of ``spec['world']`` shards' loss backpropagated with weight 1/world (the masked
    Dice is pooled over a batch, so one process on the whole batch would be another function)."""
    import torch
    import torch.distributed as dist

    from auto3dseg.engine.training import _dist_setup, make_loss, make_model, train_step

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    cfg = bundle_config("segresnet", spec["data"], spec["mode"], "data patch")
    torchrun, batch_file = "LOCAL_RANK" in os.environ, Path(spec["batch_file"])
    rank, world, device = _dist_setup(cfg)  # the training's own: NCCL on CUDA, gloo on the CPU
    if torchrun and not dist.is_initialized():  # a single process: _dist_setup leaves it alone
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if not torchrun:  # the reference runs first and draws the batch both use
        batch_file.parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.as_subclass(torch.Tensor) for k, v in loader_batches(cfg)[0].items()
                    if k in ("image", "label", "valid", "class_mask")}, batch_file)
    n, batch = int(spec["world"]), torch.load(batch_file)
    shards = [{k: v[i::n].to(device) for k, v in batch.items()} for i in range(n)]
    torch.manual_seed(0)
    model, loss_fn, deep = make_model(cfg).to(device), make_loss(cfg), bool(cfg["deep_supervision"])
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg["learning_rate"]), weight_decay=1e-5)
    losses, backend = [], dist.get_backend() if dist.is_initialized() else None
    net = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None) if torchrun else model
    for _ in range(spec["steps"]):
        if not torchrun:
            losses.append(reference_step(model, shards, loss_fn, opt, deep))
            continue
        t = torch.tensor([train_step(net, shards[rank], loss_fn, opt, device, False, None, deep)], device=device)
        dist.all_reduce(t)
        losses.append(float(t) / world)
    if dist.is_initialized():
        dist.destroy_process_group()
    return {"losses": losses, "world": world, "backend": backend} if rank == 0 else {}


PIECES = {"measure": piece_measure, "ddp": piece_ddp}


# ----------------------------------------------------------------------------- orchestration
def run_process(cmd: list[str], cap: float, log: Path) -> dict:
    """Run ``cmd`` (output to ``log``) for at most ``cap`` seconds; its ``MARK`` line's JSON as result."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        try:
            rc: int | None = proc.wait(timeout=max(1.0, cap))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: torchrun ranks and bundle trainings too
            proc.wait()
            rc = None
    lines = log.read_text(errors="replace").splitlines()
    found = [json.loads(ln[len(MARK):]) for ln in lines if ln.startswith(MARK)]
    return {"rc": rc, "seconds": round(time.time() - t0, 1), "result": found[-1] if found else None,
            "tail": lines[-12:]}


def ddp_check(py: str, spec: dict, cap: float, work: Path) -> dict:
    """The reference, then torchrun; passes when every step's loss agrees within :data:`DDP_RTOL`."""
    n = 2 if spec["mode"] == "dry" or spec["gpus"] >= 2 else 1
    spec = {**spec, "world": n, "steps": MODES[spec["mode"]]["ddp_steps"], "batch_file": str(work / "ddp" / "batch.pt")}
    t0 = time.time()
    me = [str(Path(__file__).resolve()), "--piece", "ddp", "--spec", json.dumps(spec)]
    ref = run_process([py, *me], cap / 2, work / "logs" / "ddp_reference.log")
    run = run_process([py, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={n}", *me],
                      cap - (time.time() - t0), work / "logs" / "ddp_torchrun.log")
    out: dict[str, Any] = {"processes": n, "seconds": round(time.time() - t0, 1), "reference": ref["result"],
                           "torchrun": run["result"], "ok": False, "tail": ref["tail"] + run["tail"],
                           "status": f"FAIL: {'torchrun' if ref['result'] else 'the reference'} gave no losses"}
    if ref["result"] and run["result"]:
        a, b = ref["result"]["losses"], run["result"]["losses"]
        diff = max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b))
        change = max((abs(a[i + 1] - a[i]) / abs(a[i]) for i in range(len(a) - 1)), default=0.0)
        out.update(max_rel_diff=diff, step_change=change, ok=len(a) == len(b) and diff <= DDP_RTOL)
        out["status"] = (f"{'PASS' if out['ok'] else 'FAIL'}: {n} vs 1 process, losses {[round(x, 5) for x in b]}, "
                         f"max rel. diff {diff:.1e} (tolerance {DDP_RTOL:g}; one step moves the loss {change:.1e})")
    if n < 2:
        out["status"] += f"; 2-GPU check skipped: {spec['gpus']} GPU here, torchrun + NCCL on 1 process instead"
    return out


def full_run(py: str, data: dict, mode: str, cap: float, work: Path) -> dict:
    """``--mode full`` on the demo data from a fresh work folder; it must leave the zipped submission."""
    target = work / "full"
    shutil.rmtree(target, ignore_errors=True)
    cmd = [py, "run_auto3dseg.py", "--mode", "full", "--datalist", data["datalist"], "--work_dir", str(target),
           *MODES[mode]["full"], "--truth", str(Path(data["synthetic"]) / "test_truth.zarr")]
    res = run_process(cmd, cap, work / "logs" / "full.log")
    zipped, scores = target / "submission" / "submission.zip", target / "submission" / "scores.json"
    score = json.loads(scores.read_text())["overall"]["score"] if scores.is_file() else None
    ok = res["rc"] == 0 and zipped.is_file()
    return {"rc": res["rc"], "seconds": res["seconds"], "submission": zipped.is_file(), "command": " ".join(cmd[1:]),
            "tail": res["tail"], "ok": ok, "score": score, "status": f"{'PASS' if ok else 'FAIL'}: {res['seconds']} s "
            f"(exit {res['rc']}), submission.zip {'written' if zipped.is_file() else 'MISSING'}, score {fmt(score)}"}


def fmt(x: Any, spec: str = ".3f") -> str:
    return "–" if x is None else format(x, spec)


def render(res: dict) -> str:
    """The Markdown table of a finished run, under a heading that names the device."""
    dry, dev = res["mode"] == "dry", res["device"]
    head = ["## " + ("CPU dry run figures (NOT GPU figures)" if dry else "GPU figures") + f": {dev['name']}", "",
            f"torch {dev['torch']} (CUDA {dev['cuda']}), MONAI {dev['monai']}, Python {dev['python']}, {dev['gpus']} "
            f"GPU(s); setup {fmt(res.get('setup_s'), '.0f')} s, data {fmt(res['data'].get('seconds'), '.0f')} s, "
            f"total {fmt(res.get('total_s'), '.0f')} s; {'CPU, no AMP' if dry else 'AMP (fp16 autocast, GradScaler)'}; "
            f"timed steps: {res['iters']} after {res['warmup']} warm-up", "",
            f"| piece | patch × batch | s/iter | {'peak RSS MiB (CPU)' if dry else 'peak GPU MiB'} train / infer "
            f"| validation sliding window s: crops · {res['volume']}³ volume | ours/official s/iter, memory, volume "
            "| result |", "|---|---|---|---|---|---|---|"]
    official_rows = {r["variant"]: r for r in (res["pieces"].get("official", {}).get("rows") or [])}
    rows = []
    for name in (*ALGOS, "official"):
        piece = res["pieces"].get(name, {})
        label = "MONAI official segresnet (step-level)" if name == "official" else name
        if not piece.get("rows"):
            rows.append(f"| {label} | – | – | – | – | – | {piece.get('status', 'not run')} |")
        for r in piece.get("rows") or []:
            o = official_rows.get(r["variant"]) if name == "segresnet" else None
            ratio = (f"{r['s_per_iter'] / o['s_per_iter']:.2f}, {r['train_peak_mib'] / o['train_peak_mib']:.2f}, "
                     f"{r['volume_s'] / o['volume_s']:.2f}") if o else "–"
            rows.append(f"| {label}, {r['variant']} | {'×'.join(map(str, r['patch']))} × {r['batch']} "
                        f"| {r['s_per_iter']:.3f} | {r['train_peak_mib']:.0f} / {r['infer_peak_mib']:.0f} "
                        f"| {r['val_s']:.2f} ({r['val_crops']} crops) · {r['volume_s']:.2f} | {ratio} "
                        f"| ok, loss {r['loss']:.3f} |")
    d, f = res["pieces"].get("ddp", {}), res["pieces"].get("full", {})
    rows += [
        f"| torchrun ({(d.get('torchrun') or {}).get('backend') or '–'}) | segresnet, data patch | – | – | – "
        f"| – | {d.get('status', 'not run')} |",
        f"| `--mode full {' '.join(MODES[res['mode']]['full'][:2])}` (demo data) | bundles' own | – | – | – "
        f"| – | {f.get('status', 'not run')} |"]
    notes = ["", "Ratios: ours/official at our segresnet's patches: s/iter, train peak memory and volume sliding "
             "window (ours: overlap 0.25, 2 windows per batch; the official inferer: overlap 0.625, 1 window). "
             "Official: its network and loss config, channels-last, the step only (no data pipeline)."]
    return "\n".join(head + rows + notes) + "\n"


def write_out(out: Path, res: dict, table: str, work: Path) -> None:
    """``gpu_check.md``, ``.json`` and the last 200 lines of each piece's log under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    logs = sorted((work / "logs").glob("*.log"), key=lambda p: p.stat().st_mtime)
    for name, text in (("gpu_check.md", table), ("gpu_check.json", json.dumps(res, indent=1, default=str)),
                       ("gpu_check_logs.txt", "".join(f"===== {p.name}\n" + "\n".join(
                           p.read_text(errors="replace").splitlines()[-200:]) + "\n" for p in logs))):
        (out / name).write_text(text)
    print(f"written: {out}/gpu_check.md, gpu_check.json, gpu_check_logs.txt")


def run_piece(name: str, spec: dict, cap: float, work: Path) -> dict:
    """One piece of the plan, under ``cap`` seconds."""
    if name == "ddp":
        return ddp_check(sys.executable, spec, cap, work)
    if name == "full":
        return full_run(sys.executable, spec["data"], spec["mode"], cap, work)
    r = run_process([sys.executable, str(Path(__file__).resolve()), "--piece", "measure", "--spec",
                     json.dumps({**spec, "algo": name})], cap, work / "logs" / f"{name}.log")
    return {**(r["result"] or {}), "seconds": r["seconds"], "tail": r["tail"],
            "status": "ok" if r["result"] else f"FAILED (rc {r['rc']}, see the log below)"}


def run_all(args: argparse.Namespace) -> int:
    mode, dev, started = "dry" if args.cpu_dry_run else "gpu", device_info(), args.started or time.time()
    if mode == "gpu" and not dev["gpus"]:
        print("error: no CUDA device here; bash bench/gpu_check.sh --cpu-dry-run runs the same code paths on the CPU")
        return 2
    deadline = started + (GPU_BUDGET_S if mode == "gpu" else 600)
    work, m = Path(args.work).resolve(), MODES[mode]
    official_dir = official_templates()
    steps = [(n, m["estimate"].get(n, m["estimate"]["network"]), m["cap"].get(n, m["cap"]["network"]))
             for n in ("data", *ALGOS, *(["official"] if official_dir else []), "ddp", "full")]
    print(f"gpu_check ({'CPU DRY RUN' if mode == 'dry' else 'GPU'}) plan, estimate/cap s: "
          + ", ".join(f"{n} {e}/{c}" for n, e, c in steps) + f"; estimated {sum(e for _, e, _ in steps)} s after "
          f"setup, deadline {deadline - started:.0f} s after start", flush=True)
    res: dict[str, Any] = {"mode": mode, "device": dev, "setup_s": round(time.time() - started), "iters": m["iters"],
                           "warmup": m["warmup"], "volume": m["volume"], "pieces": {}, "data": {}}
    for sub in ("bundles", "ddp"):
        shutil.rmtree(work / sub, ignore_errors=True)
    res["data"] = prepare_data(work, sys.executable, steps[0][2])
    print(f"data: ready ({res['data']['seconds']} s)", flush=True)
    spec = {"mode": mode, "data": res["data"], "official": str(official_dir) if official_dir else None,
            "gpus": res["device"]["gpus"]}
    for i, (name, _, cap) in enumerate(steps[1:], 1):
        left = min(cap, deadline - time.time() - sum(e for _, e, _ in steps[i + 1:]))  # room for what follows
        piece = res["pieces"][name] = run_piece(name, spec, left, work) if left >= 10 else {
            "status": f"skipped: time budget ({deadline - time.time():.0f} s left)"}
        print(f"{name}: {piece['status']} ({piece.get('seconds', '–')} s)", flush=True)
    if not official_dir:
        res["pieces"]["official"] = {"status": "skipped: MONAI's official templates not found (../shared absent; "
                                               "bash bench/gpu_check.sh --prepare-carry copies them for a device)"}
    res["total_s"] = round(time.time() - started, 1)
    table = render(res)
    print("\n" + table)
    failed = [n for n, v in res["pieces"].items() if v["status"].startswith(("FAIL", "skipped: time"))]
    for n in failed:
        print(f"--- {n} failed; the last lines of its log:\n" + "\n".join(res["pieces"][n].get("tail") or []))
    if os.environ.get("OUT"):
        write_out(Path(os.environ["OUT"]), res, table, work)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-dry-run", action="store_true", help="the same code paths on the CPU, tiny sizes")
    p.add_argument("--work", default=str(ROOT / "bench" / "out" / "gpu_check"), help="scratch folder")
    p.add_argument("--started", type=float, default=None, help="epoch seconds of the shell script's start: the "
                   "deadline and the setup time (environment, imports) count from it")
    p.add_argument("--piece", choices=sorted(PIECES), help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.piece:
        result = PIECES[args.piece](json.loads(args.spec))
        print(MARK + json.dumps(result) if result else "", flush=True)  # other torchrun ranks: nothing
        return 0
    return run_all(args)


if __name__ == "__main__":
    sys.exit(main())
