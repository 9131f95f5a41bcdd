"""``python -m adain.train``: the same as ``adain train``."""

import sys

from .loop import main

sys.exit(main())
