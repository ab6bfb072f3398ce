"""Writing a converter's outputs safely: temporary names, the completion marker, clear errors.

Every output file is written under a temporary name in its own folder
(``.tmp-<pid>-<name>``) and renamed into place, so a killed run never leaves a
half-written file under a real name. ``datalist.json`` is the completion marker: a
(re-)conversion takes it out of its place before writing anything (held, with its side files,
in ``.previous-datalist/``) and writes it last, after every image, label and the report; a
previous datalist that differs from the new one is then kept in ``replaced/datalist-<time>/``
(:func:`hold_previous_datalist`, :func:`settle_previous_datalist`). A failing write (full
disk, file too large, read-only folder, no permission) raises :class:`OutputError`, which
names the file; the CLIs print it as one line with what to do (:func:`os_error_message`).
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

__all__ = ["OutputError", "atomic_write", "atomic_write_json", "atomic_write_text", "clean_stale_temporaries",
           "hold_previous_datalist", "os_error_message", "settle_previous_datalist", "temporary_path"]

#: where a run holds the previous complete datalist (and its side files) while it writes a new one
HELD = ".previous-datalist"
DATALIST_FILES = ("datalist.json", "datalist_items.json", "conversion_report.json", "conversion_report.md")
#: where a datalist that did not validate goes: never the completion marker
INVALID_DATALIST = "datalist.invalid.json"

#: our temporaries: ``.tmp-<pid>-<name>`` (and ``.<name>.tmp-<pid>`` from earlier versions)
_TMP_RE = re.compile(r"^(?:\.tmp-(?P<pid>\d+)-.+|\..+\.tmp-(?P<old>\d+))$")


class OutputError(OSError):
    """Writing an output file failed; ``filename`` is that file (not its temporary name)."""


def temporary_path(path: Path) -> Path:
    """The temporary name ``path`` is written under before the rename.

    >>> temporary_path(Path("out/images/a.nii.gz")).name.startswith(".tmp-")
    True
    """
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` then rename ``tmp`` onto ``path``; the temporary never survives.

    Raises
    ------
    OutputError
        On any OSError while writing or renaming; its ``filename`` is ``path``.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # the folder itself is unwritable: nothing was left there either
            pass


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary name."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` via a temporary name."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: not ours to judge
        return True
    return True


def clean_stale_temporaries(folders: Iterable[Path]) -> list[Path]:
    """Remove temporaries a killed run left in ``folders`` (not recursive); return them.

    Only files named like our temporaries whose process is gone are removed: never a
    user's file, never the temporary of a run still going.
    """
    removed = []
    for folder in folders:
        if not Path(folder).is_dir():
            continue
        for entry in Path(folder).iterdir():
            m = _TMP_RE.match(entry.name)
            if not m or not entry.is_file() or _alive(int(m.group("pid") or m.group("old"))):
                continue
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def check_output_file(path: str | os.PathLike, flag: str = "--out", suffix: str = ".json",
                      inputs: Sequence[str | os.PathLike | None] = ()) -> Path:
    """``path`` as an output file named by ``flag``, refused early (``OSError`` naming it) when it
    is a folder, a file stands where one of its folders should be, or it does not end in
    ``suffix`` (the reports written beside it take its stem: ``--out scores.md`` or
    ``--out submission.zip`` would overwrite a report or an input).

    >>> check_output_file("/")
    Traceback (most recent call last):
    ...
    IsADirectoryError: [Errno 21] is a folder: --out needs a file name (e.g. /scores.json): '/'
    """
    out = Path(path)
    if out.is_dir():
        inside = any(g and (Path(g).resolve() == out.resolve() or Path(g).resolve() in out.resolve().parents)
                     for g in inputs)  # an input folder: suggest a name beside it, not in it
        example = out.resolve().parent / f"{out.name}_scores.json" if inside else out / "scores.json"
        raise IsADirectoryError(errno.EISDIR, f"is a folder: {flag} needs a file name (e.g. {example})", str(out))
    if suffix and out.suffix.lower() != suffix:
        raise OSError(errno.EINVAL, f"{flag} must name a {suffix} file (the .md and .csv reports go beside it "
                      f"with the same stem), e.g. {out.with_suffix(suffix)}; nothing was written", str(out))
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, f"{parent} is a file, not a folder: choose another {flag}",
                                         str(out))
            break
    resolved = out.resolve()
    for given in inputs:  # the truth or the submission: an input store is never written into
        if given and Path(given).resolve() in resolved.parents:
            raise OSError(errno.EINVAL, f"is inside the input {given}: reports are never written into an input "
                          f"store or folder; give {flag} elsewhere (e.g. {Path(given).resolve().parent / out.name})",
                          str(out))
    return out


def os_error_message(exc: OSError, folder_flag: str = "--output_dir", too_big_hint: str = "") -> str:
    """An OSError as a user reads it: what failed, on which file, and what to do.

    One convention for the converters and ``run_auto3dseg.py``; ``folder_flag`` names the flag
    that chooses the output folder, ``too_big_hint`` what else helps when a file is too large.

    >>> os_error_message(OSError(28, "No space left on device", "/o/images/a.nii.gz"))
    '/o/images/a.nii.gz: No space left on device. Free some space there (or choose another --output_dir) and run the same command again: finished work is kept'
    >>> os_error_message(FileExistsError(17, "File exists", "/etc/passwd"))
    '/etc/passwd: /etc/passwd is a file, not a folder: give a folder as --output_dir (or move that file away)'
    """
    where = exc.filename or "(unknown file)"
    what = exc.strerror or str(exc)
    again = "and run the same command again: finished work is kept"
    todo = {errno.ENOSPC: f"Free some space there (or choose another {folder_flag}) {again}",
            errno.EFBIG: f"The file is larger than this system or your limits allow (ulimit -f); raise the limit, "
                         f"{too_big_hint}or choose another {folder_flag}, {again}",
            errno.EROFS: f"The folder is read-only: choose a writable {folder_flag}",
            errno.EACCES: f"Check the permissions of that folder, or choose another {folder_flag}",
            errno.EPERM: f"Check the permissions of that folder, or choose another {folder_flag}",
            errno.EDQUOT: f"Your disk quota is exhausted: free some space {again}",
            errno.ENOENT: f"It is not there, or a folder cannot be made there: check the path (or choose another "
                          f"{folder_flag})"}
    if exc.errno in (errno.EEXIST, errno.ENOTDIR) and exc.filename and not Path(exc.filename).is_dir():
        # mkdir on a file (or below one): "File exists" reads as if an earlier output were in the way
        blocking = next((q for q in [Path(exc.filename), *Path(exc.filename).parents] if q.is_file()), None)
        if blocking is not None:
            return (f"{where}: {blocking} is a file, not a folder: give a folder as {folder_flag} (or move that "
                    "file away)")
    return f"{where}: {what}. {todo.get(exc.errno, 'Fix that file or folder and run the same command again')}"


def write_datalist_marker(out: Path, datalist: dict, validation: dict) -> Path:
    """Write ``datalist.json``, the completion marker, when the datalist validated; one that did
    not (every crop failed, say) goes to ``datalist.invalid.json`` to be read, so that no later
    step takes it for a finished conversion. Returns the file written.

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> write_datalist_marker(out, {"training": []}, {"ok": False}).name, (out / "datalist.json").exists()
    ('datalist.invalid.json', False)
    >>> write_datalist_marker(out, {"training": [1]}, {"ok": True}).name, (out / INVALID_DATALIST).exists()
    ('datalist.json', False)
    """
    if not validation.get("ok", True):
        atomic_write_json(out / INVALID_DATALIST, datalist)
        return out / INVALID_DATALIST
    (out / INVALID_DATALIST).unlink(missing_ok=True)
    atomic_write_json(out / "datalist.json", datalist)
    return out / "datalist.json"


def hold_previous_datalist(out: Path) -> None:
    """Take ``datalist.json`` (the completion marker) out of its place at the start of a run:
    it and copies of its side files go to ``out/.previous-datalist/``. A held datalist of a
    killed run is kept when there is no new one to hold."""
    import shutil

    marker, held = out / "datalist.json", out / HELD
    if not marker.is_file():
        return
    try:
        shutil.rmtree(held, ignore_errors=True)
        held.mkdir()
        for name in DATALIST_FILES[1:]:
            if (out / name).is_file():
                shutil.copy2(out / name, held / name)
        os.replace(marker, held / "datalist.json")
    except OSError as exc:
        raise OutputError(exc.errno, exc.strerror or str(exc), str(marker)) from exc


def settle_previous_datalist(out: Path, log: Callable[[str], Any] = print) -> Path | None:
    """After the new ``datalist.json`` is written: drop the held one when it is the same (a
    resumed run), else keep it in ``out/replaced/datalist-<time>/`` and say so; returns that folder.

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> _ = (out / "datalist.json").write_text('{"training": [1, 2]}')
    >>> hold_previous_datalist(out)
    >>> _ = (out / "datalist.json").write_text('{"training": [1]}')
    >>> dest = settle_previous_datalist(out, log=lambda m: None)
    >>> json.loads((dest / "datalist.json").read_text()), (out / HELD).exists()
    ({'training': [1, 2]}, False)
    """
    import shutil
    import time

    held = out / HELD
    if not (held / "datalist.json").is_file():
        shutil.rmtree(held, ignore_errors=True)
        return None

    from datalists.schema import _unique_keys

    def same(name: str) -> bool:  # a key given twice (a hand edit) is no copy of the new file
        try:
            return json.loads((held / name).read_text(), object_pairs_hook=_unique_keys) == json.loads(
                (out / name).read_text())
        except (OSError, ValueError):
            return not (held / name).exists() and not (out / name).exists()

    if same("datalist.json") and same("datalist_items.json"):
        shutil.rmtree(held, ignore_errors=True)
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest, n = out / "replaced" / f"datalist-{stamp}", 1
    while dest.exists():
        dest, n = out / "replaced" / f"datalist-{stamp}-{n}", n + 1
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(held, dest)
    log(f"note: the previous datalist.json of {out} ({_what_differs(dest, out)}) is kept in {dest}; a work_dir "
        "made from it says, when it next runs, what the change means for its results")
    return dest


def _what_differs(old: Path, new: Path) -> str:
    """How the datalist.json in ``old`` differs from the one in ``new``, in a few words.

    >>> import tempfile
    >>> a, b = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
    >>> _ = (a / "datalist.json").write_text('{"num_folds": 2, "training": [1, 2], "num_folds": 3}')
    >>> _ = (b / "datalist.json").write_text('{"num_folds": 2, "training": [1]}')
    >>> _what_differs(a, b)
    "key 'num_folds' given twice in the top level (values 2 and 3), a hand edit?"
    >>> _ = (a / "datalist.json").write_text('{"num_folds": 3, "training": [1, 2], "x": 1}')
    >>> _what_differs(a, b)
    'other values of num_folds, training (2 -> 1 items); key x only in the previous one'
    """
    from datalists.schema import RepeatedKey, _unique_keys

    try:
        before = json.loads((old / "datalist.json").read_text(), object_pairs_hook=_unique_keys)
        after = json.loads((new / "datalist.json").read_text())
    except RepeatedKey as exc:
        return str(exc).split(":")[0] + ", a hand edit?"
    except (OSError, ValueError) as exc:
        return f"it could not be read: {exc}"
    if not isinstance(before, dict) or not isinstance(after, dict):
        return "it is no JSON object"
    changed = [k for k in after if k in before and before[k] != after[k]]
    said = [f"{k} ({len(before[k])} -> {len(after[k])} items)" if isinstance(before[k], list) and
            isinstance(after[k], list) and len(before[k]) != len(after[k]) else k for k in changed]
    parts = [f"other values of {', '.join(said)}"] if said else []
    if gone := [k for k in before if k not in after]:
        parts.append(f"key {', '.join(gone)} only in the previous one")
    if new_keys := [k for k in after if k not in before]:
        parts.append(f"key {', '.join(new_keys)} only in the new one")
    return "; ".join(parts) or "other items in datalist_items.json"


def source_stamp(paths: Iterable[str | os.PathLike], listing: bool = False) -> list[Any]:
    """``[files, bytes, newest mtime_ns]`` of the files at ``paths`` (a folder counts every file
    under it; a missing path counts nothing): what a converted item's record keeps of its
    source, so that a source edited after the conversion is converted again, not resumed.

    ``listing`` adds a digest of every file's name, size and time: one file replaced by another
    of the same size and an older time (a backup restored with ``cp -p``) changes it too.

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = open(os.path.join(d, "a"), "w").write("xyz")
    >>> source_stamp([d])[:2]
    [1, 3]
    >>> len(source_stamp([d], listing=True))
    4
    """
    import hashlib

    n = size = newest = 0
    digest = hashlib.sha1()
    for p in paths:
        p = str(p)
        if os.path.isdir(p):
            files = (os.path.join(root, f) for root, _, names in sorted(os.walk(p)) for f in sorted(names))
        else:
            files = iter([p])
        for f in files:
            try:
                st = os.stat(f)
            except OSError:
                continue
            n, size, newest = n + 1, size + st.st_size, max(newest, st.st_mtime_ns)
            if listing:
                digest.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return [n, size, newest, digest.hexdigest()[:16]] if listing else [n, size, newest]
