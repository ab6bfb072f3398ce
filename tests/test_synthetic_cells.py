"""Tests of the synthetic CellSeg-layout generator (converters/cells/synthetic.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from scipy import ndimage

from converters.cells import synthetic as SC

CELLSEG_EXTS = {".tif", ".tiff", ".png", ".jpg", ".bmp"}


@pytest.fixture(scope="module")
def gen(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cells") / "data"
    t0 = time.perf_counter()
    info = SC.generate_synthetic_cells(out, seed=0)
    print(f"\nsynthetic cells generation took {time.perf_counter() - t0:.2f} s")
    return out, info


def _read(path: Path) -> np.ndarray:
    return tifffile.imread(path) if path.suffix in (".tif", ".tiff") else iio.imread(path)


def _hw(img: np.ndarray, layout: str) -> tuple[int, int]:
    return tuple(img.shape[1:]) if layout == "CHW" else tuple(img.shape[:2])


def _touching_pairs(lab: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of distinct non-zero ids that are 4-neighbours somewhere."""
    pairs: set[tuple[int, int]] = set()
    for a, b in ((lab[:-1], lab[1:]), (lab[:, :-1], lab[:, 1:])):
        m = (a > 0) & (b > 0) & (a != b)
        pairs |= set(zip(np.minimum(a[m], b[m]).tolist(), np.maximum(a[m], b[m]).tolist(),
                           strict=True))
    return pairs


def _extents(lab: np.ndarray) -> list[int]:
    """Largest bounding-box side of every cell, px."""
    return [max(s.stop - s.start for s in sl) for sl in ndimage.find_objects(lab)
            if sl is not None]


def _border_ids(lab: np.ndarray) -> set[int]:
    frame = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])
    return set(frame[frame > 0].tolist())


def test_layout_and_file_names(gen):
    out, info = gen
    cases = info["cases"]
    assert sorted(p.name for p in out.iterdir()) == ["cases.json", "images", "labels", "test_truth"]
    assert json.loads((out / "cases.json").read_text()) == info
    assert info["generator"] == SC.GENERATOR and info["seed"] == 0
    images = {p.name for p in (out / "images").iterdir()}
    assert images == {r["file"] for r in cases.values()}
    assert {Path(f).suffix for f in images} == CELLSEG_EXTS
    for stem, r in cases.items():
        assert r["stem"] == stem and r["file"] == f"{stem}.{r['format']}"
        assert r["image"] == f"images/{r['file']}"
    labelled = {s for s, r in cases.items() if r["labelled"]}
    assert {p.name for p in (out / "labels").iterdir()} == {f"{s}_label.tiff" for s in labelled}
    assert {p.name for p in (out / "test_truth").iterdir()} == {
        f"{s}_label.tiff" for s in cases if s not in labelled}
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary folders left


def test_test_images_have_truth_apart(gen):
    out, info = gen
    cases = info["cases"].values()
    train = [r for r in cases if r["labelled"]]
    test = [r for r in cases if not r["labelled"]]
    assert len(train) >= 8 and 2 <= len(test) <= 3
    for r in test:
        assert r["split"] == "test" and r["label"] is None
        assert not (out / "labels" / f"{r['stem']}_label.tiff").exists()
        assert (out / "test_truth" / f"{r['stem']}_label.tiff").is_file()
        assert (out / r["image"]).is_file()
    for r in train:
        assert r["split"] == "train"
        assert r["label"] == r["truth"] == f"labels/{r['stem']}_label.tiff"


def test_modalities_dtypes_and_channels(gen):
    out, info = gen
    cases = info["cases"].values()
    assert {r["modality"] for r in cases} == set(SC.MODALITIES)
    seen = set()
    for r in cases:
        img = _read(out / r["image"])
        assert str(img.dtype) == r["dtype"] and list(img.shape) == r["shape"], r["stem"]
        assert [int(img.min()), int(img.max())] == r["value_range"]
        layout, ch = r["channel_layout"], r["channels"]
        if layout == "HW":
            assert img.ndim == 2 and ch == 1
        elif layout == "HWC":
            assert img.ndim == 3 and img.shape[-1] == ch == 3
        else:
            assert layout == "CHW" and img.ndim == 3 and img.shape[0] == ch == 4
            assert r["use_channels"] == [0, 1, 2]
            with tifffile.TiffFile(out / r["image"]) as tf:
                assert len(tf.pages) == 1 and tf.pages[0].samplesperpixel == 4
        seen.add((r["dtype"], layout, r["format"]))
        if r["modality"] == "fluo_gray16":  # high background offset, saturated cells
            assert img.min() > 20000 and img.max() == 65535
        if r["modality"] == "brightfield_rgb8":  # dark purple cells on bright pink/white
            lab = tifffile.imread(out / r["truth"])
            bg, cell = img[lab == 0].mean(0), img[lab > 0].mean(0)
            assert bg.min() > 190 and bg[0] > bg[1] and bg[2] > bg[1]
            assert cell.sum() < bg.sum() - 100 and cell[2] > cell[1]
    assert {("uint16", "HW", "tif"), ("uint8", "HWC", "tif"), ("uint16", "CHW", "tif"),
            ("uint8", "HW", "png"), ("uint8", "HWC", "jpg"), ("uint8", "HWC", "bmp")} <= seen


def test_label_files(gen):
    out, info = gen
    dtypes, sequential = set(), set()
    for r in info["cases"].values():
        path = out / r["truth"]
        with tifffile.TiffFile(path) as tf:
            assert tf.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE  # zlib
            lab = tf.asarray()
        assert str(lab.dtype) == r["label_dtype"]
        ids = np.unique(lab)
        assert ids[0] == 0 and ids.min() >= 0
        assert r["n_cells"] == ids.size - 1 and r["max_id"] == int(ids[-1])
        is_seq = bool(np.array_equal(ids[1:], np.arange(1, ids.size)))
        assert r["ids_sequential"] == is_seq
        dtypes.add(r["label_dtype"])
        sequential.add(is_seq)
    assert {"int16", "uint16", "int32"} <= dtypes
    assert sequential == {True, False}


def test_labels_match_images_in_shape(gen):
    out, info = gen
    for r in info["cases"].values():
        img = _read(out / r["image"])
        lab = tifffile.imread(out / r["truth"])
        assert lab.ndim == 2 and lab.shape == _hw(img, r["channel_layout"]) == (
            r["height"], r["width"]), r["stem"]


def test_touching_small_isolated_and_border_cells(gen):
    out, info = gen
    touching = small = big = border = 0
    for r in info["cases"].values():
        lab = tifffile.imread(out / r["truth"])
        pairs = _touching_pairs(lab)
        assert r["n_touching_pairs"] == len(pairs)
        assert r["n_border_cells"] == len(_border_ids(lab))
        ext = _extents(lab)
        touching += len(pairs)
        small += sum(e < 10 for e in ext)
        big += sum(e >= 20 for e in ext)
        border += len(_border_ids(lab))
        if r["stem"] == "cell_08_sparse":  # isolated cells only, some cut by the border
            assert not pairs and r["n_cells"] >= 6 and _border_ids(lab)
        elif r["labelled"] and r["stem"] != "cell_07_he_bmp":
            assert len(pairs) >= 10, r["stem"]  # densely packed: many neighbours share borders
            assert any(e < 10 for e in ext), r["stem"]
    assert touching > 100 and small > 50 and big > 20 and border > 20


def test_one_large_labelled_image(gen):
    _, info = gen
    large = [r for r in info["cases"].values() if r["height"] * r["width"] > 512 * 512]
    assert len(large) == 1 and large[0]["labelled"]
    assert large[0]["height"] * large[0]["width"] >= 700_000
    others = [r for r in info["cases"].values() if r is not large[0]]
    assert all(max(r["height"], r["width"]) <= 256 for r in others)


def _arrays(out: Path, info: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {s: (_read(out / r["image"]), tifffile.imread(out / r["truth"]))
            for s, r in info["cases"].items()}


def test_same_seed_same_arrays(gen, tmp_path):
    out, info = gen
    again = SC.generate_synthetic_cells(tmp_path / "again", seed=0)
    strip = {k: v for k, v in info.items() if k != "out"}
    assert {k: v for k, v in again.items() if k != "out"} == strip
    a, b = _arrays(out, info), _arrays(tmp_path / "again", again)
    for stem in a:
        for x, y in zip(a[stem], b[stem], strict=True):
            assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), stem


def test_refuses_foreign_folder(tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="refusing"):
        SC.generate_synthetic_cells(foreign)
    (foreign / "cases.json").write_text(json.dumps({"generator": "someone else"}))
    assert SC.main(["--out", str(foreign)]) == 2
    assert "refusing" in capsys.readouterr().err
    assert (foreign / "keep.txt").read_text() == "precious"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(FileExistsError):
        SC.generate_synthetic_cells(a_file, force=True)
    assert a_file.read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "mine"]


def test_force_replaces_then_own_folder_is_regenerated(gen, tmp_path, capsys):
    out0, info0 = gen
    target = tmp_path / "mine"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    assert SC.main(["--out", str(target), "--seed", "1", "--force"]) == 0
    printed = capsys.readouterr().out
    assert str(target.resolve()) in printed and "cases.json" in printed
    assert not (target / "keep.txt").exists()
    info1 = json.loads((target / "cases.json").read_text())
    assert info1["seed"] == 1 and list(info1["cases"]) == list(info0["cases"])
    a0, a1 = _arrays(out0, info0), _arrays(target, info1)
    for stem in a0:  # another seed: other cells, other pixels; same files and shapes
        assert a0[stem][0].shape == a1[stem][0].shape
        assert not np.array_equal(a0[stem][1], a1[stem][1]), stem
        assert not np.array_equal(a0[stem][0], a1[stem][0]), stem
    again = SC.generate_synthetic_cells(target, seed=1)  # ours: replaced without force
    assert again["cases"] == info1["cases"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_failure_leaves_target_untouched(gen, tmp_path, monkeypatch):
    out0, info0 = gen
    target = tmp_path / "data"
    calls = []

    def boom(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("disk full")

    monkeypatch.setattr(SC, "_make_case", boom)
    with pytest.raises(RuntimeError):
        SC.generate_synthetic_cells(target)
    assert calls and not target.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError):  # an existing tree of ours survives a failed rerun
        SC.generate_synthetic_cells(out0, seed=3)
    assert json.loads((out0 / "cases.json").read_text()) == info0
    assert [p.name for p in out0.parent.iterdir()] == [out0.name]


def test_pure_functions():
    rng = np.random.default_rng(0)
    lab = SC.cell_layout((64, 80), rng, diameter=(8.0, 16.0))
    assert lab.dtype == np.int32 and lab.shape == (64, 80)
    assert np.array_equal(np.unique(lab), np.arange(lab.max() + 1))
    assert np.array_equal(lab, SC.cell_layout((64, 80), np.random.default_rng(0),
                                              diameter=(8.0, 16.0)))
    for name, (render, dtype, ch, layout) in SC.MODALITIES.items():
        img = render(lab, np.random.default_rng(1))
        assert str(img.dtype) == dtype and _hw(img, layout) == lab.shape, name
        assert img.ndim == (2 if ch == 1 else 3), name
    out = SC.relabel_ids(lab, np.random.default_rng(2), "uint16", sequential=False)
    assert out.dtype == np.uint16 and np.array_equal(out > 0, lab > 0)
    assert len(np.unique(out)) == len(np.unique(lab))
    with pytest.raises(ValueError):
        SC.relabel_ids(np.full((2, 2), 40000, dtype=np.int32), rng, "int16")
