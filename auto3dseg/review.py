"""Moved to :mod:`auto3dseg.analysis.review`; kept so that the old import path still works."""

from auto3dseg.analysis.review import *  # noqa: F401,F403
from auto3dseg.analysis.review import __all__  # noqa: F401
