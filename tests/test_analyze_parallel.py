"""The analysis on several processes writes exactly what MONAI's single process writes."""

from __future__ import annotations

import auto3dseg.analysis.analyze as an


def test_parallel_analysis_equals_monais_single_process(converted, tmp_path, monkeypatch):
    out, _ = converted
    calls = []
    real = an._parallel_case_stats
    monkeypatch.setattr(an, "_parallel_case_stats", lambda *a: calls.append(a[4]) or real(*a))
    one = an.analyze(out / "datalist.json", tmp_path / "one", out, workers=0, validate=False).parent
    assert calls == []  # MONAI's own single process
    three = an.analyze(out / "datalist.json", tmp_path / "three", out, workers=3, validate=False).parent
    assert calls == [3]
    for name in (an.DATASTATS, an.DATASTATS_BY_CASE):
        assert (one / name).read_bytes() == (three / name).read_bytes(), name
    assert "stats_by_cases" in (three / an.DATASTATS_BY_CASE).read_text()
