"""``--mode ensemble`` / ``--mode predict``: average the chosen bundles' probabilities.

MONAI's ensemble builder picks the bundles (``AlgoEnsembleBestByFold``: the best network
of each fold; ``AlgoEnsembleBestN``: the N best scores) from the trained ones. MONAI's
ensemble call would then reduce the mean to classes (argmax, or ``> 0.5`` only if told
``sigmoid``) and rebuild each bundle's inferer for every image; we keep its selection and
do the averaging here, loading each bundle once, and write what post-processing needs:
one probability map per image (``<case>_prob.zarr``: ``class, z, y, x`` uint8, probability
``q / 255``, :mod:`auto3dseg.ensembling.probability_maps`) plus ``ensemble.json`` naming the
channels and the bundles used.

Our bundles are averaged block by block (:mod:`auto3dseg.engine.blockwise`): the image is
read once in its stored dtype, every bundle predicts the same block cores, their mean is
written to the map, and the next block follows. Memory is one block's, whatever the image's
size (a 1000³ test crop with 48 classes goes through in a few GB). Bundles of other templates
(MONAI's official ones) give whole maps through their ``infer``; those are averaged whole.

Each inferer gets the datalist item (``{"image": path, ...}``), as MONAI's ensemble passes
it: MONAI's official templates load it with ``LoadImaged``. Channels are named from the
class table (``background`` first for softmax) and the activation is the one the bundles'
configs state (ours: ``output_activation``; official: ``sigmoid``, ``softmax``,
``training#softmax``), or, when they state none, what the output shows (softmax channels
sum to 1).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from auto3dseg.ensembling.kept_maps import keep_maps, keep_other_images_map, made_by_note, maps_in
from auto3dseg.ensembling.progress import bar_safe
from auto3dseg.ensembling.probability_maps import map_intact, probability_map_name, write_probability_map
from auto3dseg.ensembling.selection import gone_bundles, refuse_bundles_in_training, select_ensemble, trained_history
from auto3dseg.ensembling.weights_stamp import (
    bundles_signature,
    configs_digest,
    image_stamp,
    same_source,
    weights_stamp,
)
from auto3dseg.orchestration.workdir import (
    ENSEMBLE_DIR,
    in_directory,
    list_bundles,
    moved_key,
    read_input,
)

__all__ = [
    "bundle_activation",
    "ensemble_probabilities",
    "name_channels",
    "load_inferers",
    "run_ensemble",
    "write_case_map",
]

#: what ensemble.json says of the maps' format
MAP_FORMAT = "Zarr v2 array class, z, y, x (2-D: class, y, x); uint8 q, probability q / 255"

#: the completion marker of an ensemble, and the record of one still being written
MANIFEST, PARTIAL = "ensemble.json", "ensemble.partial.json"


def _case_name(path: str) -> str:
    name = Path(path).name
    for ext in (".nii.gz", ".nii", ".tiff", ".tif", ".png"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def ensemble_probabilities(inferers: Sequence[Any], item: str | Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Mean of each inferer's ``infer(item)``; returns ``(prob [C, *S], affine)``.

    ``item`` is the datalist item (a path is made ``{"image": path}``), as MONAI's ensemble
    passes it to ``InferClass.infer``.

    Examples
    --------
    >>> class Half:
    ...     def infer(self, item):
    ...         return np.full((2, 3, 3, 1), 0.5 if item["image"] == "a.nii.gz" else 0.0)
    >>> ensemble_probabilities([Half(), Half()], "a.nii.gz")[0].shape
    (2, 3, 3, 1)
    """
    item = {"image": os.fspath(item)} if isinstance(item, (str, os.PathLike)) else dict(item)
    total: np.ndarray | None = None
    affine = np.eye(4)
    for inf in inferers:
        pred = inf.infer(item)
        if hasattr(pred, "affine"):
            affine = np.asarray(pred.affine)
        arr = pred.detach().cpu().numpy() if hasattr(pred, "detach") else np.asarray(pred)
        arr = arr.astype(np.float32, copy=False)
        if total is None:  # a fresh tensor from the inferer is ours: no copy of a whole-slide map
            total = arr if hasattr(pred, "detach") and arr.flags.writeable else arr.copy()
        elif total.shape != arr.shape:
            raise ValueError(f"{item['image']}: bundles disagree on the output shape ({total.shape} vs {arr.shape})")
        else:
            total += arr
    assert total is not None
    return total / len(inferers), affine


def bundle_activation(bundle: str | os.PathLike) -> str | None:
    """``"sigmoid"`` or ``"softmax"`` as the bundle's ``configs/*.yaml`` state it, else None.

    Ours say ``output_activation``; MONAI's official segresnet ``sigmoid``, swinunetr
    ``softmax``, dints ``training#softmax``.

    Examples
    --------
    >>> bundle_activation("work_dir/segresnet_0")  # doctest: +SKIP
    'sigmoid'
    """
    from monai.bundle import ConfigParser

    files = sorted(str(f) for f in (Path(bundle) / "configs").glob("*.yaml"))
    if not files:
        return None
    parser = ConfigParser(globals=False)
    parser.read_config(files)
    if "output_activation" in parser and parser["output_activation"] in ("sigmoid", "softmax"):
        return str(parser["output_activation"])
    for key, when_true in (("sigmoid", "sigmoid"), ("softmax", "softmax"), ("training#softmax", "softmax")):
        if key in parser and isinstance(parser[key], bool):
            return when_true if parser[key] else ({"sigmoid", "softmax"} - {when_true}).pop()
    return None


def name_channels(prob: np.ndarray, class_table: Sequence[Mapping[str, Any]], activation: str | None = None
                  ) -> tuple[list[str], str, str]:
    """Channel names, activation and where the activation came from, for ``prob [C, *S]``.

    ``activation`` (from the bundles' configs) wins; without one, channels that sum to 1
    everywhere are a softmax. Sigmoid: one channel per class in class-table order; softmax:
    ``background`` then the classes by id (value ``v`` in channel ``v``). A channel count
    that fits neither gives ``channel_<i>``.

    Examples
    --------
    >>> table = [{"id": 1, "name": "mito"}, {"id": 2, "name": "er"}]
    >>> name_channels(np.full((3, 2, 2, 1), 1 / 3), table)
    (['background', 'mito', 'er'], 'softmax', 'output')
    >>> name_channels(np.full((2, 2, 2, 1), 0.9), table, "sigmoid")
    (['mito', 'er'], 'sigmoid', 'config')
    """
    n = int(prob.shape[0])
    source = "config"
    if activation not in ("sigmoid", "softmax"):
        flat = prob.reshape(n, -1)
        sample = flat[:, :: max(1, flat.shape[1] // 100_000)]
        sums_to_one = n > 1 and bool(np.all(np.abs(sample.sum(0) - 1.0) < 0.02))
        activation, source = ("softmax" if sums_to_one else "sigmoid"), "output"
    names = [str(r["name"]) for r in class_table]
    by_id = [str(r["name"]) for r in sorted(class_table, key=lambda r: int(r["id"]))]
    if activation == "sigmoid" and n == len(names):
        return names, activation, source
    if activation == "softmax" and n == len(names) + 1:
        return ["background", *by_id], activation, source
    return [f"channel_{i}" for i in range(n)], activation, source


def run_ensemble(work_dir: str | os.PathLike, *, method: str = "best_by_fold", n_best: int = 5,
                 algos: Sequence[str] | None = None, images: Sequence[str] | None = None,
                 output_dir: str | os.PathLike | None = None, force: bool = False, allow_unfinished: bool = False,
                 tta: bool = False, log=print) -> Path:
    """Probability maps for the datalist's ``testing`` items (or ``images``); returns the
    path of ``ensemble.json``. Maps already written by the same choice of bundles are kept.
    ``allow_unfinished`` also uses bundles that stopped early with a best model (named).
    ``tta``: test-time mirroring (maps of another setting are recomputed).

    ``ensemble.json`` is the completion marker: removed before any map is rewritten, written
    last, when every map is there; ``ensemble.partial.json`` records the maps done so far, so a
    killed run resumes, and nothing takes a partial ensemble for a complete one. One run at a
    time per output folder (:mod:`auto3dseg.orchestration.locks`)."""
    from auto3dseg.orchestration.locks import clean_temporaries, step_lock

    work = Path(work_dir).resolve()
    out_dir = Path(output_dir) if output_dir else work / ENSEMBLE_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    with step_lock(out_dir, "ensemble" if not images else "predict", log=log):
        clean_temporaries(out_dir)
        return _run_ensemble(work, out_dir, method=method, n_best=n_best, algos=algos, images=images, force=force,
                             allow_unfinished=allow_unfinished, tta=tta, log=log)


def _check_chosen(work: Path, chosen: list[dict], datalist: str) -> None:
    """The chosen bundles' class table is the datalist's (ValueError naming both otherwise)."""
    from monai.utils.enums import AlgoKeys

    from auto3dseg.bundles.checks import check_class_tables, older_channels_note

    ids = {a[AlgoKeys.ID] for a in chosen}
    check_class_tables([b for b in list_bundles(work) if b.name in ids], datalist, work)
    if note := older_channels_note([b for b in list_bundles(work) if b.name in ids], datalist, work):
        print(note, file=sys.stderr)


def _previous_manifest(out_dir: Path) -> dict:
    """The last manifest: the complete one, else the record of a run that was interrupted."""
    for name in (MANIFEST, PARTIAL):
        f = out_dir / name
        if f.is_file():
            try:
                return json.loads(f.read_text())
            except ValueError:
                f.unlink()  # written atomically, so only an older version leaves one damaged
    return {}


def _blockwise(inferers: Sequence[Any]) -> bool:
    """True when every inferer predicts block by block (ours; MONAI's official ones do not)."""
    return all(hasattr(i, "predict_blocks") and hasattr(i, "load") for i in inferers)


def _predict_map_blockwise(inferers: Sequence[Any], case: Mapping[str, Any], out: Path, channels: list[str],
                           activation: str | None, log=print) -> list[int]:
    """Average the bundles' probabilities block by block into the map ``out``; returns its shape.
    A constant image (blank: nothing to segment) is predicted, and named."""
    from tqdm import tqdm

    from auto3dseg.engine.blockwise import block_core, chunk_shape, plan_blocks, sw_memory_bytes
    from auto3dseg.ensembling.probability_maps import ProbabilityMapWriter

    image, meta = inferers[0].load(case)
    if image.numel() if hasattr(image, "numel") else image.size:
        lo, hi = float(image.min()), float(image.max())
        if lo == hi:
            log(f"note: {case['image']} is constant ({lo:g} everywhere: blank?); its map and labels say nothing "
                "about it")
    spatial = tuple(int(s) for s in image.shape[1:])
    params = [inf.intensity_parameters(image) for inf in inferers]
    patch = np.max([np.asarray(inf.cfg["patch_size"], dtype=int) for inf in inferers], axis=0).tolist()
    budget = min(sw_memory_bytes(inf.cfg, inf.device) for inf in inferers)
    core = block_core(spatial, patch, len(channels), budget, int(image.shape[0]))
    n_blocks = len(plan_blocks(spatial, core, [0] * len(spatial)))
    affine = np.asarray(meta.get("affine", np.eye(len(spatial) + 1)), dtype=np.float64)
    writer = ProbabilityMapWriter(out, len(channels), spatial, affine, chunks=chunk_shape(spatial, core))
    try:
        streams = [inf.predict_blocks(image, p, core=core) for inf, p in zip(inferers, params)]
        for _ in tqdm(range(n_blocks), desc=f"  {out.name}", unit="block", leave=False, disable=n_blocks < 2):
            total = None
            for stream in streams:  # one bundle's block at a time: memory is one block, not one per bundle
                block, prob = next(stream)
                total = prob if total is None else total.add_(prob)
            writer.write(block.core, total.div_(len(streams)))
        writer.commit(channels, activation)
    except BaseException:
        writer.abort()
        raise
    return list(spatial)


def _predict(inferers: Sequence[Any], case: Mapping[str, Any], index: int, source: str, fn) -> Any:
    """``fn()`` (a prediction of ``case``) with a missing or bad image named with its item."""
    from auto3dseg.engine.input_checks import InputError, user_error

    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - only user errors are re-worded; the rest propagate
        found = user_error(exc)
        if found is None:
            raise
        where = f" (item {index} of {source})"
        if isinstance(found, FileNotFoundError):
            raise FileNotFoundError(f"{found}{where}: fix the path or remove the item, then run again") from exc
        text = str(found) if source != "--images" else str(found).replace("from the datalist", "from --images")
        raise InputError(f"{text}{where}") from exc


def _run_ensemble(work: Path, out_dir: Path, *, method: str, n_best: int, algos: Sequence[str] | None,
                  images: Sequence[str] | None, force: bool, allow_unfinished: bool, tta: bool, log) -> Path:
    from monai.utils.enums import AlgoKeys
    from tqdm import tqdm

    from auto3dseg.engine.input_checks import InputError

    src = read_input(work)
    refuse_bundles_in_training(work, algos, log=log)
    history = trained_history(work, algos, allow_unfinished=allow_unfinished, log=log)
    if not history and not allow_unfinished and list_bundles(work):
        raise RuntimeError(f"no bundle of {work} finished training: train them (--mode train), or predict with "
                           "--allow_unfinished to use the best model.pt of bundles that stopped early")
    for note in gone_bundles(work, history, src):
        log(f"note: {note}")
    chosen, infer_files, used = select_ensemble(history, work / "input.yaml", method, n_best)
    _check_chosen(work, chosen, src["datalist"])
    cases = [{"image": str(Path(f).resolve())} for f in images] if images else [
        dict(f) if isinstance(f, Mapping) else {"image": str(f)} for f in infer_files]
    if not cases:
        raise RuntimeError(f"nothing to predict: {src['datalist']} has no 'testing' items and no --images given")
    seen: set[str] = set()
    unique = [c for c in cases if not (str(c["image"]) in seen or seen.add(str(c["image"])))]  # listed twice: once
    if len(unique) < len(cases):
        log(f"note: {len(cases) - len(unique)} image(s) are listed more than once; each is predicted once")
        cases = unique
    source = "--images" if images else f"'testing' in {src['datalist']}"
    manifest_path, partial_path = out_dir / MANIFEST, out_dir / PARTIAL
    tag = "-tta" if tta else ""
    sig = bundles_signature(chosen, work) + tag
    previous = _previous_manifest(out_dir)
    reuse = previous.get("signature") in (sig, bundles_signature(chosen, work, legacy=True) + tag) and not force
    if previous.get("items") and not reuse:
        made = ", ".join(str(b.get("name")) for b in previous.get("bundles", [])) or "other bundles"
        if force and previous.get("signature") == sig:  # the same weights make the same maps again
            log(f"note: --force: the maps in {out_dir} are predicted again with the same bundles ({made})")
        else:  # maps of other bundles (retrained, another method), and any unlisted beside them: kept
            keep_maps(out_dir, maps_in(out_dir), what="ensemble", why=made_by_note(previous, made, chosen, sig),
                      manifests=[PARTIAL, MANIFEST], log=log)
    done = {it["image"]: it for it in previous.get("items", [])} if reuse else {}
    keys = [moved_key(it["image"]) for it in done.values()]
    done_moved = {k: it for k, it in zip(keys, done.values()) if keys.count(k) == 1}  # the dataset moved since
    if reuse and (edited := [str(b["name"]) for b in previous.get("bundles", [])
                             if b.get("configs") and b["configs"] != configs_digest(work / str(b["name"]))]):
        log(f"note: the configs of {', '.join(edited)} changed since the maps in {out_dir} were written: the kept maps "
            "were made with the earlier settings; if the change is one prediction uses (sw_overlap, patch size, ...), "
            "--force predicts every map again with it (a training-only setting needs --mode train --force)")
    owners = {Path(it["probabilities"]).name: it["image"] for it in previous.get("items", [])}
    complete = [str(c["image"]) for c in cases] == [it["image"] for it in previous.get("items", [])]
    if reuse and complete and manifest_path.is_file() and all(  # maps in this folder (a copy reads its own)
            map_intact(out_dir / Path(it["probabilities"]).name) and same_source(it) for it in previous["items"]):
        log(f"ensemble in {out_dir} is up to date ({len(cases)} maps of the same bundles); kept")
        for it in previous["items"]:
            _say_again(it, log)
        return manifest_path
    manifest_path.unlink(missing_ok=True)  # removed first: from here on nothing looks complete
    log(f"ensemble ({used}{', test-time mirroring' if tta else ''}) of {len(chosen)} bundles: "
        + ", ".join(f"{a[AlgoKeys.ID]} ({a[AlgoKeys.SCORE]:.4f})" for a in chosen))

    inferers: list[Any] = []
    channels: list[str] | None = previous.get("channels") if reuse else None
    activation: dict[str, str] = {k: previous[k] for k in ("activation", "activation_source") if k in previous} \
        if reuse else {}
    acts: dict[str, str | None] = {}
    items: list[dict] = []
    failed: list[str] = []
    carried: list[dict] = []  # the earlier records of images that failed now (moved away?), their maps kept
    computed = 0
    say = bar_safe(log)  # notes in the loop start their own line, not the progress bar's
    for index, case in enumerate(tqdm(cases, desc="Ensembling", unit="image")):
        f = str(case["image"])
        out = out_dir / probability_map_name(_case_name(f))
        was = earlier = done.get(f) or done_moved.get(moved_key(f))
        if was and not same_source(was, f):
            if Path(f).exists():  # a missing image is named where it is read, below
                say(f"note: {f} changed since its map was written (other size or time): predicting it again (the map "
                    "of the earlier image is written over)")
            was = None
        if was and Path(was["probabilities"]).name == out.name and map_intact(out):
            items.append({**was, "image": f, "probabilities": str(out)})  # a copy's own map; a moved image's path
            _say_again(was, say)
            _write_manifest(partial_path, sig, used, chosen, channels, activation, src, items + carried, work)
            continue
        if not inferers:  # load each bundle once, only when something is left to do
            inferers, acts = load_inferers(work, chosen, tta, say)
        keep_other_images_map(out, owners.get(out.name), f, out_dir, say)
        try:
            shape, channels, activation = write_case_map(inferers, acts, case, out, channels, activation,
                                                         src["datalist"], index, source, say)
        except (FileNotFoundError, InputError) as exc:  # one bad image: named, and the others still predicted
            failed.append(f)
            if earlier and Path(earlier["probabilities"]).name == out.name and map_intact(out):
                carried.append({**earlier, "image": f, "probabilities": str(out)})  # reused if the image comes back
                _write_manifest(partial_path, sig, used, chosen, channels, activation, src, items + carried, work)
            # a line of its own in a log file too (SLURM), where the bar's text is not cleared: `grep -v` of the
            # bar would drop it with the bar
            tqdm.write(("" if sys.stderr.isatty() else "\n") + f"error: {exc}", file=sys.stderr)
            continue
        warned = sorted({w for inf in inferers if (w := getattr(inf, "spacing_warnings", {}).get(f))})
        items.append({"image": f, "probabilities": str(out), "shape": shape, "source_stamp": image_stamp(f),
                      "map_id": uuid.uuid4().hex[:12], **({"warnings": warned} if warned else {})})
        computed += 1
        _write_manifest(partial_path, sig, used, chosen, channels, activation, src, items + carried, work)
    if failed:  # no completion marker: the maps written are kept in the partial record, and resumed
        raise InputError(f"{len(failed)} of {len(cases)} image(s) could not be predicted (each named above); the "
                         f"other {len(items)} map(s) are written and kept: fix or remove those items, then run the "
                         "same command again (it predicts only what is missing"
                         + ("; labels are made once every image has its map)" if images else ")"))
    _write_manifest(manifest_path, sig, used, chosen, channels, activation, src, items, work)  # last: complete
    partial_path.unlink(missing_ok=True)
    log(f"{computed} probability maps written, {len(items) - computed} already there")
    return manifest_path


def _say_again(item: Mapping[str, Any], log) -> None:
    """The warnings a kept map was made with (a voxel size unlike the training data's): a re-run,
    or labels made from it, would otherwise look clean."""
    for w in item.get("warnings", []):
        log(f"warning (the kept map of {Path(str(item['image'])).name} was made with it): {w}")


def write_case_map(inferers: Sequence[Any], acts: Mapping[str, str | None], case: Mapping[str, Any], out: Path,
                   channels: list[str] | None, activation: dict[str, str], datalist: str | os.PathLike, index: int,
                   source: str, log=print) -> tuple[list[int], list[str] | None, dict[str, str]]:
    """The mean probability map of ``inferers`` for one datalist item, written to ``out``.

    Block by block when every inferer can (ours), else whole. ``channels`` and ``activation``
    are those of earlier maps (None / empty for the first: named here from the inferers, the
    bundles' configs ``acts`` or the output). Returns the map's spatial shape, the channels
    and the activation.
    """
    if _blockwise(inferers):
        if channels is None:
            channels = list(inferers[0].channel_names)
            act = next(iter(acts.values()), None)
            activation = {"activation": act or ("softmax" if channels[0] == "background" else "sigmoid"),
                          "activation_source": "config" if act else "inferer"}
        shape = _predict(inferers, case, index, source, lambda: _predict_map_blockwise(
            inferers, case, out, channels, activation["activation"], log))
        return shape, channels, activation
    prob, affine = _predict(inferers, case, index, source, lambda: ensemble_probabilities(inferers, case))
    if channels is None:
        channels = getattr(inferers[0], "channel_names", None)
        act = next(iter(acts.values()), None)
        if channels:  # our InferClass names its channels; background first means softmax
            activation = {"activation": act or ("softmax" if channels[0] == "background" else "sigmoid"),
                          "activation_source": "config" if act else "inferer"}
        else:
            table = json.loads(Path(datalist).read_text()).get("class_table") or []
            channels, act, how = name_channels(prob, table, act)
            activation = {"activation": act, "activation_source": how}
            if channels[0].startswith("channel_"):
                log(f"note: {prob.shape[0]} {act} channels fit no naming of the {len(table)} classes of "
                    f"{datalist}: named channel_0..; post-processing cannot use them")
    write_probability_map(prob, affine, out, channels, activation.get("activation"))
    return list(prob.shape[1:]), channels, activation


def load_inferers(work: Path, chosen: Sequence[Mapping[str, Any]], tta: bool = False,
                  log=print) -> tuple[list[Any], dict[str, str | None]]:
    """The inferers of the ``chosen`` bundles (MONAI algo history records) and each one's
    output activation; ValueError when they disagree on channels or activation. ``tta``:
    our bundles mirror each block (:func:`auto3dseg.engine.blockwise.tta_flips`); MONAI's
    official templates have no such switch, which the log says."""
    from monai.utils.enums import AlgoKeys

    with in_directory(work):  # official segresnet writes runner.log into the current directory
        inferers = [a[AlgoKeys.ALGO].get_inferer() for a in chosen]
    names = [getattr(i, "channel_names", None) for i in inferers]
    ids = [a[AlgoKeys.ID] for a in chosen]
    if tta:
        for inf, name in zip(inferers, ids):
            if isinstance(getattr(inf, "cfg", None), dict) and hasattr(inf, "predict_blocks"):
                inf.cfg["tta"] = True
            else:
                log(f"note: {name} is not one of this project's templates: it predicts without test-time mirroring")
    if any(n != names[0] for n in names):
        raise ValueError(f"bundles disagree on output channels: {dict(zip(ids, names))}")
    acts = {a[AlgoKeys.ID]: bundle_activation(a[AlgoKeys.ALGO].output_path) for a in chosen}
    if len(set(acts.values())) > 1:
        raise ValueError(f"bundles disagree on the output activation: {acts}; ensemble them separately (--algos)")
    return inferers, acts


def _write_manifest(path: Path, sig: str, method: str, chosen: list[dict], channels: list[str] | None,
                    activation: Mapping[str, str], src: dict, items: list[dict], work: Path) -> None:
    from monai.utils.enums import AlgoKeys

    data = {
        "signature": sig,
        "method": method,
        "bundles": [{"name": a[AlgoKeys.ID], "best_avg_dice_score": a[AlgoKeys.SCORE],
                     "weights": weights_stamp(work / str(a[AlgoKeys.ID])),
                     "configs": configs_digest(work / str(a[AlgoKeys.ID]))} for a in chosen],
        "activation": activation.get("activation"),
        "activation_source": activation.get("activation_source"),
        "channels": channels,
        "format": MAP_FORMAT,
        "tta": sig.endswith("-tta"),
        "datalist": src.get("datalist"),
        "items": items,
    }
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
