"""A check that a figure file holds a real picture, not an empty canvas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def assert_nontrivial_png(path: str | Path, *, min_side: int = 200) -> np.ndarray:
    """The file is a PNG of at least ``min_side`` pixels a side with varied content; returns its pixels."""
    path = Path(path)
    assert path.is_file(), f"{path} was not written"
    with Image.open(path) as image:
        assert image.format == "PNG", f"{path} is {image.format}, not PNG"
        pixels = np.asarray(image.convert("RGB"), np.float64)
    assert min(pixels.shape[:2]) >= min_side, f"{path} is only {pixels.shape[1]} x {pixels.shape[0]}"
    assert pixels.std() > 10, f"{path} is nearly uniform"
    colours = np.unique(pixels.reshape(-1, 3).astype(np.uint8), axis=0)
    assert len(colours) > 50, f"{path} has only {len(colours)} colours: axes alone, no data?"
    return pixels
