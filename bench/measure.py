"""Measuring one command: wall time, CPU time, peak memory of its whole process tree, bytes written.

A command runs as a child of this (light) process. While it runs, every process of its tree is
read every ``interval`` seconds from ``/proc``: the sum of their resident memory gives the peak
of the tree (loader workers, pool workers and torchrun ranks included; a spike shorter than the
interval can be missed), and each process's own ``VmHWM`` (its peak, exact) gives the largest
single process. CPU time is the children's user + system time (``RUSAGE_CHILDREN``), so
``cpu_s / wall_s`` says how many cores the step kept busy.

    >>> r = run_measured([sys.executable, "-c", "pass"])  # doctest: +SKIP
    >>> r.returncode, r.wall_s > 0  # doctest: +SKIP
    (0, True)
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Measured", "dir_bytes", "floor_io", "run_measured"]


@dataclass
class Measured:
    returncode: int
    wall_s: float
    cpu_s: float
    peak_tree_mib: float
    peak_process_mib: float
    processes: int
    log: str

    def as_dict(self) -> dict:
        return asdict(self)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += _children(p)
    return out


def _status_kib(pid: int, keys: Sequence[str]) -> dict[str, int]:
    found = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                name, _, rest = line.partition(":")
                if name in keys:
                    found[name] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return found


def run_measured(cmd: Sequence[str], *, cwd: str | os.PathLike | None = None, env: dict | None = None,
                 log_path: str | os.PathLike | None = None, interval: float = 0.2,
                 timeout: float | None = None) -> Measured:
    """Run ``cmd``; its output goes to ``log_path`` (or is kept in ``Measured.log``)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = open(log_path, "w") if log_path else subprocess.PIPE
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), cwd=cwd, env={**os.environ, **(env or {})}, stdout=out,
                            stderr=subprocess.STDOUT, text=True)
    peak_tree, peak_proc, seen = 0, 0, set()
    hwm: dict[int, int] = {}
    while proc.poll() is None:
        total = 0
        for pid in _tree(proc.pid):
            st = _status_kib(pid, ("VmRSS", "VmHWM"))
            total += st.get("VmRSS", 0)
            if "VmHWM" in st:
                hwm[pid] = max(hwm.get(pid, 0), st["VmHWM"])
            seen.add(pid)
        peak_tree = max(peak_tree, total)
        peak_proc = max([peak_proc, *hwm.values()])
        if timeout is not None and time.perf_counter() - t0 > timeout:
            proc.kill()
        time.sleep(interval)
    wall = time.perf_counter() - t0
    text = ""
    if log_path:
        out.close()  # type: ignore[union-attr]
        text = Path(log_path).read_text(errors="replace")[-4000:]
    else:
        text = (proc.stdout.read() if proc.stdout else "")[-4000:]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # the largest child's own peak, as the kernel kept it (exact, unlike the sampled tree sum)
    peak_proc = max(peak_proc, int(after.ru_maxrss) if after.ru_maxrss > before.ru_maxrss else 0)
    return Measured(proc.returncode, wall, cpu, peak_tree / 1024, peak_proc / 1024, len(seen), text)


def dir_bytes(*paths: str | os.PathLike) -> int:
    """Bytes of the files under ``paths`` (files or folders; missing ones count 0)."""
    total = 0
    for p in map(Path, paths):
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            for root, _, files in os.walk(p):
                for f in files:
                    try:
                        total += os.stat(os.path.join(root, f)).st_size
                    except OSError:
                        pass
    return total


def floor_io(inputs: Sequence[str | os.PathLike], out_bytes: int, scratch: str | os.PathLike,
             max_write: int = 2 << 30) -> float:
    """Seconds to read every file under ``inputs`` and write ``out_bytes`` to one file (fsync'd):
    the I/O a step cannot avoid, measured on the same disk and page cache as the step. Writes
    over ``max_write`` are timed on ``max_write`` bytes and scaled."""
    t0 = time.perf_counter()
    buf = bytearray(8 << 20)
    for p in map(Path, inputs):
        files = [p] if p.is_file() else [Path(r) / f for r, _, fs in os.walk(p) for f in fs] if p.is_dir() else []
        for f in files:
            try:
                with open(f, "rb", buffering=0) as fh:
                    while fh.readinto(buf):
                        pass
            except OSError:
                pass
    target = Path(scratch) / f".floor-{os.getpid()}"
    block = bytes(8 << 20)
    scale = max(1.0, out_bytes / max_write)  # a 44 GB map is timed on 2 GB: the disk may not hold two
    reading = time.perf_counter() - t0
    t1 = time.perf_counter()
    with open(target, "wb") as fh:
        left = int(min(out_bytes, max_write))
        while left > 0:
            n = min(left, len(block))
            fh.write(block[:n])
            left -= n
        fh.flush()
        os.fsync(fh.fileno())
    target.unlink()
    return reading + (time.perf_counter() - t1) * scale


if __name__ == "__main__":  # a smoke run: python bench/measure.py CMD...
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print("usage: python bench/measure.py CMD [ARG ...]\n\nRun CMD and print its wall time, CPU time, peak memory "
              "of its process tree and of its largest process\n(the bench scripts use run_measured() from here).",
              file=sys.stdout if len(sys.argv) > 1 else sys.stderr)
        sys.exit(0 if len(sys.argv) > 1 else 2)
    command = sys.argv[2:] if sys.argv[1] == "--" else sys.argv[1:]
    if not command:
        print("error: no command to measure after --", file=sys.stderr)
        sys.exit(2)
    try:
        measured = run_measured(command)
    except FileNotFoundError:
        print(f"error: command not found: {command[0] if command else '(none)'}", file=sys.stderr)
        sys.exit(127)
    except OSError as exc:  # a folder, a file that is not executable
        why = "a folder, not a command" if os.path.isdir(command[0]) else exc.strerror or exc
        print(f"error: cannot run {command[0]}: {why}", file=sys.stderr)
        sys.exit(126)
    print(measured)
    sys.exit(measured.returncode if 0 <= measured.returncode < 256 else 1)  # a failed command is no success
