"""Local statistics: does any part of a result look unlike every part of the style?

A style loss averages over all positions, so a region that never moved (a patch of the starting
noise where a kernel had no gradient left) can hide in a good average. Here each patch of the
result is described by the mean and spread of each colour channel, and compared with every patch
of the style in units of the style patches' own spread: a region of the result that looks like
some region of the style scores about 1, a patch of noise tens. The worst patch is the score.
"""

from __future__ import annotations

import numpy as np

__all__ = ["patch_statistics", "worst_patch_distance"]


def patch_statistics(image: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Each ``size`` x ``size`` patch (every ``stride`` pixels): its channels' means and standard deviations.

    Args:
      image: (H, W, channels).
      size: patch side in pixels.
      stride: pixels between patches, down and across.

    Returns:
      (patches, 2 * channels): means first, then standard deviations.
    """
    image = np.asarray(image, np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(image, (size, size), axis=(0, 1))[::stride, ::stride]
    pixels = windows.reshape(*windows.shape[:3], size * size)  # (rows, columns, channels, pixels)
    statistics = np.concatenate([pixels.mean(-1), pixels.std(-1)], axis=-1)
    return statistics.reshape(-1, statistics.shape[-1])


def worst_patch_distance(image: np.ndarray, style: np.ndarray, size: int = 8) -> float:
    """The largest distance from a patch of ``image`` to its nearest patch of ``style``.

    Distances are Euclidean over the patch statistics (:func:`patch_statistics`), each statistic
    divided by its standard deviation over the style's patches. The style is scanned densely
    (stride 2), the image with half-overlapping patches.

    Args:
      image: the result (H, W, 3) in [0, 1].
      style: the style image (h, w, 3) at the scale the result should match.
      size: patch side in pixels.

    Returns:
      About 1-3 for a result whose every region resembles some region of the style; tens for a
      region of uniform noise.
    """
    # each statistic in units of its spread over the style's patches (the floor: a constant style)
    scale = patch_statistics(style, size, 2).std(axis=0) + 1e-6
    reference = patch_statistics(style, size, 2) / scale
    patches = patch_statistics(image, size, max(1, size // 2)) / scale
    worst = 0.0
    for start in range(0, len(patches), 256):  # 256 image patches at a time: bounded memory
        chunk = patches[start : start + 256]
        squared = np.sum(chunk**2, 1)[:, None] + np.sum(reference**2, 1)[None, :] - 2.0 * chunk @ reference.T
        worst = max(worst, float(np.sqrt(max(np.min(squared, axis=1).max(), 0.0))))
    return worst
