"""``python -m converters.synthetic``: see :func:`converters.synthetic.generate.main`."""

import sys

from .generate import main

sys.exit(main())
