import sys

from mmdstyle.cli import main

sys.exit(main())
