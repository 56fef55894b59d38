"""Execute the teaching notebooks as the test suite does; store them executed.

``python -m tests.notebooks`` re-runs every notebook in ``notebooks/`` top to bottom in a fresh
kernel and writes it back with its outputs, so that a code host shows them; name notebooks
(``python -m tests.notebooks notebooks/01_gram_is_mmd.ipynb``) to refresh only those. A notebook
that raises is not written. The test suite (``tests/test_notebooks.py``) runs the same
:func:`execute` and checks the stored outputs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from mmdstyle.features.files import atomic_path
from tests import REPOSITORY
from tests.compile_flags import TEST_COMPILE_FLAGS

NOTEBOOK_DIRECTORY = REPOSITORY / "notebooks"
NOTEBOOKS = tuple(sorted(NOTEBOOK_DIRECTORY.glob("*.ipynb")))
#: seconds any one cell may take; a whole notebook is meant to take under two minutes on a laptop
CELL_TIMEOUT = 600
KERNEL = "python3"


def execute(path: str | Path, *, compile_flags: Sequence[str] = ()) -> nbformat.NotebookNode:
    """Run the notebook at ``path`` in a new kernel, in its own directory; return it with outputs.

    The kernel compiles with XLA's defaults, as a reader's does (:func:`reader_environment`),
    but for those of this process's quick-compile flags (tests/compile_flags.py) named in
    ``compile_flags``: for the notebooks whose time goes to compiling many programs.

    Raises ``nbclient.exceptions.CellExecutionError`` (with the cell and its traceback) at the
    first cell that fails.
    """
    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name=KERNEL,
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=False,  # no timestamps in the stored file: diffs show only what changed
    )
    client.execute(env=reader_environment(keep=compile_flags))
    return notebook


def reader_environment(keep: Sequence[str] = ()) -> dict[str, str]:
    """This process's environment without the test suite's compile flags, but for those in ``keep``.

    A notebook runs as a reader's does, with XLA's defaults: the test suite compiles its own
    programs with flags that compile quickly (tests/compile_flags.py) but would slow the
    notebooks' long runs.
    """
    environment = dict(os.environ)
    names = {flag.split("=")[0] for flag in TEST_COMPILE_FLAGS if flag not in keep}
    kept = [flag for flag in environment.get("XLA_FLAGS", "").split() if flag.split("=")[0] not in names]
    if kept:
        environment["XLA_FLAGS"] = " ".join(kept)
    else:
        environment.pop("XLA_FLAGS", None)
    return environment


def store(path: str | Path) -> float:
    """Execute the notebook and write it back in place with its outputs; returns the seconds taken."""
    start = time.perf_counter()
    notebook = execute(path)
    nbformat.validate(notebook)
    with atomic_path(path, suffix=".ipynb") as temporary:
        nbformat.write(notebook, temporary)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.notebooks", description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook in notebooks/")
    arguments = parser.parse_args(argv)
    paths = arguments.notebooks or list(NOTEBOOKS)
    for path in paths:  # every name is checked before the first notebook runs
        if path.suffix != ".ipynb" or not path.is_file():
            parser.error(
                f"{path} is not a notebook file: name .ipynb files, e.g. notebooks/01_gram_is_mmd.ipynb."
            )
    for path in paths:
        try:
            seconds = store(path)
        except CellExecutionError as error:
            print(
                f"{path.name}: a cell failed, so the stored notebook is unchanged.\n{error}", file=sys.stderr
            )
            return 1
        print(f"{path.name}: {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
