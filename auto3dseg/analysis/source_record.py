"""What ``datastats.yaml`` was computed from, and whether it still describes the data.

``datastats_source.json`` (written by ``--mode analyze`` before the statistics, completed with
their SHA-1 just before ``datastats.yaml`` appears) records the datalist, a fingerprint of its
training items and each training file's size and time. Later steps compare: training items
changed, files rewritten in place, or a ``datastats.yaml`` that is not the one written (copied
from another work_dir) make the statistics stale, and ``generate`` refuses to plan from them.
"""

from __future__ import annotations

import os
from pathlib import Path

from converters.outputs import atomic_write_json

__all__ = ["DATASTATS", "DATASTATS_SOURCE", "record_stats_digest", "rewritten_training_files", "stale_datastats", "training_files",
           "training_fingerprint"]

DATASTATS = "datastats.yaml"
#: the training items ``datastats.yaml`` was computed from (their SHA-1), written before it
DATASTATS_SOURCE = "datastats_source.json"


def training_fingerprint(datalist: str | os.PathLike) -> str:
    """SHA-1 of a datalist's training items (what the statistics are computed from), in any order."""
    import hashlib
    import json

    items = json.loads(Path(datalist).read_text()).get("training") or []
    return hashlib.sha1(json.dumps(sorted(json.dumps(it, sort_keys=True) for it in items)).encode()).hexdigest()


def training_files(datalist: str | os.PathLike, dataroot: str | os.PathLike | None = None) -> dict[str, list[int]]:
    """``[size, mtime_ns]`` of each training image and label file, by its path in the datalist
    (files that cannot be read are left out: validation names them)."""
    import json

    root = Path(dataroot) if dataroot is not None else Path(datalist).parent
    out: dict[str, list[int]] = {}
    for it in json.loads(Path(datalist).read_text()).get("training") or []:
        for key in ("image", "label"):
            for rel in (it.get(key) if isinstance(it.get(key), list) else [it.get(key)]):
                if isinstance(rel, str) and rel not in out:
                    try:
                        st = (root / rel).stat()
                    except OSError:
                        continue
                    out[rel] = [int(st.st_size), int(st.st_mtime_ns)]
    return out


def stale_datastats(work: str | os.PathLike, datalist: str | os.PathLike,
                    dataroot: str | os.PathLike | None = None) -> str | None:
    """Why ``datastats.yaml`` of ``work`` no longer describes ``datalist``'s training items, else
    None (also when the work_dir predates the record: nothing to compare). The items are
    compared, then their files' size and time: an image rewritten in place (re-converted at
    another spacing) has other statistics."""
    import json

    record = Path(work) / DATASTATS_SOURCE
    try:
        data = json.loads(record.read_text())
        was = data.get("training_sha1")
    except (OSError, ValueError, AttributeError):
        return None
    if was and was != training_fingerprint(datalist):
        return (f"the training items of {datalist} changed since {Path(work) / DATASTATS} was written "
                f"({record} records those it was computed from)")
    if other := _other_statistics(Path(work) / DATASTATS, data.get("datastats_sha1"), datalist):
        return other
    if changed := rewritten_training_files(work, datalist, dataroot):
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        return (f"{len(changed)} training file(s) of {datalist} were rewritten since {Path(work) / DATASTATS} "
                f"was written ({shown}: other size or time)")
    return None


def _other_statistics(stats: Path, digest: str | None, datalist: str | os.PathLike) -> str | None:
    """Why ``stats`` is not the file the analysis of ``datalist`` wrote (another work_dir's, copied
    in, or edited): its SHA-1 differs from the one recorded, or, for records without one, its
    number of cases differs from the datalist's training items."""
    import json

    import yaml

    if not stats.is_file():
        return None
    if digest:
        if _file_sha1(stats) == digest:
            return None
        return (f"{stats} is not the file the analysis of {datalist} wrote (its SHA-1 differs from the one "
                f"{stats.parent / DATASTATS_SOURCE} records: copied from another work_dir, or edited?)")
    try:
        n_cases = (yaml.safe_load(stats.read_text()) or {}).get("stats_summary", {}).get("n_cases")
        n_items = len(json.loads(Path(datalist).read_text()).get("training") or [])
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return None
    if isinstance(n_cases, int) and n_cases != n_items:
        return f"{stats} describes {n_cases} case(s), but {datalist} has {n_items} training item(s)"
    return None


def rewritten_training_files(work: str | os.PathLike, datalist: str | os.PathLike,
                             dataroot: str | os.PathLike | None = None) -> list[str]:
    """Training files (as the datalist names them) whose size or time differ from those
    ``datastats_source.json`` records; empty when nothing changed or nothing is recorded."""
    import json

    try:
        files = json.loads((Path(work) / DATASTATS_SOURCE).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return []
    if not isinstance(files, dict) or not files:
        return []
    now = training_files(datalist, dataroot)
    return sorted(k for k, v in files.items() if now.get(k) != v)


def record_stats_digest(work: Path, stats: Path) -> None:
    """Add the SHA-1 of the statistics about to become ``datastats.yaml`` to their source record:
    a ``datastats.yaml`` copied from another work_dir (another data set) is then seen."""
    import json

    record = work / DATASTATS_SOURCE
    data = json.loads(record.read_text())
    atomic_write_json(record, {**data, "datastats_sha1": _file_sha1(stats)})


def _file_sha1(path: Path) -> str:
    import hashlib

    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
