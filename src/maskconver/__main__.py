"""``python -m maskconver`` runs the command line."""

import sys

from maskconver.cli import main

sys.exit(main())
