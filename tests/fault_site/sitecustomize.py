"""Loaded by every Python started by ``tests/faults.py::run_faulty`` (its folder is put first on
PYTHONPATH), children included: arms the fault named in the environment, else does nothing."""

import fnmatch
import os
import resource
import signal

_pattern = os.environ.get("FAULT_KILL_AT")
_when = os.environ.get("FAULT_WHEN", "before")
_nth = int(os.environ.get("FAULT_NTH", "1"))
_fsize = os.environ.get("FAULT_FSIZE")

if _fsize:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(_fsize), int(_fsize)))

if _pattern:
    _seen = [0]

    def _wrap(real):
        def renamer(src, dst, *args, **kwargs):
            hit = fnmatch.fnmatch(os.path.basename(os.fspath(dst)), _pattern)
            if hit:
                _seen[0] += 1
                hit = _seen[0] == _nth
            if hit and _when == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            out = real(src, dst, *args, **kwargs)
            if hit:
                os.kill(os.getpid(), signal.SIGKILL)
            return out

        return renamer

    os.replace = _wrap(os.replace)
    os.rename = _wrap(os.rename)
