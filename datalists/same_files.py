"""Which of a datalist's files are one image: one path spelt two ways, one file under two names
(a symlink or a hard link), or two files with the same bytes (a copy).

A crop listed twice leaks between folds whichever of these it is, so the duplicate check compares
images by :func:`file_identity` and, among files of equal size, by :func:`same_content`. The cost
is one ``stat`` per file; only files whose size another file shares are read.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

#: Bytes read at a time, and the head compared before a whole file is hashed.
_CHUNK = 1 << 20


def file_identity(path: str) -> tuple[str, Any]:
    """One key per file, whatever name reaches it.

    Parameters
    ----------
    path : str
        A file path (absolute, or relative to the working directory).

    Returns
    -------
    tuple
        ``("inode", (st_dev, st_ino))`` for a file that exists, so a symlink or a hard link to
        it gives the same key; ``("path", realpath)`` for one that does not.
    """
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return ("path", real)
    return ("inode", (st.st_dev, st.st_ino))


def _digest(path: str, limit: int | None = None) -> str | None:
    """BLAKE2 digest of a file's first ``limit`` bytes (all of it when None), or None if unreadable."""
    h = hashlib.blake2b(digest_size=20)
    left = limit
    try:
        with open(path, "rb") as f:
            while left is None or left > 0:
                chunk = f.read(_CHUNK if left is None else min(_CHUNK, left))
                if not chunk:
                    break
                h.update(chunk)
                if left is not None:
                    left -= len(chunk)
    except OSError:
        return None
    return h.hexdigest()


def _groups(paths: Iterable[str], key: Callable[[str], Any]) -> list[list[str]]:
    """Paths grouped by ``key(path)``; groups of one and paths whose key is None are left out."""
    by_key: dict[Any, list[str]] = defaultdict(list)
    for p in paths:
        k = key(p)
        if k is not None:
            by_key[k].append(p)
    return [g for g in by_key.values() if len(g) > 1]


def _size(path: str) -> int | None:
    """A file's size in bytes, or None if it cannot be stat'ed."""
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def same_content(paths: Iterable[str]) -> dict[str, str]:
    """Find files whose bytes are the same.

    Files are grouped by size; only a group of 2 or more has its first MiB hashed, and only files
    whose heads agree are hashed whole. Distinct files of distinct sizes cost one ``stat`` each.

    Parameters
    ----------
    paths : iterable of str
        Distinct files (one name per file: hard links of one file would match themselves).

    Returns
    -------
    dict
        Path -> digest of its content, for each path whose content another path shares; paths
        with unique content are left out.
    """
    out: dict[str, str] = {}
    for same_size in _groups(paths, _size):
        for same_head in _groups(same_size, lambda p: _digest(p, _CHUNK)):
            whole = {p: _digest(p) for p in same_head}
            for same in _groups(same_head, whole.get):
                out.update((p, str(whole[p])) for p in same)
    return out
