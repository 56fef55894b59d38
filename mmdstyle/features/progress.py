"""Progress bars: a widget in a notebook that has ipywidgets, text everywhere else.

``tqdm.auto`` makes that choice, but in a notebook without ipywidgets (not a dependency of
mmdstyle) it also warns, on the first import, that IProgress is missing, and that warning would
sit in every notebook's output. Importing it here, with that one warning silenced, keeps the
choice and drops the noise.
"""

from __future__ import annotations

import warnings
from typing import Any


def progress_bar(**options: Any) -> Any:
    """``tqdm.auto.tqdm(**options)``: a notebook widget where ipywidgets is installed, else text."""
    from tqdm import TqdmWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found", category=TqdmWarning)
        from tqdm.auto import tqdm
    return tqdm(**options)
