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
