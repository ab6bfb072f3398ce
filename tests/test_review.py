"""auto3dseg.analysis.review: per-class figures by label value, MONAI's positional summary, flags, figures.

The fixture writes five tiny NIfTI cases with different label subsets, runs MONAI's own
DataAnalyzer on them, and reviews the result. Expected numbers are computed here from the
label arrays with NumPy, never copied from MONAI's output.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from auto3dseg.analysis.review import (
    FIGURES,
    REVIEW_DIR,
    REVIEW_JSON,
    case_label_fractions,
    find_flags,
    histogram_percentiles,
    monai_positional_fraction,
    per_class_stats,
    positional_summary_mismatches,
    resolve_annotated,
    write_review,
)
from datalists.annotated import encode_annotated

CLASS_TABLE = [
    {"id": 1, "name": "ecs", "cellmap_id": 1, "instance": False, "parts": []},
    {"id": 2, "name": "pm", "cellmap_id": 2, "instance": False, "parts": []},
    {"id": 3, "name": "mito_mem", "cellmap_id": 3, "instance": False, "parts": []},
    {"id": 4, "name": "ves", "cellmap_id": 41, "instance": True, "parts": []},
    {"id": 5, "name": "er", "cellmap_id": 51, "instance": False, "parts": []},
]
CLASS_IDS = [r["id"] for r in CLASS_TABLE]

# name, label values present, annotated ids (None: no annotated_mask), fold, shape, constant image
CASES = [
    ("crop0", [0, 1, 2, 3], None, 0, (16, 16, 16), False),
    ("crop1", [0, 2, 3], [1, 2, 3], 1, (16, 16, 16), False),     # class 1 annotated but absent
    ("crop2", [0, 1, 3], [1, 3], 0, (16, 16, 16), True),         # constant image
    ("crop3", [0], [1, 2], 1, (16, 16, 16), False),              # empty label
    ("crop4", [0, 1, 2, 3, 4], [1, 2, 3, 4], 0, (16, 16, 3), False),  # thin: extreme size
]
NUM_FOLDS = 2


def _label_array(rng: np.random.Generator, values: list[int], shape: tuple[int, ...]) -> np.ndarray:
    p = rng.dirichlet(np.full(len(values), 2.0)) * 0.8 + 0.2 / len(values)
    lab = rng.choice(np.asarray(values, dtype=np.uint8), size=shape, p=p / p.sum())
    flat = lab.reshape(-1)
    flat[: len(values)] = values  # every listed value present
    return flat.reshape(shape)


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory):
    """(root, work dir, md path, {name: label array}, {name: image array}, datalist)."""
    from monai.apps.auto3dseg import DataAnalyzer

    root = tmp_path_factory.mktemp("review")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    rng = np.random.default_rng(7)
    affine = np.diag([8.0, 8.0, 8.0, 1.0])
    labels, images, items = {}, {}, []
    for name, values, ann, fold, shape, constant in CASES:
        lab = _label_array(rng, values, shape)
        img = np.full(shape, 100, np.uint8) if constant else rng.integers(20, 240, size=shape).astype(np.uint8)
        nib.save(nib.Nifti1Image(img, affine), root / "images" / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(lab, affine), root / "labels" / f"{name}.nii.gz")
        labels[name], images[name] = lab, img
        item = {"image": f"images/{name}.nii.gz", "label": f"labels/{name}.nii.gz", "fold": fold}
        if ann is not None:
            item["annotated_mask"] = encode_annotated(ann)
        items.append(item)
    datalist = {
        "name": "tiny",
        "num_folds": NUM_FOLDS,
        "labels": {"0": "background", **{str(r["id"]): r["name"] for r in CLASS_TABLE}},
        "class_table": CLASS_TABLE,
        "training": items,
        "testing": [],
    }
    dl_path = root / "datalist.json"
    dl_path.write_text(json.dumps(datalist))
    wd = root / "wd"
    wd.mkdir()
    DataAnalyzer(str(dl_path), str(root), output_path=str(wd / "datastats.yaml"), device="cpu", worker=0,
                 label_key="label").get_all_case_stats()
    md = write_review(wd, dl_path)
    return root, wd, md, labels, images, datalist


def _annotated(name: str) -> set[int]:
    ann = next(c[2] for c in CASES if c[0] == name)
    return set(CLASS_IDS) if ann is None else set(ann)


def _cases(wd: Path) -> list[dict]:
    return yaml.safe_load((wd / "datastats_by_case.yaml").read_text())["stats_by_cases"]


def _name(case: dict) -> str:
    return Path(case["image_filepath"]).name.replace(".nii.gz", "")


def test_by_value_fractions_match_numpy(reviewed):
    _root, wd, _md, labels, _, _ = reviewed
    review = json.loads((wd / REVIEW_JSON).read_text())
    by_id = {c["id"]: c for c in review["classes"]}
    for cid in CLASS_IDS:
        ann = [n for n in labels if cid in _annotated(n)]
        fr = {n: float(np.mean(labels[n] == cid)) for n in labels}
        pres = [n for n in labels if fr[n] > 0]
        got = by_id[cid]
        assert got["annotated"] == len(ann)
        assert got["present"] == len(pres)
        if ann:
            assert got["mean_fraction_annotated"] == pytest.approx(np.mean([fr[n] for n in ann]), rel=1e-6)
        if pres:
            assert got["mean_fraction_present"] == pytest.approx(np.mean([fr[n] for n in pres]), rel=1e-6)
        folds = {str(f): sum(1 for c in CASES if c[3] == f and cid in _annotated(c[0])) for f in (0, 1)}
        assert got["annotated_by_fold"] == folds
    # per-case zip by value agrees with the arrays too
    for case in _cases(wd):
        lab = labels[_name(case)]
        expect = {int(v): float(np.mean(lab == v)) for v in np.unique(lab)}
        assert case_label_fractions(case) == pytest.approx(expect, rel=1e-6)


def test_absent_annotated_mask_means_all_classes(reviewed):
    _, wd, _, _, _, _ = reviewed
    review = json.loads((wd / REVIEW_JSON).read_text())
    by_id = {c["id"]: c for c in review["classes"]}
    # class 5 is named by no mask; only crop0 (no mask at all) annotates it
    assert by_id[5]["annotated"] == 1
    assert by_id[5]["annotated_images"] == ["images/crop0.nii.gz"]
    assert resolve_annotated(None, CLASS_IDS) == frozenset(CLASS_IDS)
    assert resolve_annotated(encode_annotated([2, 5]), CLASS_IDS) == frozenset({2, 5})
    case = {"label_stats": {"labels": [0, 2], "label": [{"foreground_percentage": 0.9},
                                                         {"foreground_percentage": 0.1}]}}
    st = per_class_stats([case, case], [1, 2], [None, [1]])
    assert st[1]["annotated"] == 2 and st[2]["annotated"] == 1
    assert st[2]["mean_fraction_annotated"] == pytest.approx(0.1)
    assert st[1]["mean_fraction_annotated"] == 0.0 and st[1]["present"] == 0


def test_monai_positional_summary_disagrees_and_is_flagged(reviewed):
    _root, wd, md, labels, _, _ = reviewed
    summary = yaml.safe_load((wd / "datastats.yaml").read_text())["stats_summary"]["label_stats"]
    cases = _cases(wd)
    names = [_name(c) for c in cases]
    values = [int(v) for v in summary["labels"]]
    assert values == [0, 1, 2, 3, 4]
    i1 = values.index(1)
    monai_1 = summary["label"][i1]["foreground_percentage"]["mean"]
    # what MONAI did: each case's label list indexed by the value 1 (its second present value)
    positional = [float(np.mean(labels[n] == np.unique(labels[n])[1])) for n in names if len(np.unique(labels[n])) > 1]
    assert monai_1 == pytest.approx(np.mean(positional), rel=1e-5)
    assert monai_positional_fraction(cases, 1)[0] == pytest.approx(monai_1, rel=1e-5)
    by_value = np.mean([np.mean(labels[n] == 1) for n in names if np.any(labels[n] == 1)])
    assert abs(monai_1 - by_value) > 1e-3  # MONAI mixes class 2 into class 1

    mism = {m["value"]: m for m in positional_summary_mismatches(summary, cases)}
    assert 1 in mism and 4 not in mism  # every case listing 4 lists 0..3 too
    assert mism[1]["by_value_mean"] == pytest.approx(by_value, rel=1e-6)
    assert mism[1]["monai_source_values"] == [1, 2]
    assert [names[k] for k in mism[1]["wrong_source_cases"]] == ["crop1"]
    assert 3 in mism and sorted(names[k] for k in mism[3]["missed_cases"]) == ["crop1", "crop2"]

    review = json.loads((wd / REVIEW_JSON).read_text())
    assert {m["value"] for m in review["positional_mismatches"]} == set(mism)
    flag = [f for f in review["flags"] if f.startswith("[monai-positional-summary] label 1 'ecs'")]
    assert len(flag) == 1 and "images/crop1.nii.gz" in flag[0]
    assert "label[1]" in md.read_text()


def test_flags_name_the_files(reviewed):
    _, wd, md, _, _, _ = reviewed
    flags = json.loads((wd / REVIEW_JSON).read_text())["flags"]
    text = md.read_text()

    def tagged(tag: str) -> list[str]:
        return [f for f in flags if f.startswith(f"[{tag}]")]

    assert [f.split()[1].rstrip(":") for f in tagged("blank-image")] == ["images/crop2.nii.gz"]
    assert [f.split()[1].rstrip(":") for f in tagged("empty-label")] == ["images/crop3.nii.gz"]
    assert [f.split()[1].rstrip(":") for f in tagged("extreme-size")] == ["images/crop4.nii.gz"]
    few = tagged("few-annotated")
    assert {f.split("'")[1] for f in few} == {"ves", "er"}  # 2 and 1 crops < max(3, 2 folds)
    assert any("'ves'" in f and "images/crop0.nii.gz" in f and "images/crop4.nii.gz" in f for f in few)
    assert [f.split("'")[1] for f in tagged("annotated-absent")] == ["er"]
    assert not tagged("never-annotated") and not tagged("present-unannotated")
    for f in flags:
        assert f"- {f}" in text


def test_find_flags_direct():
    case = {"image_filepath": "/d/images/a.nii.gz",
            "image_stats": {"shape": [[32, 32, 32]], "intensity": [{"max": 5.0, "min": 1.0, "stdev": 1.0}]},
            "label_stats": {"labels": [0, 1, 7], "label": [{"foreground_percentage": 0.5},
                                                            {"foreground_percentage": 0.3},
                                                            {"foreground_percentage": 0.2}]}}
    st = per_class_stats([case] * 4, [1, 2, 3], [[1, 2]] * 4, folds=[0, 1, 2, 3])
    assert st[1]["annotated_by_fold"] == {0: 1, 1: 1, 2: 1, 3: 1}
    flags = find_flags([case] * 4, [[1, 2]] * 4, st, names={1: "a", 2: "b", 3: "c"}, num_folds=5,
                       dataroot="/d")
    assert any(f.startswith("[never-annotated] class 3 'c'") for f in flags)
    assert any(f.startswith("[few-annotated] class 1 'a'") and "max(3, num_folds) = 5" in f for f in flags)
    assert any(f.startswith("[annotated-absent] class 2 'b'") for f in flags)
    assert any(f.startswith("[unknown-label] images/a.nii.gz") for f in flags)
    # 255 is "not annotated" (the datalist contract), reported as such, never as an unknown class
    case255 = {**case, "label_stats": {"labels": [0, 1, 255], "label": [{"foreground_percentage": 0.5},
                                                                       {"foreground_percentage": 0.3},
                                                                       {"foreground_percentage": 0.2}]}}
    flags = find_flags([case255], [[1, 2]], per_class_stats([case255], [1, 2, 3], [[1, 2]]),
                       names={1: "a", 2: "b", 3: "c"}, num_folds=1, dataroot="/d")
    assert not any(f.startswith("[unknown-label]") for f in flags)
    assert any(f.startswith("[not-annotated-voxels] images/a.nii.gz: 20") for f in flags)
    # a group's fraction counts its parts' values
    grp = per_class_stats([case], [1, 9], [None], parts={9: [1, 7]})
    assert grp[9]["mean_fraction_annotated"] == pytest.approx(0.5)
    # a value of a class not annotated in the item is a stray, unless an annotated class counts it: the
    # converter writes what two annotated classes share (ne of nuc and er), which counts for both (probe W2)
    shared = {**case, "label_stats": {"labels": [0, 3], "label": [{"foreground_percentage": 0.5},
                                                               {"foreground_percentage": 0.5}]}}
    stats = per_class_stats([shared], [1, 2, 3], [[1, 2]])
    assert any(f.startswith("[present-unannotated] images/a.nii.gz: label values [3]") for f in find_flags(
        [shared], [[1, 2]], stats, names={1: "nuc", 2: "er", 3: "ne"}, dataroot="/d"))
    assert not any(f.startswith("[present-unannotated]") for f in find_flags(
        [shared], [[1, 2]], stats, names={1: "nuc", 2: "er", 3: "ne"}, dataroot="/d",
        members={1: {1, 3}, 2: {2, 3}, 3: {3}}))


def test_the_console_names_classes_no_crop_annotates(reviewed, capsys):
    """A class no crop annotates (38 of 48, converted with --classes) was said in the review only."""
    from auto3dseg.analysis.review import flag_summary
    from auto3dseg.orchestration.cli_steps import review_flag_lines

    _, wd, _, _, _, _ = reviewed
    flags = json.loads((wd / REVIEW_JSON).read_text())["flags"]
    lines = review_flag_lines(wd)
    assert lines == flag_summary(flags) and lines[0].startswith("review flags: ") and "1 annotated-absent" in lines[0]
    never = "[never-annotated] class 3 'c': no crop annotates it"
    assert flag_summary([never, "[few-annotated] class 1 'a': x"]) == [
        "review flags: 1 few-annotated, 1 never-annotated", f"  {never}"]
    assert flag_summary([]) == [] and review_flag_lines(wd / "nowhere") == []


def test_figures_are_png_and_linked(reviewed):
    _, wd, md, _, images, _ = reviewed
    text = md.read_text()
    for name in FIGURES.values():
        png = wd / REVIEW_DIR / name
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
        assert f"]({REVIEW_DIR}/{name})" in text
    assert not list(wd.glob(".tmp-*")) and not list((wd / REVIEW_DIR).glob(".tmp-*"))
    # pooled percentiles agree with NumPy's on all voxels, to one bin width
    it = json.loads((wd / REVIEW_JSON).read_text())["header"]["intensity"]
    pooled = np.concatenate([a.reshape(-1) for a in images.values()]).astype(float)
    width = (pooled.max() - pooled.min()) / 256
    assert it["hist_images"] == len(images)
    assert it["pooled_p00_5"] == pytest.approx(np.percentile(pooled, 0.5), abs=width + 1e-9)
    assert it["pooled_p99_5"] == pytest.approx(np.percentile(pooled, 99.5), abs=width + 1e-9)
    assert histogram_percentiles(np.zeros(3), np.arange(4.0), [50]) == [None]


def test_header_counts(reviewed):
    _, wd, md, _, _, _ = reviewed
    h = json.loads((wd / REVIEW_JSON).read_text())["header"]
    assert h["n_cases"] == 5 and h["n_training_items"] == 5 and h["num_folds"] == 2
    assert h["items_per_fold"] == {"0": 3, "1": 2}
    assert h["spacing_median"] == [8.0, 8.0, 8.0]
    assert h["shape_min"] == [16, 16, 3] and h["shape_max"] == [16, 16, 16]
    assert "**Cases analysed**: 5 of 5" in md.read_text()


def test_2d_images_are_not_flagged_for_their_single_slice():
    from auto3dseg.analysis.review import size_outliers

    assert size_outliers([[192, 192, 1], [224, 160, 1], [200, 200, 1]]) == {}
    assert "axis 2 has 1 voxels" in size_outliers([[64, 64, 30], [64, 64, 30], [64, 64, 1]])[2]


def test_histogram_reads_images_of_a_relative_data_root(reviewed, tmp_path, monkeypatch):
    """make demo's case: analysed with a relative data root, MONAI records ``<root>/images/x``
    relative to the working directory; the review must not join the root twice."""
    from monai.apps.auto3dseg import DataAnalyzer

    root, _, _, _, images, _ = reviewed
    monkeypatch.chdir(root.parent)
    rel = Path(root.name)
    (rel / "wd_rel").mkdir(exist_ok=True)
    DataAnalyzer(str(rel / "datalist.json"), str(rel), output_path=str(rel / "wd_rel" / "datastats.yaml"),
                 device="cpu", worker=0, label_key="label").get_all_case_stats()
    assert not Path(_cases(rel / "wd_rel")[0]["image_filepath"]).is_absolute()
    for cwd, args in ((root.parent, (rel / "wd_rel", rel / "datalist.json", rel)),
                      (tmp_path, (root / "wd_rel", root / "datalist.json", root))):
        monkeypatch.chdir(cwd)
        write_review(*args)
        review = json.loads((root / "wd_rel" / REVIEW_JSON).read_text())
        assert review["header"]["intensity"]["hist_images"] == len(images), cwd
        assert not [f for f in review["flags"] if f.startswith("[unreadable-image]")]


def test_unreadable_images_are_a_flag_not_an_empty_plot(reviewed, tmp_path):
    import shutil

    root, _, _, _, images, _ = reviewed
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("wd_rel"))
    by_case = copy / "wd" / "datastats_by_case.yaml"
    by_case.write_text(by_case.read_text().replace(str(root), str(copy)))
    (copy / "images" / "crop1.nii.gz").write_bytes(b"not a NIfTI")
    write_review(copy / "wd", copy / "datalist.json")
    review = json.loads((copy / "wd" / REVIEW_JSON).read_text())
    assert review["header"]["intensity"]["hist_images"] == len(images) - 1
    flag = [f for f in review["flags"] if f.startswith("[unreadable-image]")]
    assert len(flag) == 1 and "1 of 5" in flag[0] and "images/crop1.nii.gz" in flag[0]
    for name, _ in images.items():
        (copy / "images" / f"{name}.nii.gz").write_bytes(b"")
    md = write_review(copy / "wd", copy / "datalist.json")
    review = json.loads((copy / "wd" / REVIEW_JSON).read_text())
    assert review["header"]["intensity"]["hist_images"] == 0 and review["header"]["intensity"]["pooled_p00_5"] is None
    assert "[unreadable-image] 5 of 5 image(s)" in md.read_text()


def test_a_review_follows_a_class_renamed_in_the_datalist(reviewed, tmp_path, capsys):
    """A class renamed in the datalist after the analysis kept the old name in the review, as the
    statistics themselves do not change (probe D21)."""
    from auto3dseg.analysis.analyze import _review
    from auto3dseg.analysis.review import REVIEW_MD

    root, wd, _, _, _, datalist = reviewed
    work, data = tmp_path / "wd", tmp_path / "data"
    shutil.copytree(wd, work)
    shutil.copytree(root, data, ignore=shutil.ignore_patterns("wd"))
    dl_path = data / "datalist.json"
    write_review(work, dl_path, data)
    before = (work / REVIEW_MD).read_text()
    _review(work, dl_path, data, force=False)  # unchanged: kept
    assert (work / REVIEW_MD).read_text() == before and "note:" not in capsys.readouterr().out
    old = datalist["class_table"][0]["name"]
    edited = json.loads(dl_path.read_text())
    edited["class_table"][0]["name"] = f"{old}_renamed"
    dl_path.write_text(json.dumps(edited))
    _review(work, dl_path, data, force=False)
    assert "writing it again" in capsys.readouterr().out
    assert f"{old}_renamed" in (work / REVIEW_MD).read_text() and f"{old}_renamed" not in before
