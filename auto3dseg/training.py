"""Moved to :mod:`auto3dseg.engine.training`. Kept for one release: bundles generated before the move import
this path (their ``scripts/*.py``)."""

from auto3dseg.engine.training import *  # noqa: F401,F403
from auto3dseg.engine.training import __all__  # noqa: F401
