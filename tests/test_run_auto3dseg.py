"""run_auto3dseg.py: datalist validation first, then MONAI's DataAnalyzer."""

import json

import yaml

from run_auto3dseg import main


def test_validate_mode_accepts_converted_datalist(converted, capsys):
    out, _ = converted
    assert main(["--mode", "validate", "--datalist", str(out / "datalist.json")]) == 0
    assert "5" in capsys.readouterr().out  # the summary counts the 5 training items


def test_bad_datalist_is_refused_before_analysis(converted, tmp_path, capsys):
    out, _ = converted
    datalist = json.loads((out / "datalist.json").read_text())
    for item in datalist["training"]:
        item.pop("fold")
    bad = tmp_path / "datalist.json"
    bad.write_text(json.dumps(datalist))
    rc = main(["--mode", "analyze", "--datalist", str(bad), "--dataroot", str(out), "--work_dir", str(tmp_path / "wd")])
    assert rc == 2
    assert "no folds" in capsys.readouterr().err
    assert not (tmp_path / "wd" / "datastats.yaml").exists()


def test_analyze_writes_datastats_with_our_spacing_and_labels(converted, tmp_path):
    out, _ = converted
    wd = tmp_path / "wd"
    assert main(["--mode", "analyze", "--datalist", str(out / "datalist.json"), "--work_dir", str(wd),
                 "--workers", "0"]) == 0
    stats = yaml.safe_load((wd / "datastats.yaml").read_text())
    summary = stats["stats_summary"]
    assert summary["image_stats"]["spacing"]["median"] == [8.0, 8.0, 8.0]
    datalist = json.loads((out / "datalist.json").read_text())
    ids = {r["id"] for r in datalist["class_table"]}
    assert set(summary["label_stats"]["labels"]) - {0} <= ids
    assert (wd / "datastats_by_case.yaml").exists()
    assert not list(wd.glob(".tmp-*"))
    review = (wd / "datastats_review.md").read_text()
    for png in ("intensity_histogram", "class_fraction", "class_coverage", "shapes_spacing"):
        assert f"review/{png}.png" in review and (wd / "review" / f"{png}.png").stat().st_size > 1000
    # MONAI's position-based label summary is wrong on this data (crops miss labels): flagged
    assert "[monai-positional-summary]" in review


def test_a_full_disk_is_one_line_naming_the_file_and_what_to_do(monkeypatch, tmp_path, capsys):
    import errno

    import pytest

    import run_auto3dseg

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "work" / "model" / "last.pt"))

    monkeypatch.setattr(run_auto3dseg, "_run", full)
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "input.yaml").write_text(f"datalist: {tmp_path / 'd.json'}\ndataroot: {tmp_path}\n")
    rc = run_auto3dseg.main(["--mode", "train", "--work_dir", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert rc == 2 and "last.pt: No space left on device" in err and "Free some space" in err
    assert "Traceback" not in err
    with pytest.raises(OSError):
        run_auto3dseg.main(["--mode", "train", "--work_dir", str(tmp_path / "work"), "--debug"])


def test_zero_or_negative_sizes_are_refused_not_taken_as_the_default(converted, tmp_path, capsys):
    import pytest

    out, _ = converted
    for flag, value in (("--patch_size", "0"), ("--num_epochs", "-1"), ("--num_fold", "0")):
        with pytest.raises(SystemExit) as exc:
            main(["--mode", "generate", "--datalist", str(out / "datalist.json"), "--work_dir", str(tmp_path / "w"),
                  flag, value])
        assert exc.value.code == 2
        assert f"argument {flag}: {int(value)} is not allowed" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_unknown_algos_or_templates_folder_name_what_exists(tmp_path):
    import pytest

    from auto3dseg.bundles.bundle_algo import TEMPLATES_DIR
    from auto3dseg.bundles.generate import check_templates

    check_templates(str(TEMPLATES_DIR), ["segresnet", "dints", "swinunetr"])
    with pytest.raises(ValueError, match=r"--algos segresnt: no such template .*\(it has: dints, segresnet, swinunetr\)"):
        check_templates(str(TEMPLATES_DIR), ["segresnt"])
    with pytest.raises(ValueError, match=r"--templates .*nowhere: no such folder"):
        check_templates(str(tmp_path / "nowhere"), ["segresnet"])


def test_statistics_of_changed_training_items_are_not_reused(converted, tmp_path, capsys):
    """A training item removed from the datalist after analyze: a re-run kept datastats.yaml
    (still computed with it) without a word, and generate built bundles from it."""
    out, _ = converted
    wd, dl_path = tmp_path / "wd", tmp_path / "datalist.json"
    dl = json.loads((out / "datalist.json").read_text())
    dl_path.write_text(json.dumps(dl))
    args = ["--mode", "analyze", "--datalist", str(dl_path), "--dataroot", str(out), "--work_dir", str(wd),
            "--workers", "0"]
    assert main(args) == 0
    gone = dl["training"][0]["image"]
    assert gone in (wd / "datastats_by_case.yaml").read_text()
    dl["training"] = dl["training"][1:]
    dl_path.write_text(json.dumps(dl))
    capsys.readouterr()
    assert main(["--mode", "generate", "--datalist", str(dl_path), "--dataroot", str(out), "--work_dir", str(wd),
                 "--algos", "segresnet"]) == 2
    assert "changed since" in capsys.readouterr().err and not (wd / "segresnet_0").exists()
    assert main(args) == 0
    assert "analysing again" in capsys.readouterr().out
    assert gone not in (wd / "datastats_by_case.yaml").read_text()
    assert main(args) == 0 and "analysing again" not in capsys.readouterr().out  # now up to date: kept


def test_generate_without_algos_goes_on_with_the_networks_of_the_work_dir(converted, tmp_path, capsys):
    """A work_dir made with --algos segresnet, then the same command without --algos: it added
    dints and swinunetr bundles (hours of training) where the user meant to resume."""
    out, _ = converted
    wd = tmp_path / "wd"
    base = ["--datalist", str(out / "datalist.json"), "--work_dir", str(wd)]
    assert main(["--mode", "analyze", *base, "--workers", "0"]) == 0
    base += ["--num_fold", "1"]
    assert main(["--mode", "generate", *base, "--algos", "segresnet"]) == 0
    capsys.readouterr()
    assert main(["--mode", "generate", *base]) == 0
    err = capsys.readouterr().err
    assert "--algos not given: going on with the networks of" in err and "(segresnet)" in err, err
    assert sorted(p.name for p in wd.glob("*_0")) == ["segresnet_0"]
    assert main(["--mode", "generate", *base, "--algos", "segresnet", "dints"]) == 0  # named: added
    assert sorted(p.name for p in wd.glob("*_0")) == ["dints_0", "segresnet_0"]
    fresh = tmp_path / "fresh"
    assert main(["--mode", "analyze", "--datalist", str(out / "datalist.json"), "--work_dir", str(fresh),
                 "--workers", "0"]) == 0
    capsys.readouterr()
    assert main(["--mode", "generate", "--datalist", str(out / "datalist.json"), "--work_dir", str(fresh),
                 "--num_fold", "1"]) == 0  # a new work_dir: the three default networks
    assert "--algos not given" not in capsys.readouterr().err
    assert sorted(p.name for p in fresh.glob("*_0")) == ["dints_0", "segresnet_0", "swinunetr_0"]


def test_statistics_of_a_training_image_rewritten_in_place_are_not_reused(converted, tmp_path, capsys):
    """Data re-converted in place (same item names, another spacing): analyze kept the old
    statistics without a word, and generate built bundles for the old spacing."""
    import shutil

    import nibabel as nib
    import numpy as np

    out, _ = converted
    data, wd = tmp_path / "nifti", tmp_path / "wd"
    shutil.copytree(out, data)
    args = ["--mode", "analyze", "--datalist", str(data / "datalist.json"), "--work_dir", str(wd), "--workers", "0"]
    assert main(args) == 0
    item = json.loads((data / "datalist.json").read_text())["training"][0]
    path = data / item["image"]
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[::-1].copy(), img.affine, img.header), path)  # other voxels
    capsys.readouterr()
    assert main(["--mode", "generate", "--datalist", str(data / "datalist.json"), "--work_dir", str(wd),
                 "--algos", "segresnet"]) == 2
    err = capsys.readouterr().err
    assert "1 training file(s)" in err and item["image"] in err and "run --mode analyze" in err, err
    assert not (wd / "segresnet_0").exists()
    assert main(args) == 0
    assert "were rewritten since" in capsys.readouterr().out
    assert main(args) == 0 and "analysing again" not in capsys.readouterr().out  # up to date again: kept


def test_label_values_outside_the_class_table_stop_the_analysis(converted, tmp_path, capsys):
    """A label holding 40 with 12 classes was validated, analysed and trained on (as background),
    said only inside datastats_review.md."""
    import shutil

    import nibabel as nib
    import numpy as np

    out, _ = converted
    data, wd = tmp_path / "nifti", tmp_path / "wd"
    shutil.copytree(out, data)
    item = json.loads((data / "datalist.json").read_text())["training"][1]
    path = data / item["label"]
    lab = nib.load(path)
    arr = np.asarray(lab.dataobj).copy()
    arr[:2, :2, :2] = 40
    nib.save(nib.Nifti1Image(arr, lab.affine, lab.header), path)
    args = ["--mode", "analyze", "--datalist", str(data / "datalist.json"), "--work_dir", str(wd), "--workers", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "1 training label(s)" in err and f"{path}: values [40]" in err and "Relabel them" in err, err
    assert not (wd / "datastats.yaml").exists() and not (wd / "datastats_by_case.yaml").exists()
    arr[:2, :2, :2] = 255  # not annotated: allowed
    nib.save(nib.Nifti1Image(arr, lab.affine, lab.header), path)
    assert main(args) == 0 and (wd / "datastats.yaml").is_file()


def test_one_crop_saved_twice_in_two_folds_stops_the_analysis(converted, tmp_path, capsys):
    """The same crop re-saved as .nii (other bytes, same voxels) in another fold passed every
    check: the cross-validated score would be flattered."""
    import shutil

    import nibabel as nib

    out, _ = converted
    data, wd = tmp_path / "nifti", tmp_path / "wd"
    shutil.copytree(out, data)
    dl = json.loads((data / "datalist.json").read_text())
    first = dl["training"][0]
    other = next(f for f in range(int(dl["num_folds"])) if f != first["fold"])
    copy = {**first, "fold": other, "image": "images/resaved.nii", "label": "labels/resaved.nii"}
    for key in ("image", "label"):
        nib.save(nib.load(data / first[key]), data / copy[key])
    dl["training"].append(copy)
    (data / "datalist.json").write_text(json.dumps(dl))
    args = ["--mode", "analyze", "--datalist", str(data / "datalist.json"), "--work_dir", str(wd), "--workers", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{first['image']} (fold {first['fold']}) and images/resaved.nii (fold {other})" in err, err
    assert "flattered" in err and not (wd / "datastats.yaml").exists()
    copy["fold"] = first["fold"]  # in its original's fold: no leak
    (data / "datalist.json").write_text(json.dumps(dl))
    assert main(args) == 0


def test_a_truncated_training_image_is_named_by_the_analysis(converted, tmp_path, capsys):
    """MONAI's DataAnalyzer failed on a truncated image naming no file (and the command it pointed at said OK)."""
    import shutil

    out, _ = converted
    data, wd = tmp_path / "nifti", tmp_path / "wd"
    shutil.copytree(out, data)
    item = json.loads((data / "datalist.json").read_text())["training"][2]
    path = data / item["image"]
    path.write_bytes(path.read_bytes()[:3000])  # the header reads, the voxels do not
    assert main(["--mode", "analyze", "--datalist", str(data / "datalist.json"), "--work_dir", str(wd),
                 "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: cannot read its voxels" in err and "training item 2, its image" in err, err


def test_a_label_with_fractional_values_stops_the_analysis(converted, tmp_path, capsys):
    """A float label holding 1.5 (resampled linearly) was cast to class 1 by the statistics and training, silently."""
    import shutil

    import nibabel as nib
    import numpy as np

    out, _ = converted
    data, wd = tmp_path / "nifti", tmp_path / "wd"
    shutil.copytree(out, data)
    item = json.loads((data / "datalist.json").read_text())["training"][0]
    path = data / item["label"]
    lab = nib.load(path)
    arr = np.asarray(lab.dataobj).astype(np.float32)
    arr[:2, :2, :2] = 1.5
    nib.save(nib.Nifti1Image(arr, lab.affine), path)
    assert main(["--mode", "analyze", "--datalist", str(data / "datalist.json"), "--work_dir", str(wd),
                 "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: label holds non-whole values (1.5; training item 0)" in err and "nearest-neighbour" in err, err
