"""``python -m adain.train``: the same as ``adain train``."""

import sys

from .cli import main

sys.exit(main())
