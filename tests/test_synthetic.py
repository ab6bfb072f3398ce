"""Tests of the synthetic CellMap-like generator (converters/cellmap/synthetic.py)."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from converters.cellmap import synthetic as S
from datalists.cellmap_classes import CELLMAP_CLASSES

GT = S.GT_PATH
EM = S.EM_PATH


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "cellmap"
    t0 = time.perf_counter()
    summary = S.generate_synthetic_cellmap(out, seed=0)
    print(f"\nsynthetic generation took {time.perf_counter() - t0:.2f} s")
    return out, summary


def _zarr(out: Path, ds: str) -> zarr.Group:
    return zarr.open_group(str(out / ds / f"{ds}.zarr"), mode="r")


def _crop(out: Path, name: str) -> tuple[zarr.Group, dict]:
    cases = json.loads((out / "cases.json").read_text())
    rec = cases[name]
    return _zarr(out, rec["dataset"])[f"{GT}/{name}"], rec


def _chunk_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if not p.name.startswith("."))


def _spec(name: str) -> S.CropSpec:
    return next(c for c in S.TRAIN_CROPS if c.name == name)


def _face_adjacent_pairs(ids: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of distinct non-zero ids that are 6-neighbours somewhere."""
    pairs: set[tuple[int, int]] = set()
    for ax in range(3):
        a = np.moveaxis(ids, ax, 0)[:-1]
        b = np.moveaxis(ids, ax, 0)[1:]
        m = (a > 0) & (b > 0) & (a != b)
        for u, v in zip(a[m].tolist(), b[m].tolist()):
            pairs.add((min(u, v), max(u, v)))
    return pairs


def _tagged_id(scene: S.Scene, tag: str) -> int:
    return next(o.instance_id for o in scene.objects if o.tag == tag)


# ------------------------------------------------------------------------------ layout
def test_tree_and_files(gen):
    out, summary = gen
    for name in ("cases.json", "datasplit.csv", "test_crop_manifest.csv", "README.md"):
        assert (out / name).is_file()
    assert (out / "test_truth.zarr" / ".zgroup").is_file()
    assert set(summary["cases"]) == {f"crop{i}" for i in range(1, 7)}
    assert summary["out_dir"] == str(out.resolve())
    # atomic write: no temporary directory left next to the output
    leftovers = [p.name for p in out.parent.iterdir() if p.name != out.name]
    assert leftovers == []
    readme = (out / "README.md").read_text()
    for case in ("full", "partial_annotation", "past_em_bounds", "coarse_gt",
                 "nothing_annotated", "offgrid_translation"):
        assert case in readme


def test_zgroups_everywhere(gen):
    out, _ = gen
    for ds in S.DATASETS:
        root = out / ds / f"{ds}.zarr"
        for rel in ("", "recon-1", "recon-1/em", EM, "recon-1/labels", GT):
            assert (root / rel / ".zgroup").is_file(), rel
        for crop in (c for c in S.TRAIN_CROPS if c.dataset == ds):
            cdir = root / GT / crop.name
            assert (cdir / ".zgroup").is_file()
            for cls in (*crop.class_names, "all"):
                assert (cdir / cls / ".zgroup").is_file()
                assert (cdir / cls / "s0" / ".zarray").is_file()


def test_em_multiscales(gen):
    out, _ = gen
    for ds in S.DATASETS:
        g = _zarr(out, ds)[EM]
        ms = g.attrs["multiscales"]
        assert len(ms) == 1 and ms[0]["version"] == "0.4" and ms[0]["name"] == "fibsem-uint8"
        assert [a["name"] for a in ms[0]["axes"]] == ["z", "y", "x"]
        assert {a["unit"] for a in ms[0]["axes"]} == {"nanometer"}
        dsets = ms[0]["datasets"]
        assert [d["path"] for d in dsets] == ["s0", "s1", "s2"]
        expect = {"s0": (8.0, 0.0), "s1": (16.0, 4.0), "s2": (32.0, 12.0)}
        for d in dsets:
            scale, trans = d["coordinateTransformations"]
            assert scale["type"] == "scale" and trans["type"] == "translation"
            s, t = expect[d["path"]]
            assert scale["scale"] == [s] * 3
            assert trans["translation"] == [t] * 3
            # half-voxel rule: t_k = t_0 + (s_k - s_0) / 2
            assert t == pytest.approx(0.0 + (s - 8.0) / 2)
        shapes = {"s0": (64, 160, 160), "s1": (32, 80, 80), "s2": (16, 40, 40)}
        for lvl, shp in shapes.items():
            a = g[lvl]
            assert a.shape == shp and a.dtype == np.uint8 and a.chunks == (32, 32, 32)
            assert a.compressor.cname == "zstd" and a.compressor.codec_id == "blosc"


def test_em_levels_are_mean_downsampled(gen):
    out, _ = gen
    g = _zarr(out, "synth-1")[EM]  # synth-1 has every s0 chunk
    s0, s1, s2 = g["s0"][:], g["s1"][:], g["s2"][:]
    np.testing.assert_array_equal(S.downsample_mean(s0), s1)
    np.testing.assert_array_equal(S.downsample_mean(s1), s2)


def test_em_looks_like_em(gen):
    out, _ = gen
    em = _zarr(out, "synth-1")[f"{EM}/s0"][:].astype(np.float64)
    scene = S.build_scene("synth-1", 0)
    atomic, _ = S.rasterize(scene, (0, 0, 0), S.EM_VOXEL_NM, S.EM_SHAPE)
    mean = {n: em[atomic == CELLMAP_CLASSES[n].cellmap_id].mean()
            for n in ("ecs", "pm", "cyto", "mito_mem", "mito_lum", "ves_lum", "er_mem")}
    membranes = np.isin(atomic, [CELLMAP_CLASSES[n].cellmap_id
                                 for n in ("pm", "mito_mem", "ves_mem", "er_mem")])
    assert em[membranes].mean() < mean["cyto"] - 40
    assert mean["ecs"] > mean["cyto"] > mean["mito_lum"] > mean["mito_mem"]
    assert mean["ves_lum"] > mean["mito_lum"]
    # the labels explain most of the variance: not flat noise
    lut = np.zeros(256)
    for i in np.unique(atomic):
        lut[i] = em[atomic == i].mean()
    r = np.corrcoef(lut[atomic].ravel(), em.ravel())[0, 1]
    assert r > 0.8
    assert 5 < em[atomic == CELLMAP_CLASSES["cyto"].cellmap_id].std() < 30


def test_rasterize_grid_consistency():
    """Voxel centres are evaluated exactly: a 4 nm grid subsampled matches an 8 nm one."""
    scene = S.build_scene("synth-1", 0)
    origin = (128.0, 160.0, 160.0)
    a8, i8 = S.rasterize(scene, origin, (8.0, 8.0, 8.0), (16, 32, 32))
    a4, i4 = S.rasterize(scene, origin, (4.0, 4.0, 4.0), (32, 64, 64))
    np.testing.assert_array_equal(a4[::2, ::2, ::2], a8)
    for k in ("mito", "ves"):
        assert i8[k].dtype == np.uint32
        np.testing.assert_array_equal(i4[k][::2, ::2, ::2], i8[k])
    assert a8.dtype == np.uint8


def test_objects_do_not_overlap_and_stay_in_cell():
    for ds in S.DATASETS:
        scene = S.build_scene(ds, 0)
        masks = [S.object_mask(o, (0, 0, 0), S.EM_VOXEL_NM, S.EM_SHAPE) for o in scene.objects]
        total = np.zeros(S.EM_SHAPE, dtype=np.int32)
        for o, m in zip(scene.objects, masks):
            assert m.any(), o.tag
            total += m
        assert total.max() == 1
        atomic, inst = S.rasterize(scene, (0, 0, 0), S.EM_VOXEL_NM, S.EM_SHAPE)
        assert not np.isin(atomic[total > 0], [1, 2]).any()  # nothing in ecs or pm
        for o, m in zip(scene.objects, masks):  # nothing painted over another object
            if o.kind in inst:
                assert (inst[o.kind] == o.instance_id).sum() == m.sum(), o.tag


# ------------------------------------------------------------------------------ determinism
def test_determinism_and_force(gen, tmp_path):
    out, _ = gen
    again = tmp_path / "again"
    again.mkdir()
    (again / "stale.txt").write_text("x")
    assert S.main(["--out", str(again)]) == 2  # refuses a non-empty directory
    assert (again / "stale.txt").is_file()
    assert S.main(["--out", str(again), "--seed", "0", "--force"]) == 0
    assert not (again / "stale.txt").exists()
    arrays = sorted(str(p.parent.relative_to(out)) for p in out.rglob(".zarray"))
    assert arrays == sorted(str(p.parent.relative_to(again)) for p in again.rglob(".zarray"))
    for rel in arrays:
        a = zarr.open_array(str(out / rel), mode="r")
        b = zarr.open_array(str(again / rel), mode="r")
        assert _chunk_files(out / rel) == _chunk_files(again / rel), rel
        assert dict(a.attrs) == dict(b.attrs), rel
        np.testing.assert_array_equal(a[:], b[:], err_msg=rel)
    assert (out / "cases.json").read_text() == (again / "cases.json").read_text()
    manifest = "test_crop_manifest.csv"
    assert (out / manifest).read_text() == (again / manifest).read_text()


def test_other_seed_differs(gen, tmp_path):
    s1 = S.build_scene("synth-1", 1)
    s0 = S.build_scene("synth-1", 0)
    assert s0 != s1
    assert S.build_scene("synth-1", 0) == s0
    out = tmp_path / "seed1"
    S.generate_synthetic_cellmap(out, seed=1)
    em = _zarr(out, "synth-1")[f"{EM}/s0"][:]
    ref = S.build_scene("synth-1", 0)  # the hand-placed organelles do not depend on the seed
    assert [o for o in s1.objects if not o.tag.startswith("random")] == \
           [o for o in ref.objects if not o.tag.startswith("random")]
    assert em.std() > 20
    em0 = _zarr(gen[0], "synth-1")[f"{EM}/s0"][:]
    assert em0.shape == em.shape and (em0 != em).mean() > 0.5


def test_refuses_nonempty_dir_function(tmp_path):
    d = tmp_path / "full"
    d.mkdir()
    (d / "keep").write_text("1")
    with pytest.raises(FileExistsError, match="non-empty"):
        S.generate_synthetic_cellmap(d)
    assert (d / "keep").read_text() == "1"


def test_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as exc:
        S.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--out" in text and "--seed" in text and "--force" in text


# ------------------------------------------------------------------------------ annotation attrs
def test_crop_attrs_and_complement_counts(gen):
    out, _ = gen
    for spec in S.TRAIN_CROPS:
        crop, rec = _crop(out, spec.name)
        ann = crop.attrs["cellmap"]["annotation"]
        assert ann["class_names"] == sorted(["all", *spec.class_names])
        assert rec["gt_voxel_size"] == list(spec.voxel_size)
        assert rec["translation"] == list(spec.translation)
        assert rec["shape"] == list(spec.shape)
        assert sorted(rec["annotated"] + rec["not_annotated"]) == sorted(spec.class_names)
        n = int(np.prod(spec.shape))
        for cls in spec.class_names:
            g = crop[cls]
            ms = g.attrs["multiscales"][0]
            assert ms["version"] == "0.4" and [d["path"] for d in ms["datasets"]] == ["s0"]
            scale, trans = ms["datasets"][0]["coordinateTransformations"]
            assert scale["scale"] == list(spec.voxel_size)
            assert trans["translation"] == list(spec.translation)
            a = g["s0"]
            assert a.shape == spec.shape
            arr_ann = a.attrs["cellmap"]["annotation"]
            assert arr_ann["class_name"] == cls
            typ = arr_ann["annotation_type"]
            inst = CELLMAP_CLASSES[cls].instance
            assert typ["type"] == ("instance_segmentation" if inst else "semantic_segmentation")
            assert a.dtype == (np.uint16 if inst else np.uint8)
            cc = arr_ann["complement_counts"]
            if cls in spec.annotated:
                assert typ["encoding"]["absent"] == 0
                if not inst:
                    assert typ["encoding"] == {"absent": 0, "present": 1, "unknown": 255}
                data = a[:]
                assert cc == {"absent": int((data == 0).sum())}
                assert (data > 0).any(), (spec.name, cls)
                if not inst:
                    assert set(np.unique(data).tolist()) <= {0, 1}
                assert _chunk_files(out / spec.dataset / f"{spec.dataset}.zarr" / GT
                                    / spec.name / cls / "s0")
            else:
                assert cc == {"unknown": n}
                assert a.fill_value == 255
        all_ms = crop["all"].attrs["multiscales"][0]
        assert all_ms["name"] == "all"
        assert crop["all/s0"].dtype == np.uint8


def test_all_consistent_with_class_arrays(gen):
    out, _ = gen
    for spec in S.TRAIN_CROPS:
        if not spec.annotated:
            continue
        crop, _ = _crop(out, spec.name)
        all_ = crop["all/s0"][:]
        allowed = {0} | {CELLMAP_CLASSES[c].cellmap_id for c in spec.annotated}
        assert set(np.unique(all_).tolist()) <= allowed, spec.name
        for cls in spec.annotated:
            c = CELLMAP_CLASSES[cls]
            data = crop[f"{cls}/s0"][:]
            if not c.parts:
                np.testing.assert_array_equal(all_ == c.cellmap_id, data == 1, err_msg=cls)
            else:
                # a group covers its annotated parts in `all`, or the group id itself
                ids = [c.cellmap_id] + [p for p in c.parts
                                        if CELLMAP_CLASSES_BY_ID[p] in spec.annotated]
                np.testing.assert_array_equal(np.isin(all_, ids), data > 0, err_msg=cls)
                parts = [CELLMAP_CLASSES_BY_ID[p] for p in c.parts
                         if CELLMAP_CLASSES_BY_ID[p] in spec.annotated]
                if parts:  # group == union of its annotated parts
                    union = np.zeros(spec.shape, dtype=bool)
                    for p in parts:
                        union |= crop[f"{p}/s0"][:] == 1
                    np.testing.assert_array_equal(union, data > 0, err_msg=cls)


CELLMAP_CLASSES_BY_ID = {c.cellmap_id: n for n, c in CELLMAP_CLASSES.items()}


def test_gt_matches_scene(gen):
    out, _ = gen
    spec = _spec("crop1")
    crop, _ = _crop(out, "crop1")
    atomic, inst = S.rasterize(S.build_scene("synth-1", 0), spec.translation, spec.voxel_size,
                               spec.shape)
    np.testing.assert_array_equal(crop["all/s0"][:], atomic)  # crop1: everything annotated
    np.testing.assert_array_equal(crop["mito/s0"][:], inst["mito"])
    np.testing.assert_array_equal(crop["ves/s0"][:], inst["ves"])
    assert set(np.unique(atomic).tolist()) == {1, 2, 3, 4, 8, 9, 16, 17, 35}


# ------------------------------------------------------------------------------ cases
def test_touching_pairs_have_distinct_face_adjacent_ids(gen):
    out, _ = gen
    checks = [("crop1", "mito", "synth-1", "crop1 touching mito"),
              ("crop1", "ves", "synth-1", "crop1 touching ves"),
              ("crop6", "ves", "synth-2", "crop6 touching ves")]
    for crop_name, cls, ds, tag in checks:
        scene = S.build_scene(ds, 0)
        a, b = _tagged_id(scene, f"{tag} A"), _tagged_id(scene, f"{tag} B")
        assert a != b and a > 0 and b > 0
        crop, _ = _crop(out, crop_name)
        ids = crop[f"{cls}/s0"][:]
        assert (ids == a).any() and (ids == b).any()
        assert (min(a, b), max(a, b)) in _face_adjacent_pairs(ids), (crop_name, cls)
        # the membranes of the pair touch too (no gap): in crop1 all atomic ids are there
        if crop_name == "crop1":
            all_ = crop["all/s0"][:]
            mem = CELLMAP_CLASSES[f"{cls}_mem"].cellmap_id
            face = np.zeros(ids.shape, dtype=bool)
            face[:, :, :-1] |= (ids[:, :, :-1] == a) & (ids[:, :, 1:] == b)
            face[:, :-1, :] |= (ids[:, :-1, :] == a) & (ids[:, 1:, :] == b)
            face[:-1, :, :] |= (ids[:-1, :, :] == a) & (ids[1:, :, :] == b)
            assert (all_[face] == mem).all()


def test_case_full(gen):
    out, _ = gen
    crop, rec = _crop(out, "crop1")
    assert rec["case"] == "full" and rec["expected_verdict"] == "converted"
    assert rec["not_annotated"] == []
    assert all(t % 8 == 0 for t in rec["translation"])
    lo, hi = S.crop_bounds_nm(rec["gt_voxel_size"], rec["translation"], rec["shape"])
    em_lo = np.full(3, -4.0)
    em_hi = em_lo + np.asarray(S.EM_SHAPE) * 8.0
    assert np.all(lo >= em_lo) and np.all(hi <= em_hi)


def test_case_partial_annotation(gen):
    out, _ = gen
    crop, rec = _crop(out, "crop2")
    assert rec["case"] == "partial_annotation"
    assert set(rec["not_annotated"]) == {"er_mem", "er_lum", "er"}
    names = crop.attrs["cellmap"]["annotation"]["class_names"]
    assert not any(n.startswith("ves") for n in names)
    assert not any(k.startswith("ves") for k in crop.group_keys())
    cdir = out / "synth-1" / "synth-1.zarr" / GT / "crop2"
    n = int(np.prod(rec["shape"]))
    for cls in ("er_mem", "er_lum", "er"):
        assert _chunk_files(cdir / cls / "s0") == []
        a = crop[f"{cls}/s0"]
        assert a.fill_value == 255
        assert a.attrs["cellmap"]["annotation"]["complement_counts"] == {"unknown": n}
        assert (a[:] == 255).all()
    for cls in ("mito_mem", "mito_lum", "mito"):
        assert _chunk_files(cdir / cls / "s0")
    assert set(np.unique(crop["all/s0"][:]).tolist()) == {0, 3, 4}
    # ER is really there (in the EM and the scene), only not annotated
    atomic, _ = S.rasterize(S.build_scene("synth-1", 0), rec["translation"],
                            rec["gt_voxel_size"], rec["shape"])
    assert np.isin(atomic, [16, 17]).any()


def test_case_past_em_bounds(gen):
    out, _ = gen
    _, rec = _crop(out, "crop3")
    assert rec["case"] == "past_em_bounds" and rec["expected_verdict"] == "converted"
    lo, hi = S.crop_bounds_nm(rec["gt_voxel_size"], rec["translation"], rec["shape"])
    em_hi_x = -4.0 + 160 * 8.0
    assert hi[2] > em_hi_x and lo[2] < em_hi_x
    frac = (hi[2] - em_hi_x) / (hi[2] - lo[2])
    assert frac == pytest.approx(0.25)
    assert rec["expected_padded_fraction"] == pytest.approx(0.25)
    assert rec["usage"] == "validate"


def test_case_coarse_gt(gen):
    out, _ = gen
    crop, rec = _crop(out, "crop4")
    assert rec["gt_voxel_size"] == [16.0, 16.0, 16.0]
    assert rec["em_level_expected"] == "s1"
    # the crop's translation lies on the s1 voxel-centre grid (4 + 16 k)
    assert all((t - 4.0) % 16 == 0 for t in rec["translation"])
    lo, hi = S.crop_bounds_nm(rec["gt_voxel_size"], rec["translation"], rec["shape"])
    # s0 voxel i covers [8 i - 4, 8 i + 4): indices overlapping the crop, then chunks
    i0 = np.floor((lo + 4) / 8).astype(int)
    i1 = np.ceil((hi + 4) / 8).astype(int)  # exclusive
    chunks = {(a, b, c) for a in range(i0[0] // 32, (i1[0] - 1) // 32 + 1)
              for b in range(i0[1] // 32, (i1[1] - 1) // 32 + 1)
              for c in range(i0[2] // 32, (i1[2] - 1) // 32 + 1)}
    keys = {".".join(map(str, k)) for k in chunks}
    assert keys == set(rec["deleted_s0_chunks"])
    s0dir = out / "synth-2" / "synth-2.zarr" / EM / "s0"
    on_disk = set(_chunk_files(s0dir))
    assert not keys & on_disk
    assert len(on_disk) == 2 * 5 * 5 - len(keys)
    em = _zarr(out, "synth-2")[EM]
    sl0 = tuple(slice(a, b) for a, b in zip(i0, i1))
    assert (em["s0"][sl0] == 0).all()  # nothing there at s0
    j0 = np.round((lo - (4.0 - 8.0)) / 16).astype(int)  # s1 voxel edges at 16 j - 4
    s1 = em["s1"][tuple(slice(a, a + n) for a, n in zip(j0, rec["shape"]))]
    assert s1.shape == tuple(rec["shape"])
    assert s1.min() > 0 and s1.std() > 10
    # s1 at the crop agrees with the GT: mitochondria darker than cytoplasm
    mito = crop["mito/s0"][:] > 0
    cyto = crop["cyto/s0"][:] == 1
    assert s1[mito].mean() < s1[cyto].mean() - 20
    # and the other synth-2 training/test crops still have their s0
    others = [(c.voxel_size, c.translation, c.shape) for c in S.TRAIN_CROPS
              if c.dataset == "synth-2" and c.name != "crop4"]
    others += [(lab.voxel_size, lab.translation, lab.shape) for c in S.TEST_CROPS
               if c.dataset == "synth-2" for lab in c.labels]
    for geom in others:
        assert not set(S.s0_chunks_overlapping(*geom)) & chunks, geom


def test_case_nothing_annotated(gen):
    out, _ = gen
    crop, rec = _crop(out, "crop5")
    assert rec["expected_verdict"] == "skipped" and rec["reason"] == "nothing_annotated"
    assert rec["annotated"] == []
    cdir = out / "synth-2" / "synth-2.zarr" / GT / "crop5"
    n = int(np.prod(rec["shape"]))
    for cls in rec["not_annotated"]:
        assert _chunk_files(cdir / cls / "s0") == []
        ann = crop[f"{cls}/s0"].attrs["cellmap"]["annotation"]
        assert ann["complement_counts"] == {"unknown": n}
        assert crop[f"{cls}/s0"].fill_value == 255
    assert _chunk_files(cdir / "all" / "s0") == []
    assert crop["all/s0"].fill_value == 0


def test_case_offgrid_translation(gen):
    out, _ = gen
    crop, rec = _crop(out, "crop6")
    assert rec["gt_voxel_size"] == [8.0, 8.0, 8.0]
    assert all(t % 8 != 0 for t in rec["translation"])
    names = crop.attrs["cellmap"]["annotation"]["class_names"]
    assert "mito" in names and "mito_mem" not in names and "mito_lum" not in names
    all_ = crop["all/s0"][:]
    values = set(np.unique(all_).tolist())
    assert 50 in values and not values & {3, 4}
    np.testing.assert_array_equal(all_ == 50, crop["mito/s0"][:] > 0)
    assert {8, 9} <= values


# ------------------------------------------------------------------------------ test crops
def _parse_vec(text: str, typ=float) -> list:
    assert text.startswith("[") and text.endswith("]")
    return [typ(v) for v in text[1:-1].split(";")]


def test_manifest_and_test_truth(gen):
    out, _ = gen
    lines = (out / "test_crop_manifest.csv").read_text().splitlines()
    assert lines[0] == "crop_name,dataset,class_label,voxel_size,translation,shape"
    rows = list(csv.DictReader(lines))
    assert {(r["crop_name"], r["class_label"]) for r in rows} == {
        ("101", lbl) for lbl in ("mito", "mito_mem", "ves", "er", "cyto")} | {
        ("102", lbl) for lbl in ("mito", "cyto", "er")}
    truth = zarr.open_group(str(out / "test_truth.zarr"), mode="r")
    rois = {}
    for r in rows:
        vs = _parse_vec(r["voxel_size"])
        tr = _parse_vec(r["translation"])
        shape = _parse_vec(r["shape"], int)
        assert r["shape"] == "[" + ";".join(str(s) for s in shape) + "]"
        assert r["voxel_size"] == "[" + ";".join(f"{v:.1f}" for v in vs) + "]"
        a = truth[f"crop{r['crop_name']}/{r['class_label']}"]
        assert list(a.shape) == shape
        assert a.attrs["voxel_size"] == vs and a.attrs["translation"] == tr
        assert a.attrs["shape"] == shape
        data = a[:]
        if CELLMAP_CLASSES[r["class_label"]].instance:
            assert a.dtype == np.uint32
        else:
            assert a.dtype == np.uint8 and set(np.unique(data).tolist()) <= {0, 1}
        assert data.any(), r
        lo, hi = S.crop_bounds_nm(vs, tr, shape)
        rois.setdefault(r["crop_name"], set()).add((tuple(lo), tuple(hi)))
        # the test crop is not among the ground truth
        gt = out / r["dataset"] / f"{r['dataset']}.zarr" / GT / f"crop{r['crop_name']}"
        assert not gt.exists()
    assert all(len(v) == 1 for v in rois.values())  # one physical ROI per crop
    vs102 = {tuple(_parse_vec(r["voxel_size"])) for r in rows if r["crop_name"] == "102"}
    assert vs102 == {(8.0, 8.0, 8.0), (16.0, 16.0, 16.0)}
    # truth agrees with the EM (same scene): mito darker than cyto in crop101
    em = _zarr(out, "synth-1")[f"{EM}/s0"]
    t = truth["crop101/mito"]
    idx = [int(v / 8) for v in t.attrs["translation"]]
    img = em[tuple(slice(i, i + n) for i, n in zip(idx, t.shape))]
    assert img[t[:] > 0].mean() < img[truth["crop101/cyto"][:] == 1].mean() - 20


def test_datasplit(gen):
    out, _ = gen
    text = (out / "datasplit.csv").read_text()
    assert not text.startswith("usage")
    for line in text.splitlines():
        assert line.startswith('"') and line.endswith('"') and line.count('","') == 4
    rows = list(csv.reader(text.splitlines()))
    assert len(rows) == 6
    for row, spec in zip(rows, S.TRAIN_CROPS):
        usage, raw, raw_ds, gt, gt_ds = row
        assert usage == ("validate" if spec.name == "crop3" else "train")
        assert os.path.isabs(raw) and raw == gt and Path(raw).is_dir()
        assert raw == str(out.resolve() / spec.dataset / f"{spec.dataset}.zarr")
        assert raw_ds == "recon-1/em/fibsem-uint8"
        crop_path, classes = gt_ds.split("/[")
        assert crop_path == f"{GT}/{spec.name}"
        ann = zarr.open_group(gt, mode="r")[crop_path].attrs["cellmap"]["annotation"]
        names = ann["class_names"]
        assert classes.rstrip("]").split(",") == [n for n in names if n != "all"]


def test_total_size(gen):
    out, _ = gen
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"\nsynthetic tree: {total / 1e6:.2f} MB")
    assert total < 20e6
