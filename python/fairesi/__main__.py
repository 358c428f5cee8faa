"""``python -m fairesi`` runs the command line."""

import sys

from fairesi.cli import main

sys.exit(main())
