"""Notes printed while a progress bar is drawn start a line of their own."""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["bar_safe"]


def bar_safe(log: Callable[..., object]) -> Callable[..., object]:
    """``log``, or for ``print`` a writer that clears tqdm's bar first.

    The bar is drawn on stderr with carriage returns; a note printed to stdout meanwhile would
    share its line in a terminal, or in a log of both streams (``2>&1``, SLURM). Any other
    ``log`` (a list's ``append``, a logger) is returned as it is.

    Examples
    --------
    >>> said = []
    >>> keep = said.append
    >>> bar_safe(keep) is keep
    True
    >>> bar_safe(print)("note: kept")  # doctest: +NORMALIZE_WHITESPACE
    note: kept
    """
    if log is not print:
        return log
    from tqdm import tqdm

    # not a terminal (a log file): the bar's text is not cleared there, and a note after it on one line
    # would be hidden by a `grep -v` of the bar
    lead = "" if sys.stderr.isatty() else "\n"
    return lambda message="", *_, **__: tqdm.write(lead + str(message))
