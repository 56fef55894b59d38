"""Stalled regions: the worst patch of a synthesis.

That a single Gaussian leaves such a region in notebook 03's synthesis and the other losses do
not is checked on the notebook's own table (tests/test_notebooks.py, ``CLAIMS``).
"""

from __future__ import annotations

import numpy as np

from mmdstyle.analysis import patch_statistics, worst_patch_distance
from mmdstyle.style import load_sample


def test_patch_statistics_are_each_patchs_channel_means_and_spreads(rng):
    image = rng.uniform(size=(10, 12, 3))
    statistics = patch_statistics(image, 4, 3)
    assert statistics.shape == (3 * 3, 6)
    patch = image[3:7, 6:10].reshape(-1, 3)  # row 1, column 2 of the 3 x 3 patches
    np.testing.assert_allclose(
        statistics[1 * 3 + 2], np.concatenate([patch.mean(0), patch.std(0)]), rtol=1e-12
    )


def test_a_patch_of_noise_in_a_texture_is_found(rng):
    style = load_sample("brick", size=48)
    assert worst_patch_distance(style, style) < 1e-3  # every patch is its own nearest: 0 up to rounding
    spoilt = style.copy()
    spoilt[16:32, 16:32] = rng.uniform(size=(16, 16, 3))
    assert worst_patch_distance(spoilt, style) > 10.0
