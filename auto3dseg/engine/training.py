"""The one training engine behind every bundle (``scripts/train.py run`` calls :func:`run`).

One epoch is ``num_iterations_per_epoch`` batches of class-balanced patches drawn from the
fold's training crops (:mod:`auto3dseg.engine.training_data`); how many epochs comes from
``num_epochs`` or a ``budget`` of iterations or time (:mod:`auto3dseg.engine.budget`), printed with
its reason when training starts. After every epoch the full state goes to ``<ckpt_path>/last.pt``
(written to a temporary name, then renamed), so a killed run resumes where it stopped.
Validation runs sliding windows over whole validation crops and scores each class only on
crops that annotate it; each new best goes to ``model.pt`` and ``progress.yaml``
(``best_avg_dice_score``, which MONAI's ``get_score`` reads).

Launched by ``torchrun`` (``WORLD_SIZE`` > 1), it trains with DistributedDataParallel.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from auto3dseg.bundles.config import load_bundle_config, write_yaml_atomic
from auto3dseg.engine.budget import epochs_for_time, initial_plan, parse_budget
from auto3dseg.engine.checkpoints import atomic_torch_save, load_checkpoint, resume_progress, write_progress
from auto3dseg.engine.losses import DeepSupervisionLoss, MaskedDiceBCELoss, MaskedDiceCELoss
from auto3dseg.engine.networks import as_list, build_network, load_pretrained, min_patch_sides, patch_multiples
from auto3dseg.engine.training_data import fold_items, make_loader, prepare_cache, write_split_record
from auto3dseg.engine.training_report import format_eta, plot_progress, tensorboard_writer
from auto3dseg.engine.validation import validate

__all__ = [
    "CHECKPOINT_KEYS",
    "INFERENCE_KEYS",
    "TrainState",
    "fold_items",
    "make_loss",
    "make_model",
    "run",
    "train",
    "train_step",
]

#: config values a checkpoint must agree on to be resumed
CHECKPOINT_KEYS = ("algo", "network", "class_ids", "input_channels", "output_activation", "spatial_dims")
#: config values inference takes from the checkpoint (what the model was trained with)
INFERENCE_KEYS = CHECKPOINT_KEYS + ("class_names", "class_members", "patch_size", "intensity", "spacing")


def run(config_file: str | Sequence[str], **override: Any) -> None:
    """Fire entry point: ``python scripts/train.py run --config_file=<yaml>[,<yaml>] --key=value``.

    A user error (bad image, busy bundle, damaged checkpoint) ends it with one ``error:`` line
    naming the file and exit code 2, instead of MONAI's ``applying transform <...>`` traceback."""
    import sys

    from auto3dseg.engine.input_checks import user_error

    try:
        train(load_bundle_config(config_file, override))
    except Exception as exc:  # noqa: BLE001 - sorted into user errors (one line) and bugs (traceback)
        found = exc if getattr(exc, "user_message", False) else user_error(exc)
        if found is None or os.environ.get("AUTO3DSEG_DEBUG"):
            raise
        print(f"error: {found}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


# ----------------------------------------------------------------------------- model and loss
def make_model(cfg: Mapping[str, Any]) -> nn.Module:
    """The bundle's network, with local pretrained weights when ``pretrained_ckpt`` is set."""
    out_ch = len(cfg["class_ids"]) + (1 if cfg.get("output_activation") == "softmax" else 0)
    net = build_network(cfg["algo"], int(cfg.get("input_channels", 1)), out_ch, cfg.get("network"),
                        spatial_dims=int(cfg.get("spatial_dims", 3)))
    if cfg.get("pretrained_ckpt"):
        missing, _ = load_pretrained(net, cfg["pretrained_ckpt"])
        print(f"[{cfg['algo']}] pretrained weights from {cfg['pretrained_ckpt']} ({len(missing)} layers left as initialised)")
    return net


#: what training reads from a bundle's config before anything else
_REQUIRED = ("algo", "fold", "ckpt_path", "patch_size", "class_ids", "class_names", "class_members",
             "learning_rate", "num_epochs", "data_list_file_path", "dataroot")


def preflight(cfg: Mapping[str, Any]) -> None:
    """Check, without training, what training would fail on at its start: a missing key, values
    of the wrong type or range, a patch the network cannot take, a network that cannot be built.
    Run before ``--force`` moves a bundle's weights aside; raises ``ValueError`` naming the key.

    >>> preflight({"algo": "segresnet"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: missing key(s) fold, ckpt_path, ...
    """
    missing = [k for k in _REQUIRED if k not in cfg]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)}")
    dims = int(cfg.get("spatial_dims", 3))
    patch = cfg["patch_size"]
    if not isinstance(patch, (list, tuple)) or len(patch) != dims or not all(
            isinstance(p, int) and not isinstance(p, bool) and p > 0 for p in patch):
        raise ValueError(f"patch_size {patch!r}: expected {dims} whole numbers > 0 (spatial_dims {dims})")
    resolution = (cfg.get("network") or {}).get("resolution")
    if resolution is not None and (not isinstance(resolution, (list, tuple)) or len(resolution) != dims):
        raise ValueError(f"network#resolution {resolution!r}: expected null or {dims} voxel sizes")
    for key, value in dict(cfg.get("network") or {}).items():
        if isinstance(value, str) and value[:1] in "$@%":
            raise ValueError(f"network#{key} {value!r}: a MONAI expression or reference, which this project's engine "
                             "does not evaluate; write the value itself")
    _check_patch(cfg)
    for key in ("learning_rate", "weight_decay"):
        try:
            value = float(cfg.get(key, 1e-5))
        except (TypeError, ValueError):
            raise ValueError(f"{key} {cfg.get(key)!r}: expected a number") from None
        if key == "learning_rate" and not value > 0:
            raise ValueError(f"learning_rate {cfg[key]!r}: expected a number > 0")
    try:
        initial_plan(dict(cfg))
        parse_budget(cfg.get("budget"))
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
    try:
        build_network(cfg["algo"], int(cfg.get("input_channels", 1)), len(cfg["class_ids"]) + 1, cfg.get("network"),
                      spatial_dims=dims)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # the network's constructor names no key
        raise ValueError(f"network {dict(cfg.get('network') or {})}: {cfg['algo']} cannot be built with it "
                         f"({type(exc).__name__}: {exc})") from None


def make_loss(cfg: Mapping[str, Any]) -> DeepSupervisionLoss:
    base = MaskedDiceCELoss() if cfg.get("output_activation") == "softmax" else MaskedDiceBCELoss()
    return DeepSupervisionLoss(base)


def _check_patch(cfg: Mapping[str, Any]) -> None:
    mults = patch_multiples(cfg["algo"], cfg.get("network"), len(cfg["patch_size"]))
    if any(int(p) % m for p, m in zip(cfg["patch_size"], mults)):
        need = mults[0] if len(set(mults)) == 1 else f"{mults} (per axis)"
        raise ValueError(f"patch_size {cfg['patch_size']}: every side must be a multiple of {need} for {cfg['algo']}; "
                         f"edit {cfg.get('bundle_root', '')}/configs/hyper_parameters.yaml, or train with "
                         f"--override patch_size=[...] (--patch_size applies when bundles are generated)")
    if math.prod(int(p) // m for p, m in zip(cfg["patch_size"], mults)) <= 1:  # a 1-voxel bottleneck: no norm
        low = min_patch_sides(cfg["algo"], cfg.get("network"), len(cfg["patch_size"]))
        raise ValueError(f"patch_size {cfg['patch_size']}: {cfg['algo']} downsamples it by {mults} to a single voxel, "
                         f"which its normalisation cannot train on; its smallest patch is {low}: generate with a larger "
                         f"--patch_size (--mode generate --force), or train with --override patch_size=[...]")


def train_step(model: nn.Module, batch: Mapping[str, torch.Tensor], loss_fn: nn.Module,
               optimizer: torch.optim.Optimizer, device: torch.device, amp: bool = False,
               scaler: Any = None, deep_supervision: bool = True) -> float:
    """One optimisation step on a collated batch; returns the loss value."""
    model.train()
    image = batch["image"].to(device, non_blocking=True)
    target = batch["label"].to(device, non_blocking=True)
    valid = batch["valid"].to(device, non_blocking=True)
    class_mask = batch["class_mask"].to(device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    use_amp = amp and device.type == "cuda"
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
        outputs = as_list(model(image))
    if not deep_supervision:
        outputs = outputs[:1]
    loss = loss_fn([o.float() for o in outputs], target, class_mask, valid)
    if scaler is not None and use_amp:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return float(loss.detach())


# ----------------------------------------------------------------------------- state
@dataclass
class TrainState:
    """What ``last.pt`` holds besides the weights: enough to resume exactly."""

    epoch: int = 0  # epochs completed
    planned_epochs: int = 0  # epochs this run will train (0: not decided yet, a time budget waits for epoch 1)
    best_metric: float = -1.0
    best_epoch: int = -1
    stale_validations: int = 0
    finished: str = ""  # "", "completed" or "early_stopped"
    history: list = field(default_factory=list)  # one dict per epoch


class _UserError(RuntimeError):
    """A training error whose message tells the user what to do (printed as one line)."""

    user_message = True


def _config_fingerprint(cfg: Mapping[str, Any]) -> dict:
    return {k: cfg.get(k) for k in CHECKPOINT_KEYS}


def _rng_state() -> dict:
    """This process's global random states: python, numpy, torch CPU and every CUDA device."""
    cuda = {"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(), **cuda}


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and len(state.get("cuda") or []) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _dist_setup(cfg: Mapping[str, Any]) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        import torch.distributed as dist

        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
    if torch.cuda.is_available() and cfg.get("device", "auto") != "cpu":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def _validation_every(cfg: Mapping[str, Any], val_items: list, iterations: int, num_epochs: int
                      ) -> tuple[int, float, str]:
    """Epochs between validations: the config's number, or with ``auto`` (new bundles) one that keeps
    validating near a fifth of the run (:func:`~auto3dseg.engine.budget.validation_interval`); the
    estimated cost of a validation in epochs (0 when not estimated) and a line saying so when it
    is not every epoch."""
    from auto3dseg.engine.budget import validation_interval

    value = cfg.get("num_epochs_per_validation", 1)
    if str(value).strip().lower() != "auto":
        return max(1, int(value)), 0.0, ""
    import nibabel as nib

    patch = [int(p) for p in cfg["patch_size"]]
    voxels = sum(math.prod(int(s) for s in nib.load(str(it["image"])).shape[:len(patch)]) for it in val_items)
    patches = iterations * int(cfg.get("batch_size", 1)) * int(cfg.get("num_patches_per_image", 1))
    every, cost = validation_interval(voxels, patch, patches, num_epochs, float(cfg.get("sw_overlap", 0.25)))
    if every == 1:
        return 1, cost, ""
    return every, cost, (f"validation every {every} epochs and after the last: one costs about {cost:g} epochs of training "
                   f"({voxels / 1e6:.0f} M voxels of sliding windows); --override num_epochs_per_validation=1 to "
                   "validate every epoch")


def _lr_lambda(num_epochs: int, warmup: int = 3):
    def f(epoch: int) -> float:
        if epoch < warmup:
            return (epoch + 1) / (warmup + 1)
        t = (epoch - warmup) / max(1, num_epochs - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))
    return f


# ----------------------------------------------------------------------------- the loop
def train(cfg: Mapping[str, Any]) -> dict:
    """Train one bundle (one network on one fold); returns a summary dict.

    Resumes from ``<ckpt_path>/last.pt`` when ``resume`` is true (the default) and the
    checkpoint was made with the same network, classes and channels; a run that already
    finished returns at once. Rank 0 holds the bundle's lock (:mod:`auto3dseg.orchestration.locks`; inherited
    when ``--mode train`` launched it) and first removes the temporaries a killed run left.
    """
    import contextlib

    from auto3dseg.orchestration.lifetime import die_with_torchrun
    from auto3dseg.orchestration.locks import bundle_lock, clean_temporaries

    die_with_torchrun()
    ckpt_dir = Path(cfg["ckpt_path"])
    root = Path(cfg.get("bundle_root") or ckpt_dir.parent)
    rank0 = int(os.environ.get("RANK", "0")) == 0  # torchrun's other ranks work under rank 0's lock
    with bundle_lock(root) if rank0 else contextlib.nullcontext():
        if rank0:
            clean_temporaries(ckpt_dir)
        return _train(cfg)


def _train(cfg: Mapping[str, Any]) -> dict:
    from auto3dseg.engine.transforms import training_transforms, validation_transforms

    cfg = dict(cfg)
    _check_patch(cfg)
    rank, world, device = _dist_setup(cfg)
    name = f"{cfg['algo']}_{cfg['fold']}"
    ckpt_dir = Path(cfg["ckpt_path"])
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "model.pt"
    seed = int(cfg.get("seed", 0)) + rank
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

    model = make_model(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(cfg["learning_rate"]),
                                  weight_decay=float(cfg.get("weight_decay", 1e-5)))
    num_epochs, plan_reason = initial_plan(cfg)
    time_budget = (parse_budget(cfg.get("budget")) or {}).get("minutes")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(num_epochs))
    scaler = torch.amp.GradScaler("cuda") if (device.type == "cuda" and cfg.get("amp", True)) else None
    state = TrainState()
    ckpt = None
    if cfg.get("resume", True) and last_path.is_file():
        ckpt = load_checkpoint(last_path, f"Delete it to restart {name} from its first epoch (or run --mode train "
                               f"--algo {cfg['algo']} --fold {cfg['fold']} --force, which moves model/ aside)")
        if ckpt.get("config") != _config_fingerprint(cfg):
            raise _UserError(
                f"{last_path} was trained with {ckpt.get('config')}, this config has {_config_fingerprint(cfg)}. "
                "Resume with the same network and classes, or start over: run_auto3dseg.py --mode train "
                f"--algo {cfg['algo']} --fold {cfg['fold']} --force (moves model/ aside), or --override "
                "resume=false (the old checkpoint is then overwritten).")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        state = TrainState(**ckpt["state"])
        progress = resume_progress(ckpt, ckpt_dir, state.epoch) if rank == 0 else []
        if state.planned_epochs and time_budget:  # the plan made after this run's first epoch holds
            num_epochs, plan_reason = state.planned_epochs, f"time budget {time_budget:g} min, planned at epoch 1"
            scheduler.lr_lambdas = [_lr_lambda(num_epochs)]
        if state.finished == "completed" and state.epoch < num_epochs:
            state.finished = ""  # num_epochs was raised since: go on
        if state.finished:
            if rank == 0:
                print(f"[{name}] already trained ({state.finished} after {state.epoch} epochs, "
                      f"best Dice {state.best_metric:.4f} at epoch {state.best_epoch}); nothing to do")
            return {"name": name, "epochs": state.epoch, "best_avg_dice_score": state.best_metric,
                    "finished": state.finished, "resumed": True}
        if rank == 0:
            print(f"[{name}] resuming from epoch {state.epoch} of {num_epochs} ({last_path})")
    resumed_from = state.epoch
    if ckpt is None:
        progress: list = []

    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    train_items, val_items = fold_items(cfg["data_list_file_path"], cfg["dataroot"], int(cfg["fold"]))
    prepare_cache(train_items + val_items, cfg, rank, world)  # preprocessed once; the loaders read patches
    train_loader, sampler = make_loader(train_items, training_transforms(cfg), cfg, rank, world, shuffle=True,
                                        seed=int(cfg.get("seed", 0)))
    val_shard = val_items[rank::world]
    val_loader, _ = make_loader(val_shard, validation_transforms(cfg), {**cfg, "batch_size": 1, "cache_rate": 0},
                                0, 1, shuffle=False)
    loss_fn = make_loss(cfg)
    writer = tensorboard_writer(ckpt_dir / "tensorboard") if rank == 0 else None
    patience = int(cfg.get("early_stop_patience", 0) or 0)
    val_every, val_cost, val_note = _validation_every(cfg, val_shard, len(train_loader), num_epochs)
    if rank == 0:
        write_yaml_atomic(ckpt_dir / "effective_config.yaml", cfg,
                          header="# the configuration this training ran with (bundle YAML + overrides)\n")
        write_split_record(ckpt_dir, int(cfg["fold"]), cfg["data_list_file_path"], train_items, val_items)
        print(f"[{name}] {len(train_items)} training / {len(val_items)} validation crops, patch {cfg['patch_size']}, "
              f"{cfg['output_activation']} output, {len(cfg['class_ids'])} classes, device {device}"
              + (f" x{world}" if world > 1 else ""))
        print(f"[{name}] {num_epochs} epochs x {len(train_loader)} iterations of {cfg.get('batch_size', 1)} x "
              f"{cfg.get('num_patches_per_image', 1)} patches ({plan_reason}; set --budget ITERATIONS or a time "
              "such as 2h, or --override num_epochs=N num_iterations_per_epoch=N)")
        if val_note:
            print(f"[{name}] {val_note}")

    if ckpt is not None:  # random streams last, so that building the rest does not consume them
        rngs = ckpt.get("rng") or []
        if len(rngs) == world:
            _set_rng_state(rngs[rank])
            sampler.set_epoch(int(ckpt.get("sampler_epoch", state.epoch - 1)))
        elif rank == 0:
            why = f"random states of {len(rngs)} processes, not {world}" if rngs else "no random state (older version)"
            print(f"[{name}] note: {last_path.name} holds {why}; this resume is not exact")
    t_start = time.time()
    for epoch in range(state.epoch, num_epochs):
        t0 = time.time()
        sampler.set_epoch(epoch)
        losses = []
        for batch in train_loader:
            losses.append(train_step(net, batch, loss_fn, optimizer, device, bool(cfg.get("amp", True)), scaler,
                                     bool(cfg.get("deep_supervision", True))))
        scheduler.step()
        mean_loss = float(np.mean(losses)) if losses else float("nan")
        if world > 1:
            import torch.distributed as dist

            t = torch.tensor([mean_loss], device=device)
            dist.all_reduce(t)
            mean_loss = float(t) / world
        entry: dict[str, Any] = {"epoch": epoch + 1, "loss": mean_loss, "lr": float(optimizer.param_groups[0]["lr"]),
                                 "seconds": 0.0, "val_dice": None}
        improved = False
        if (epoch + 1) % val_every == 0 or epoch + 1 == num_epochs:
            sums, counts = validate(model, val_loader, cfg, device)
            if world > 1:
                import torch.distributed as dist

                st = torch.stack([sums, counts]).to(device)
                dist.all_reduce(st)
                sums, counts = st[0].cpu(), st[1].cpu()
            per_class = {n: (float(s / c) if c > 0 else None)
                         for n, s, c in zip(cfg["class_names"], sums, counts)}
            scored = [v for v in per_class.values() if v is not None]
            val_dice = float(np.mean(scored)) if scored else 0.0
            entry["val_dice"], entry["val_dice_per_class"] = val_dice, per_class
            if val_dice > state.best_metric:
                improved = True
                state.best_metric, state.best_epoch, state.stale_validations = val_dice, epoch + 1, 0
            else:
                state.stale_validations += 1
        entry["seconds"] = round(time.time() - t0, 3)
        state.history.append(entry)
        state.epoch = epoch + 1
        if time_budget and not state.planned_epochs:  # the first epoch says how many fit in the time given
            seconds = entry["seconds"]
            if entry["val_dice"] is None:  # no validation in it: add the share the later ones will take
                seconds *= 1.0 + val_cost / val_every
            num_epochs = epochs_for_time(time_budget, seconds, num_epochs)
            scheduler.lr_lambdas = [_lr_lambda(num_epochs)]
            if rank == 0:
                print(f"[{name}] time budget {time_budget:g} min, first epoch {entry['seconds']:.1f} s: "
                      f"{num_epochs} epochs planned")
        state.planned_epochs = num_epochs
        if patience and state.stale_validations >= patience:
            state.finished = "early_stopped"
        elif state.epoch >= num_epochs:
            state.finished = "completed"

        rngs = [_rng_state()] * world  # every process's, for its own resume
        if world > 1:
            torch.distributed.all_gather_object(rngs, rngs[0])
        if rank == 0:
            fp = _config_fingerprint(cfg)
            if improved:  # order and why: auto3dseg.engine.checkpoints
                atomic_torch_save({"state_dict": model.state_dict(), "epoch": state.epoch,
                                   "best_metric": state.best_metric, "config": fp,
                                   "inference_config": {k: cfg.get(k) for k in INFERENCE_KEYS}}, best_path)
                progress.append({"best_avg_dice_score": state.best_metric, "best_avg_dice_score_epoch": state.best_epoch,
                                 "best_avg_dice_score_per_class": entry["val_dice_per_class"],
                                 "inverted_best_validation": False, "time": time.strftime("%Y-%m-%d %H:%M:%S")})
            atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                               "state": state.__dict__, "config": fp, "progress": progress,
                               "rng": rngs, "sampler_epoch": sampler.epoch}, last_path)
            if improved:
                write_progress(ckpt_dir, progress)
            write_yaml_atomic(ckpt_dir / "training_state.yaml", {
                "bundle": name, "epochs_done": state.epoch, "num_epochs": num_epochs, "finished": state.finished or None,
                "best_avg_dice_score": state.best_metric, "best_epoch": state.best_epoch})
            plot_progress(state.history, ckpt_dir / "progress.png", f"{name}: loss and validation Dice")
            if writer is not None:
                writer.add_scalar("train/loss", mean_loss, state.epoch)
                writer.add_scalar("train/lr", entry["lr"], state.epoch)
                if entry["val_dice"] is not None:
                    writer.add_scalar("val/mean_dice", entry["val_dice"], state.epoch)
                    for n, v in entry["val_dice_per_class"].items():
                        if v is not None:
                            writer.add_scalar(f"val_dice/{n}", v, state.epoch)
                writer.flush()
            done_epochs = state.epoch - resumed_from
            eta = (time.time() - t_start) / max(1, done_epochs) * (num_epochs - state.epoch)
            val_txt = "" if entry["val_dice"] is None else f"  val Dice {entry['val_dice']:.4f}"
            print(f"[{name}] epoch {state.epoch}/{num_epochs}  loss {mean_loss:.4f}{val_txt}  "
                  f"best {state.best_metric:.4f} @{state.best_epoch}  lr {entry['lr']:.2e}  "
                  f"{entry['seconds']:.1f}s  ETA {format_eta(eta)}", flush=True)
        if state.finished:
            break

    if rank == 0:
        if state.finished == "early_stopped":
            print(f"[{name}] early stop: no improvement in {patience} validations")
        if writer is not None:
            writer.close()
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return {"name": name, "epochs": state.epoch, "best_avg_dice_score": state.best_metric,
            "finished": state.finished, "resumed": resumed_from > 0}
