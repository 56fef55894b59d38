"""Sample images bundled with the package, so that demos and tests run offline.

``load_sample("chelsea")`` or, wherever an image path is accepted on the command line,
``sample:chelsea``. Sources and licences (CC0 or public domain): ``mmdstyle/data/ATTRIBUTION.md``.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

import numpy as np

from mmdstyle.style.images import load_image

#: name -> (file, what it shows, suggested use)
SAMPLES: dict[str, tuple[str, str, str]] = {
    "chelsea": ("chelsea.jpg", "Chelsea the cat (CC0)", "content"),
    "coffee": ("coffee.jpg", "a cup of coffee (CC0)", "content"),
    "astronaut": ("astronaut.jpg", "astronaut Eileen Collins (NASA, public domain)", "content"),
    "hubble": ("hubble.jpg", "Hubble eXtreme Deep Field (NASA, public domain)", "style"),
    "gravel": ("gravel.jpg", "gravel texture (CC0)", "texture"),
    "brick": ("brick.jpg", "brick wall texture (CC0)", "texture"),
}
PREFIX = "sample:"


def sample_path(name: str) -> Path:
    """The file of a bundled sample image."""
    if name not in SAMPLES:
        raise ValueError(f"no sample image {name!r}; the samples are {', '.join(SAMPLES)}.")
    return Path(str(importlib.resources.files("mmdstyle") / "data" / SAMPLES[name][0]))


def load_sample(name: str, *, size: int | None = None) -> np.ndarray:
    """A bundled sample image as float32 RGB (H, W, 3) in [0, 1]."""
    return load_image(sample_path(name), size=size)


def resolve_image(argument: str | os.PathLike) -> Path:
    """A command-line image argument as a file: ``sample:NAME`` names a bundled image."""
    text = os.fspath(argument)
    return sample_path(text.removeprefix(PREFIX)) if text.startswith(PREFIX) else Path(text)
