"""``python -m disyre``: the same as the ``disyre`` command."""

import sys

from disyre.cli import main

sys.exit(main())
