"""``python -m pruneviz``."""

import sys

from .cli import main

sys.exit(main())
