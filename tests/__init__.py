"""mmdstyle's tests (see tests/conftest.py for the set-up every test shares)."""

from pathlib import Path

#: The repository's root: the package, the README, the notebooks.
REPOSITORY = Path(__file__).resolve().parent.parent
