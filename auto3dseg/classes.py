"""Moved to :mod:`datalists.cellmap_classes` (the class table is part of the datalist contract);
kept so that code and bundles written against the old path still import."""

from datalists.cellmap_classes import *  # noqa: F401,F403
from datalists.cellmap_classes import __all__  # noqa: F401
