"""``python -m mmdstyle``: runs the command-line interface, :func:`mmdstyle.cli.main`."""

import sys

from mmdstyle.cli import main

sys.exit(main())
