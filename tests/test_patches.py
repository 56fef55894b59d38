"""Stalled regions: the worst patch of a synthesis, and the kernels that leave none."""

from __future__ import annotations

import numpy as np
import pytest

from mmdstyle.analysis import patch_statistics, worst_patch_distance
from mmdstyle.features import MultiScaleRandom
from mmdstyle.style import TransferConfig, load_sample, synthesize


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


@pytest.fixture(scope="module")
def extractor():
    return MultiScaleRandom(sizes=(3, 5, 7, 11, 15, 23), features_per_size=16)


@pytest.mark.parametrize(
    ("loss", "stalls"),
    [
        # one bandwidth: where the image's features are far from every style feature the kernel has
        # no gradient, and a region of the starting noise survives (docs/math.md, "Bandwidth heuristics")
        ("mmd:gaussian(sigma=median)@rff(1024)", True),
        # several bandwidths: the wide ones keep a gradient there
        ("mmd:gaussian(sigma=median*(0.25,0.5,1,2,4))@rff(1024)", False),
    ],
)
def test_a_single_bandwidth_leaves_noise_and_several_do_not(extractor, loss, stalls):
    # notebook 03's synthesis: brick, the multi-scale random network, L-BFGS from noise, beta balanced
    config = TransferConfig(size=48, steps=40, loss=loss, style_layers=("relu",))
    result = synthesize([load_sample("brick")], config, extractor=extractor, progress=False)
    worst = worst_patch_distance(result.image, load_sample("brick", size=48))
    # measured: uniform noise 42, the Gram loss's result 2.8, these 44 and 3.5; 10 separates them
    assert (worst > 10.0) == stalls, worst
