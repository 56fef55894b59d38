"""Two collections of images compared layer by layer: every image of two folders, on all devices.

Each folder's images go through the extractor in batches; of each image's feature map a few
random positions are kept per layer (seeded per image), so memory holds the kept positions, not
the images. The two sides' positions are then tested per layer as :func:`layer_two_sample_tests`
does, with Holm's correction, split over the visible devices (:func:`mmdstyle.mmd2_test`'s
``mesh``). For many positions, a random-feature kernel spec (``gaussian(sigma=median)@rff(1024)``)
computes every relabelling from one pass over the samples.
"""

from __future__ import annotations

import functools
import itertools
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from mmdstyle._checks import check_integer
from mmdstyle.analysis.layer_tests import LayerTestReport, layer_two_sample_tests
from mmdstyle.features.layers import extract_batch_samples, resolve_layers, subsample
from mmdstyle.features.registry import extractor_or_default
from mmdstyle.style.images import load_image, resize_cover

__all__ = ["collect_folder_samples", "folder_two_sample_tests", "image_files"]


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The folder's files, sorted (not its subfolders or hidden files); refused if there are none."""
    path = Path(folder)
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is not a folder; pass two folders of images (or two image files).")
    files = sorted(item for item in path.iterdir() if item.is_file() and not item.name.startswith("."))
    if not files:
        raise ValueError(f"folder {str(path)!r} holds no files; put the images to test in it.")
    return files


def _readable_images(
    files: Sequence[Path], size: int, skip_unreadable: bool, on_skip: Callable[[Path, str], None]
) -> Iterator[tuple[Path, np.ndarray]]:
    """Each readable file's image, resized to cover size x size and centre-cropped, one at a time."""
    for path in files:
        try:
            image = load_image(path)
        except ValueError as error:
            if not skip_unreadable:
                raise ValueError(
                    f"{error} To skip such files, pass skip_unreadable=True (--unreadable skip)."
                ) from error
            on_skip(path, str(error))
            continue
        yield path, resize_cover(image, (size, size))


def _warn_skipped(path: Path, reason: str) -> None:
    warnings.warn(f"skipped {reason}", UserWarning, stacklevel=4)  # the reason names the file


def collect_folder_samples(
    folder: str | os.PathLike,
    *,
    extractor: Any,
    layers: Sequence[str],
    size: int = 128,
    positions_per_image: int = 128,
    batch_size: int = 8,
    seed: int = 0,
    skip_unreadable: bool = True,
    on_skip: Callable[[Path, str], None] | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> tuple[dict[str, np.ndarray], int]:
    """Random positions of every image of a folder, per layer, read in batches; and the image count.

    Each image is resized to cover ``size`` x ``size`` and centre-cropped (one compiled extractor
    for every image), ``batch_size`` images at a time go through the extractor (split over
    ``devices``), and of each image's map ``positions_per_image`` positions are kept, drawn from
    ``numpy.random.default_rng((seed, index))`` for the image's index among the readable ones:
    what stays in memory is the kept positions, one batch of images and its maps at a time.

    Raises:
        ValueError: not a folder, no files, a file that is not a readable image while
            ``skip_unreadable`` is False, or no readable image at all.
    """
    check_integer("positions_per_image", positions_per_image, minimum=1)
    check_integer("batch_size", batch_size, minimum=1)
    files = image_files(folder)
    images = _readable_images(files, size, skip_unreadable, _warn_skipped if on_skip is None else on_skip)
    kept: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    count = 0
    while batch := [image for _, image in itertools.islice(images, batch_size)]:
        maps = extract_batch_samples(extractor, np.stack(batch), layers, devices)
        for offset in range(len(batch)):
            rng = np.random.default_rng((seed, count + offset))
            for layer in layers:
                kept[layer].append(subsample(maps[layer][offset], positions_per_image, rng))
        count += len(batch)
    if count == 0:
        raise ValueError(
            f"folder {str(folder)!r} holds no readable image ({len(files)} file(s) tried); use PNG, JPEG, "
            "TIFF, WebP or BMP files."
        )
    return {layer: np.concatenate(parts) for layer, parts in kept.items()}, count


def folder_two_sample_tests(
    folder_a: str | os.PathLike,
    folder_b: str | os.PathLike,
    *,
    extractor: Any = None,
    size: int = 128,
    layers: Sequence[str] | None = None,
    positions_per_image: int = 128,
    batch_size: int = 8,
    skip_unreadable: bool = True,
    on_skip: Callable[[Path, str], None] | None = None,
    devices: Sequence[jax.Device] | None = None,
    seed: int = 0,
    **options: Any,
) -> LayerTestReport:
    """:func:`layer_two_sample_tests` on two collections: every image of two folders, on all devices.

    Args:
        folder_a: a folder of images (its files, sorted; not its subfolders).
        folder_b: the folder compared with it.
        extractor: any feature extractor; ``None``: the default one.
        size: each image is resized to cover ``size`` x ``size`` pixels and centre-cropped.
        layers: default: the extractor's style layers.
        positions_per_image: random positions kept per image and layer; a side's sample is all
            its images' positions (``max_samples`` is None).
        batch_size: images per run of the extractor.
        skip_unreadable: skip a file that is not a readable image, with a warning naming it
            (``on_skip(path, reason)`` instead, if given), or stop with an error.
        on_skip: called for each skipped file instead of the warning; the reason names the file.
        devices: the devices to extract and test on (default: all visible ones); with several,
            each batch of images and each layer's samples are split over them. For many
            positions, test with a random-feature kernel spec (``...@rff(1024)``): every
            relabelling for one pass over the samples.
        seed: seeds the positions and the permutations.
        options: passed on (kernel, num_permutations, estimator, alpha).

    Raises:
        ValueError: a folder that is not one, holds no files or no readable image; bad options.
    """
    extractor = extractor_or_default(extractor)
    layers = resolve_layers(extractor, layers)
    devices = list(jax.devices() if devices is None else devices)
    collect = functools.partial(
        collect_folder_samples,
        extractor=extractor,
        layers=layers,
        size=size,
        positions_per_image=positions_per_image,
        batch_size=batch_size,
        skip_unreadable=skip_unreadable,
        on_skip=on_skip,
        devices=devices,
    )
    for folder in (folder_a, folder_b):  # both folders checked before either is read
        image_files(folder)
    a, count_a = collect(folder_a, seed=2 * seed)
    b, count_b = collect(folder_b, seed=2 * seed + 1)
    mesh = jax.sharding.Mesh(devices, ("samples",)) if len(devices) > 1 else None
    source = f"{folder_a} ({count_a} images) vs {folder_b} ({count_b} images)"
    return layer_two_sample_tests(
        {layer: (a[layer], b[layer]) for layer in layers},
        max_samples=None,
        seed=seed,
        source=source,
        mesh=mesh,
        **options,
    )
