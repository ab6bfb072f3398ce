"""The preprocessed cache (auto3dseg/engine/preprocessed.py): entries equal what MONAI loads,
cached patches equal uncached ones draw for draw (3-D and 2-D), every invalidation rule, atomic
and concurrent builds, bad input named, and the bundle keys."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from auto3dseg.engine import preprocessed as pp
from auto3dseg.engine.preprocessed import CacheParams, build_cache, cache_dir_of, ensure_entry, entry_key
from auto3dseg.engine.training_data import fold_items
from auto3dseg.engine.transforms import (
    IGNORE_VALUE,
    CachedPatchesd,
    LoadCachedd,
    channel_first,
    channel_members,
    intensity_transform,
    patch_box,
    training_transforms,
    validation_transforms,
)

ALL = 10**9  # max_samples_per_class that keeps every voxel: the sample then equals ClassesToIndicesd's


def _cfg(root: Path, work: Path, patch, dims=3, intensity=None, **extra) -> dict:
    table = json.loads((root / "datalist.json").read_text())["class_table"]
    return {"patch_size": list(patch), "num_patches_per_image": 2, "intensity": intensity or {"mode": "zscore"},
            "class_ids": [r["id"] for r in table], "class_members": channel_members(table),
            "output_activation": "sigmoid", "spatial_dims": dims, "bundle_root": str(work / "segresnet_0"),
            "dataroot": str(root), "max_samples_per_class": ALL, **extra}


def _items(root: Path) -> list[dict]:
    train, val = fold_items(root / "datalist.json", root, 0)
    return train + val


def _monai_whole(item: dict, cfg: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised, padded whole crop and label as the uncached pipeline has them before the crop."""
    steps = training_transforms({**cfg, "cache": False}).transforms
    d = dict(item)
    for t in steps[: [type(s).__name__ for s in steps].index("ClassesToIndicesd")]:
        d = t(d)
    return d["image"].as_tensor(), d["label"].as_tensor()


# ----------------------------------------------------------------------------- the entry itself
@pytest.mark.parametrize("cells", [False, True])
def test_entry_holds_what_monai_loads(converted, converted_cells, tmp_path, cells):
    from monai.transforms import ClassesToIndices, LoadImage

    root = (converted_cells if cells else converted)[0]
    for item in _items(root)[:3]:
        entry, action, reason = ensure_entry(item["image"], item["label"], tmp_path, root, CacheParams(ALL))
        assert (action, reason) == ("built", "missing")
        img = LoadImage(image_only=True)(item["image"])
        lab = LoadImage(image_only=True, dtype=np.uint8)(item["label"])
        assert entry.array("image").dtype == np.uint8 and isinstance(entry.array("image"), np.memmap)
        np.testing.assert_array_equal(entry.array("image"), img.numpy())
        np.testing.assert_array_equal(entry.array("label"), lab.numpy())
        x = channel_first(entry.array("image"), 2 if cells else 3).astype(np.float32)
        mean = [float(torch.mean(torch.from_numpy(c))) for c in x]
        std = [float(torch.std(torch.from_numpy(c), unbiased=False)) for c in x]
        np.testing.assert_allclose(entry.record["stats"]["mean"], mean, rtol=1e-6)
        np.testing.assert_allclose(entry.record["stats"]["std"], std, rtol=1e-6)
        ref = ClassesToIndices(num_classes=5)(channel_first(np.asarray(entry.array("label")), 2 if cells else 3))
        for a, b in zip(ref, entry.class_indices(5)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert not list(entry.folder.glob(".tmp-*"))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.float32])
def test_statistics_of_every_dtype_are_monai_s(tmp_path, monkeypatch, dtype):
    """Histogram (8/16-bit integers) or streamed moments (floats), 3 channels: MONAI's mean, std
    (population) and percentiles, channel by channel."""
    from monai.transforms.utils_pytorch_numpy_unification import percentile

    rng = np.random.default_rng(1)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "ui" else None
    raw = rng.normal(100, 30, (20, 18, 1, 3))
    img = (raw if info is None else raw.clip(info.min, info.max)).astype(dtype)
    item = _pair(tmp_path / "d", img, np.zeros((20, 18, 1), np.uint8))
    monkeypatch.setattr(pp, "CHUNK", 257)  # many chunks, across channel boundaries
    entry, _, _ = ensure_entry(item["image"], item["label"], tmp_path / "c", tmp_path, CacheParams(0, (0.5, 99.0)))
    x = torch.from_numpy(channel_first(np.asarray(entry.array("image")), 2).astype(np.float32))
    stats = entry.record["stats"]
    np.testing.assert_allclose(stats["mean"], [float(torch.mean(c)) for c in x], rtol=1e-6)
    np.testing.assert_allclose(stats["std"], [float(torch.std(c, unbiased=False)) for c in x], rtol=1e-5)
    for q in (0.5, 99.0):
        np.testing.assert_allclose(stats["percentiles"][pp.percentile_key(q)], [float(percentile(c, q)) for c in x],
                                   rtol=1e-6)


def test_sampled_indices_are_an_even_deterministic_subset(converted, tmp_path, monkeypatch):
    root = converted[0]
    item = _items(root)[0]
    lab = np.asarray(nib.load(item["label"]).dataobj)
    a, _, _ = ensure_entry(item["image"], item["label"], tmp_path / "a", root, CacheParams(500))
    monkeypatch.setattr(pp, "CHUNK", 1000)  # streamed in many pieces: the same sample
    b, _, _ = ensure_entry(item["image"], item["label"], tmp_path / "b", root, CacheParams(500))
    for v, (ia, ib) in enumerate(zip(a.class_indices(13), b.class_indices(13))):
        np.testing.assert_array_equal(ia, ib)
        in_file_order = np.flatnonzero(lab.reshape(-1, order="F") == v)
        if len(in_file_order) > 500:  # ClassesToIndicesd's evenly spaced ranks, counted in file order
            in_file_order = in_file_order[np.round(np.linspace(0, len(in_file_order) - 1, 500)).astype(int)]
        want = np.sort(np.ravel_multi_index(np.unravel_index(in_file_order, lab.shape, order="F"), lab.shape))
        np.testing.assert_array_equal(ia, want)
        assert np.isin(ia, np.flatnonzero(lab.reshape(-1) == v)).all()  # C order over x, y, z, as MONAI's


def test_centre_classes_drawn_like_classes_to_indices(converted, tmp_path):
    """Same MONAI helper, same random stream: each draw picks the same class as with
    ClassesToIndicesd's indices (the voxel within a large class differs: another sample)."""
    from monai.transforms import ClassesToIndices
    from monai.transforms.utils import generate_label_classes_crop_centers

    root = converted[0]
    item = _items(root)[0]
    entry, _, _ = ensure_entry(item["image"], item["label"], tmp_path, root, CacheParams(300))
    lab = channel_first(np.asarray(entry.array("label")))
    ours, theirs = entry.class_indices(13), ClassesToIndices(num_classes=13, max_samples_per_class=300)(lab)
    shape = lab.shape[1:]
    for seed in range(20):
        a = generate_label_classes_crop_centers([1, 1, 1], 4, shape, ours, rand_state=np.random.RandomState(seed),
                                                warn=False)
        b = generate_label_classes_crop_centers([1, 1, 1], 4, shape, theirs, rand_state=np.random.RandomState(seed),
                                                warn=False)
        assert [lab[(0, *c)] for c in a] == [lab[(0, *c)] for c in b]


# ----------------------------------------------------------------------------- cached patches == uncached
CASES = [("3d", [16, 16, 16], None), ("3d", [48, 48, 48], None),  # 48 > the crops' 24-32 planes: padded
         ("3d", [80, 32, 16], {"mode": "percentile", "lower": 1.0, "upper": 99.0}),
         ("2d", [64, 64], {"mode": "range", "a_min": 0, "a_max": 255}), ("2d", [256, 256], None),
         ("2d", [96, 128], {"mode": "percentile", "lower": 1.0, "upper": 99.0})]


@pytest.mark.parametrize("kind,patch,intensity", CASES)
def test_cached_draws_equal_uncached_draws(converted, converted_cells, tmp_path, kind, patch, intensity):
    root = (converted_cells if kind == "2d" else converted)[0]
    cfg = _cfg(root, tmp_path, patch, 2 if kind == "2d" else 3, intensity)
    cached, plain = training_transforms(cfg), training_transforms({**cfg, "cache": False})
    assert any(isinstance(t, CachedPatchesd) for t in cached.transforms)
    assert not any(isinstance(t, LoadCachedd) for t in plain.transforms)
    items = _items(root)
    for k in range(8):
        item = items[k % len(items)]
        cached.set_random_state(seed=k)
        plain.set_random_state(seed=k)
        for a, b in zip(cached(dict(item)), plain(dict(item))):
            assert set(a) == set(b) and a["image"].shape == b["image"].shape
            assert sorted(a["image"].shape[1:]) == sorted(patch)  # rotated by 90 degrees, perhaps
            assert torch.equal(a["label"], b["label"]) and torch.equal(a["valid"], b["valid"])
            torch.testing.assert_close(a["image"], b["image"], rtol=1e-5, atol=1e-5)
            assert torch.equal(a["class_mask"], b["class_mask"])
    vc, vp = validation_transforms(cfg), validation_transforms({**cfg, "cache": False})
    for item in items[:2]:
        a, b = vc(dict(item)), vp(dict(item))
        assert set(a) == set(b) and torch.equal(a["label"], b["label"])
        torch.testing.assert_close(a["image"], b["image"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind,patch", [("3d", [48, 48, 48]), ("2d", [128, 256])])
def test_patch_at_a_given_centre_equals_the_uncached_patch(converted, converted_cells, tmp_path, kind, patch):
    from monai.transforms import SpatialCrop, SpatialPad

    from auto3dseg.engine.transforms import STATS_KEY, normalise_cached

    root = (converted_cells if kind == "2d" else converted)[0]
    dims = 2 if kind == "2d" else 3
    cfg = _cfg(root, tmp_path, patch, dims)
    item = _items(root)[1]
    whole_img, whole_lab = _monai_whole(item, cfg)
    d = LoadCachedd(str(tmp_path / "cache"), str(root), CacheParams(ALL), dims)(dict(item))
    shape = d["label"].shape[1:]
    before = [lo for lo, _ in SpatialPad(patch).compute_pad_width(shape)[1:]]
    rng = np.random.default_rng(0)
    centres = [[p // 2 for p in patch], [s - (p + 1) // 2 for s, p in zip(whole_lab.shape[1:], patch)]]
    centres += [[int(rng.integers(p // 2, s - p // 2 + 1)) for s, p in zip(whole_lab.shape[1:], patch)]
                for _ in range(5)]
    for centre in centres:
        crop = SpatialCrop(roi_center=centre, roi_size=patch)
        region, pads = patch_box(centre, patch, shape, before)
        img = normalise_cached(d["image"][(slice(None), *region)], d[STATS_KEY], cfg["intensity"])
        lab = torch.from_numpy(np.array(d["label"][(slice(None), *region)]))
        flat = [v for lo_hi in reversed(pads) for v in lo_hi]
        img = torch.nn.functional.pad(img, flat, value=0.0)
        lab = torch.nn.functional.pad(lab, flat, value=IGNORE_VALUE)
        torch.testing.assert_close(img, crop(whole_img).as_tensor(), rtol=1e-5, atol=1e-5)
        assert torch.equal(lab, crop(whole_lab).as_tensor())


# ----------------------------------------------------------------------------- invalidation
@pytest.fixture
def copied(converted, tmp_path) -> tuple[Path, dict]:
    """A private copy of one converted item (its files are modified)."""
    root = tmp_path / "data"
    item = _items(converted[0])[0]
    for key in ("image", "label"):
        dst = root / Path(item[key]).relative_to(converted[0])
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(item[key], dst)
    return root, {"image": str(root / Path(item["image"]).relative_to(converted[0])),
                  "label": str(root / Path(item["label"]).relative_to(converted[0]))}


def _ensure(root: Path, item: dict, cache: Path, params: CacheParams = CacheParams()):
    return ensure_entry(item["image"], item["label"], cache, root, params)


def test_each_change_rebuilds_the_entry_and_says_why(copied, tmp_path, monkeypatch):
    root, item = copied
    cache = tmp_path / "cache"
    assert _ensure(root, item, cache)[1:] == ("built", "missing")
    assert _ensure(root, item, cache)[1:] == ("kept", None)
    st = os.stat(item["image"])
    os.utime(item["image"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    entry, action, reason = _ensure(root, item, cache)
    assert action == "rebuilt" and reason.startswith("image mtime_ns changed")
    assert entry.record["sources"]["image"]["mtime_ns"] == st.st_mtime_ns + 10**9
    lab = nib.load(item["label"])
    new = np.asarray(lab.dataobj).copy()
    new[:4] = 7
    nib.save(nib.Nifti1Image(new, lab.affine), item["label"])
    entry, action, reason = _ensure(root, item, cache)
    assert action == "rebuilt" and reason.startswith("label size changed")
    np.testing.assert_array_equal(entry.array("label"), new)  # the new content, not the old
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)  # same relative paths: the same entry
    item2 = {k: str(moved / Path(v).relative_to(root)) for k, v in item.items()}
    entry2, action, reason = _ensure(moved, item2, cache)
    assert entry2.folder == entry.folder and action == "rebuilt" and reason.startswith("image path changed")
    monkeypatch.setattr(pp, "FORMAT_VERSION", pp.FORMAT_VERSION + 1)
    assert _ensure(moved, item2, cache)[1:] == ("rebuilt", f"format version changed ({pp.FORMAT_VERSION - 1} -> "
                                                            f"{pp.FORMAT_VERSION})")
    assert _ensure(moved, item2, cache, CacheParams(50))[2] == "max_samples_per_class changed (100000 -> 50)"
    assert _ensure(moved, item2, cache, CacheParams(50, (1.0, 99.0)))[2].startswith("percentile 1 missing")
    assert _ensure(moved, item2, cache, CacheParams(50, (1.0, 99.0)))[1] == "kept"


@pytest.mark.parametrize("damage,words", [
    (lambda e: (e / "record.json").unlink(), "missing"),
    (lambda e: (e / "record.json").write_text('{"format_version": 1, "sourc'), "damaged record (JSONDecodeError)"),
    (lambda e: (e / "record.json").write_text('{"format_version": 1}'), "damaged record (no 'sources')"),
    (lambda e: (e / "label.npy").unlink(), "damaged: label.npy missing"),
    (lambda e: os.truncate(e / "image.npy", 1000), "damaged: image.npy has 1000 bytes"),
])
def test_a_damaged_or_unfinished_entry_is_rebuilt(copied, tmp_path, damage, words):
    root, item = copied
    entry, _, _ = _ensure(root, item, tmp_path / "cache")
    good = np.array(entry.array("image"))
    damage(entry.folder)
    entry, action, reason = _ensure(root, item, tmp_path / "cache")
    assert reason.startswith(words) and action == ("built" if words == "missing" else "rebuilt")
    np.testing.assert_array_equal(entry.array("image"), good)


def test_a_build_killed_before_its_record_leaves_no_usable_entry(copied, tmp_path, monkeypatch):
    root, item = copied
    cache = tmp_path / "cache"
    _ensure(root, item, cache)
    os.utime(item["image"], ns=(1, 10**18))

    def killed(path, obj):
        raise KeyboardInterrupt

    monkeypatch.setattr(pp, "atomic_write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        _ensure(root, item, cache)
    folder = cache / entry_key(item["image"], root)
    assert not (folder / "record.json").exists() and not list(folder.glob(".tmp-*"))
    (folder / ".tmp-999999-image.npy").write_bytes(b"half")  # what a kill -9 mid-write leaves
    monkeypatch.undo()
    assert _ensure(root, item, cache)[1:] == ("built", "missing")
    assert not list(folder.glob(".tmp-*"))


def _slow_ensure(args) -> str:
    root, item, cache = args
    real = pp.sample_indices

    def slow(*a, **k):
        time.sleep(1.0)
        return real(*a, **k)

    pp.sample_indices = slow
    return _ensure(Path(root), item, Path(cache))[1]


def test_concurrent_builders_build_once(copied, tmp_path):
    root, item = copied
    with mp.get_context("fork").Pool(3) as pool:
        actions = pool.map(_slow_ensure, [(str(root), item, str(tmp_path / "cache"))] * 3)
    assert sorted(actions) == ["built", "kept", "kept"]
    assert _ensure(root, item, tmp_path / "cache")[1] == "kept"


# ----------------------------------------------------------------------------- bad input
def _pair(folder: Path, image: np.ndarray, label: np.ndarray | None = None) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image, np.eye(4)), str(folder / "im.nii.gz"))
    label = np.zeros(image.shape[:3], np.uint8) if label is None else label
    nib.save(nib.Nifti1Image(label, np.eye(4)), str(folder / "lb.nii.gz"))
    return {"image": str(folder / "im.nii.gz"), "label": str(folder / "lb.nii.gz")}


def test_bad_input_is_named_at_build_time(tmp_path):
    from auto3dseg.engine.input_checks import InputError, NonFiniteImageError, user_error

    img = np.random.default_rng(0).random((12, 12, 12)).astype(np.float32)
    img[3, 3, 3] = np.nan
    nan = _pair(tmp_path / "nan", img)
    dl = {"training": [{"image": "nan/im.nii.gz", "label": "nan/lb.nii.gz"}]}
    (tmp_path / "dl.json").write_text(json.dumps(dl))
    with pytest.raises(NonFiniteImageError, match="1 of 1728 voxels are not finite") as info:
        build_cache(tmp_path / "dl.json", tmp_path, tmp_path / "cache", CacheParams(), progress=False)
    assert nan["image"] in str(info.value) and f"training item 0 of {tmp_path / 'dl.json'}" in str(info.value)
    assert not list((tmp_path / "cache").rglob("record.json"))
    cfg = {"patch_size": [8, 8, 8], "intensity": {"mode": "zscore"}, "class_ids": [1], "class_members": [[1]],
           "bundle_root": str(tmp_path / "segresnet_0"), "dataroot": str(tmp_path)}
    with pytest.raises(Exception) as info:  # built lazily by a loader: found as the user error it is
        training_transforms(cfg)(dict(nan))
    assert isinstance(user_error(info.value), NonFiniteImageError) and nan["image"] in str(user_error(info.value))
    ok = _pair(tmp_path / "ok", np.nan_to_num(img))
    cut = Path(ok["image"]).read_bytes()[:3000]
    for name, data, words in (("garbage", b"not an image", "cannot read the image"),
                              ("truncated", cut, "cannot read the image .Compressed file ended")):
        Path(ok["image"]).with_name(f"{name}.nii.gz").write_bytes(data)
        with pytest.raises(InputError, match=words) as info:
            ensure_entry(str(tmp_path / "ok" / f"{name}.nii.gz"), ok["label"], tmp_path / "cache", tmp_path,
                         CacheParams())
        assert f"{name}.nii.gz" in str(info.value)
    with pytest.raises(FileNotFoundError, match="not found: .*missing.nii.gz"):
        ensure_entry(str(tmp_path / "missing.nii.gz"), ok["label"], tmp_path / "cache", tmp_path, CacheParams())
    odd = _pair(tmp_path / "odd", np.ones((12, 12, 6), np.float32), np.zeros((12, 12, 5), np.uint8))
    (tmp_path / "odd" / "im.nii.gz").replace(tmp_path / "odd" / "im2.nii.gz")
    odd["image"] = str(tmp_path / "odd" / "im2.nii.gz")
    with pytest.raises(InputError, match="does not match its image") as info:
        ensure_entry(odd["image"], odd["label"], tmp_path / "cache", tmp_path, CacheParams())
    assert odd["label"] in str(info.value) and odd["image"] in str(info.value)


# ----------------------------------------------------------------------------- config and building up front
def test_bundle_keys_and_where_the_cache_lives(tmp_path):
    from auto3dseg.bundles.config import load_bundle_config

    assert cache_dir_of({"bundle_root": "/w/segresnet_0"}) == Path("/w/preprocessed")  # no key: an older bundle
    assert cache_dir_of({"bundle_root": "/w/segresnet_0", "cache": True, "cache_dir": "/fast"}) == Path("/fast")
    hp = tmp_path / "hp.yaml"
    hp.write_text("bundle_root: /w/segresnet_0\ncache: true\ncache_dir: null\n")
    assert cache_dir_of(load_bundle_config(str(hp), {"cache": "false"})) is None
    assert cache_dir_of(load_bundle_config(str(hp), {"cache_dir": "/scratch/c"})) == Path("/scratch/c")


def test_derived_config_has_the_cache_keys(converted, tmp_path):
    import yaml

    from auto3dseg.analysis.analyze import analyze
    from auto3dseg.bundles.config import derive_hyper_parameters

    out = converted[0]
    work = out.parent / "engine_work"
    if not (work / "datastats.yaml").is_file():
        analyze(out / "datalist.json", work, out, workers=0, validate=False)
    cfg = derive_hyper_parameters("segresnet", yaml.safe_load((work / "datastats.yaml").read_text()),
                                  json.loads((out / "datalist.json").read_text()), datalist_path=out / "datalist.json",
                                  dataroot=out, fold=0, bundle_root=tmp_path / "segresnet_0")
    assert cfg["cache"] is True and cfg["cache_dir"] is None
    assert cache_dir_of(cfg) == (tmp_path / "preprocessed").resolve()


@pytest.mark.parametrize("workers", [0, 2])
def test_build_cache_reports_each_item(converted, tmp_path, workers):
    root = converted[0]
    report = build_cache(root / "datalist.json", root, tmp_path, CacheParams(), workers=workers, progress=False)
    n = len(json.loads((root / "datalist.json").read_text())["training"])
    assert len(report) == n and {(r["action"], r["reason"]) for r in report} == {("built", "missing")}
    assert len(list(tmp_path.glob("*/record.json"))) == n
    again = build_cache(root / "datalist.json", root, tmp_path, CacheParams(), workers=workers, progress=False)
    assert [r["key"] for r in again] == [r["key"] for r in report] and {r["action"] for r in again} == {"kept"}


def test_training_builds_its_entries_first(converted, tmp_path, capsys):
    from auto3dseg.engine.training_data import prepare_cache

    root = converted[0]
    cfg = _cfg(root, tmp_path, [16, 16, 16], num_workers=0)
    report = prepare_cache(_items(root), cfg)
    assert len(list((tmp_path / "preprocessed").glob("*/record.json"))) == len(report) == len(_items(root))
    assert prepare_cache(_items(root), {**cfg, "cache": False}) == []
    intensity_transform("image", cfg["intensity"])  # the uncached path still imports


def test_bundles_generated_before_take_the_new_keys_as_overrides(tmp_path):
    """A bundle whose YAML predates the cache and block-wise windows still accepts their overrides."""
    from auto3dseg.bundles.checks import check_overrides
    from auto3dseg.orchestration.workdir import list_bundles

    bundle = tmp_path / "segresnet_0"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "scripts").mkdir()
    (bundle / "configs" / "hyper_parameters.yaml").write_text("algo: segresnet\nnum_epochs: 2\noutput_activation: sigmoid\n")
    (bundle / "algo_object.json").write_text("{}")
    bundles = list_bundles(tmp_path)
    assert [b.name for b in bundles] == ["segresnet_0"]
    check_overrides(bundles, {"cache": "false", "cache_dir": "/scratch", "sw_memory_gb": "1"})
    with pytest.raises(ValueError, match="sw_memory_gbb"):
        check_overrides(bundles, {"sw_memory_gbb": "1"})
