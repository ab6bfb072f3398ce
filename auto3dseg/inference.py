"""Moved to :mod:`auto3dseg.engine.inference`. Kept for one release: bundles generated before the move import
this path (their ``scripts/*.py``)."""

from auto3dseg.engine.inference import *  # noqa: F401,F403
from auto3dseg.engine.inference import __all__  # noqa: F401
