"""``python -m converters.cellmap.synthetic``: see :func:`converters.cellmap.synthetic.generate.main`."""

import sys

from .generate import main

sys.exit(main())
