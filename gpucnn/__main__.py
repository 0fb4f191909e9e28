"""``python -m gpucnn <command>``: the same as the ``gpucnn`` console script."""
import sys

from .commands import main

sys.exit(main())
