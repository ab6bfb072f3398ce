"""Moved to :mod:`auto3dseg.bundles.bundle_algo`. Kept for one release: bundles generated before the move import
this path (their ``scripts/*.py``)."""

from auto3dseg.bundles.bundle_algo import *  # noqa: F401,F403
from auto3dseg.bundles.bundle_algo import __all__  # noqa: F401
