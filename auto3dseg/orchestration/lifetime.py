"""Child processes that die with the run that launched them.

``kill -9`` of ``run_auto3dseg.py`` gives it no chance to stop the training it launched; that
training would run on as an orphan, holding the bundle's lock. On Linux the kernel can signal a
child when its parent dies (``prctl(PR_SET_PDEATHSIG)``); the setting survives ``exec``, so
:func:`launcher_command` wraps a command in this file, run as a script: it asks for SIGTERM on
the parent's death, checks the parent is still there (it may have died before), and ``exec``\\ s
the command in place. SIGTERM (not SIGKILL) so that torchrun, when it is the child, stops its
workers (its handler forwards the signal to them) before it ends.

Run as ``python lifetime.py <parent pid> -- <command ...>``; it imports only the standard library.
"""

from __future__ import annotations

import os
import signal
import sys

__all__ = ["PR_SET_PDEATHSIG", "die_with_torchrun", "launcher_command", "set_parent_death_signal"]

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies; False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_torchrun() -> None:
    """In a torchrun worker: get SIGTERM when torchrun dies, even by ``kill -9`` (which lets it
    stop no worker), so that no rank trains on without the run that holds the bundle's lock.
    Exits at once when torchrun is gone already. Does nothing outside torchrun."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or not set_parent_death_signal(signal.SIGTERM):
        return
    if os.getppid() == 1:  # torchrun died before the signal was asked for: this worker is an orphan
        print("note: torchrun, which started this worker, is gone; stopping", file=sys.stderr)
        sys.exit(143)


def launcher_command(cmd: list[str], parent: int | None = None) -> list[str]:
    """``cmd`` run through this launcher, so that it gets SIGTERM when ``parent`` (default: this
    process) dies; ``cmd`` itself off Linux."""
    if not sys.platform.startswith("linux"):
        return list(cmd)
    return [sys.executable, os.path.abspath(__file__), str(parent or os.getpid()), "--", *cmd]


def _main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python lifetime.py <parent pid> -- <command ...>", file=sys.stderr)
        return 2
    parent = int(argv[0])
    cmd = argv[2:]
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the signal was asked for
        print(f"note: the process that launched this one (pid {parent}) is gone; not starting {cmd[0]}",
              file=sys.stderr)
        return 143
    os.execvp(cmd[0], cmd)
    return 127  # pragma: no cover - execvp does not return


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
