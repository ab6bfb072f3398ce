"""What the converters' command lines share: one rule for errors and exit codes.

* a user mistake (bad flags, a missing or malformed input, settings that contradict an earlier
  run): one ``error:`` line, exit 2;
* every item failed before anything could be converted (:class:`EveryItemFailed`): each named,
  exit 1, as when some items fail;
* a worker killed (the out-of-memory killer): the message of
  :class:`~converters.pool.WorkerPoolBroken`, no datalist written, exit 1;
* a failing write (full disk, read-only folder, permissions): the file and what to do, exit 2;
* Ctrl-C: one line saying that finished items are kept and how to go on, exit 130.

Items that fail on their own are not errors of the run: they are reported in the conversion
report and the run goes on.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from converters.outputs import os_error_message
from converters.pool import WorkerPoolBroken

__all__ = ["EveryItemFailed", "interrupted_message", "path_flag_problems", "print_outputs", "run_reported"]


class EveryItemFailed(ValueError):
    """No item could be read, so nothing was converted: a failure of the items (exit 1), not of the flags."""


def interrupted_message(argv: list[str] | None = None) -> str:
    """What to say on Ctrl-C: finished work is kept, and how to go on (``--force`` would start over).

    >>> "again without --force" in interrupted_message(["--mode", "train", "--force"])
    True
    """
    argv = sys.argv[1:] if argv is None else argv
    if "--force" in argv:
        return ("interrupted: finished work is kept; run the same command again without --force to go on "
                "(with --force it starts over)")
    return "interrupted: finished work is kept; run the same command again to go on"


def path_flag_problems(args: Any, files: Sequence[str] = (), folders: Sequence[str] = (),
                       others: Sequence[str] = ()) -> list[str]:
    """Path flags that are empty (an unset shell variable: the current folder would be used), a
    folder where a file is read (``files``), or a file where a folder goes (``folders``); one line
    each. ``others`` are checked for emptiness only.

    >>> import argparse
    >>> path_flag_problems(argparse.Namespace(output_dir=" ", datasplit=None), ["datasplit"], ["output_dir"])
    ['--output_dir is empty (an unset shell variable?): give a path']
    """
    out = []
    if getattr(args, "dry_run", False) and "output_dir" in folders and (made := _unmakeable(args.output_dir)):
        out.append(made)  # the run would fail there: a plan that exits 0 would say otherwise
    for name in [*files, *folders, *others]:
        value = getattr(args, name, None)
        if isinstance(value, str) and not value.strip():
            out.append(f"--{name} is empty (an unset shell variable?): give a path")
        elif value and name in files and Path(value).is_dir():
            out.append(f"--{name} {value} is a folder: give the file")
        elif value and name in folders and Path(value).is_file():
            out.append(f"--{name} {value} is a file, not a folder: give a folder (or move that file away)")
    return out


def _unmakeable(output_dir: str | None) -> str | None:
    """Why ``--output_dir`` could not be made (tried with a temporary folder in its nearest existing
    parent, removed at once), or None. A dry run writes nothing, yet must fail where the run would."""
    import tempfile

    if not output_dir or not str(output_dir).strip():
        return None
    path = Path(output_dir).absolute()
    parent = next((p for p in [path, *path.parents] if p.exists()), None)
    if parent is None or parent == path:
        return None  # it exists: path_flag_problems names a file, and a folder is fine
    if not parent.is_dir():
        return f"--output_dir {output_dir}: {parent} is a file, so no folder can be made under it"
    try:
        Path(tempfile.mkdtemp(prefix=".dry-run-", dir=parent)).rmdir()
    except OSError as exc:
        return f"--output_dir {output_dir}: no folder can be made in {parent} ({exc.strerror}): choose another"
    return None


def run_reported(convert: Callable[[], Any], user_errors: tuple[type[BaseException], ...],
                 too_big_hint: str = "") -> tuple[Any, int | None]:
    """Call ``convert()``; return ``(report, None)``, or ``(None, exit code)`` after printing one line.

    Examples
    --------
    >>> run_reported(lambda: {"ok": 1}, (ValueError,))
    ({'ok': 1}, None)
    >>> def bad():
    ...     raise KeyError("crop 'x': no label array")
    >>> run_reported(bad, (KeyError,), "")[1]  # prints "error: crop 'x': no label array" to stderr
    2
    """
    try:
        return convert(), None
    except EveryItemFailed as exc:  # before user_errors: it is a ValueError too
        print(f"error: {exc}", file=sys.stderr)
        return None, 1
    except user_errors as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # a KeyError's str() adds quotes
        if isinstance(exc, OSError) and exc.errno and exc.filename:  # the system's (a folder not makeable), not ours
            msg = os_error_message(exc, too_big_hint=too_big_hint)
        print(f"error: {msg}", file=sys.stderr)
        return None, 2
    except WorkerPoolBroken as exc:  # the run is incomplete: no datalist, and what to do
        print(f"error: {exc}", file=sys.stderr)
        return None, 1
    except OSError as exc:  # a full disk, a read-only folder, a permission: where, and what to do
        print(f"error: {os_error_message(exc, too_big_hint=too_big_hint)}", file=sys.stderr)
        return None, 2
    except KeyboardInterrupt:  # Ctrl-C: no datalist is written before every item is done
        print(f"\n{interrupted_message()}", file=sys.stderr)
        return None, 130


def print_outputs(report: dict, out: Path) -> int:
    """Print the datalist's validation notes and where the datalist and report are; 1 when the
    datalist did not validate (its problems on stderr), else 0."""
    validation = report["datalist_validation"]
    for warning in validation.get("summary", {}).get("warnings", []):
        print(f"  note: {warning}")
    if validation.get("ok", True):
        print(f"Datalist: {out / 'datalist.json'}")
    print(f"Report:   {out / 'conversion_report.md'} (and .json)")
    if not validation.get("ok", True):
        print("The datalist did not validate: " + "; ".join(validation["problems"]), file=sys.stderr)
        nothing = not report.get("summary", {}).get("training_items", 1)
        print(f"No datalist.json was written (no step would take it as finished); what it would hold is in "
              f"{out / 'datalist.invalid.json'}"
              + (". Nothing was converted for training: fix what the report says of each crop or image above "
                 "and run the same command again" if nothing else ""), file=sys.stderr)
        return 1
    return 0
