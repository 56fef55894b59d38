"""What the losses do, measured: the identity verified, per-layer two-sample tests, loss comparisons.

- :mod:`~mmdstyle.analysis.verification`: the Gram loss against the biased poly2 MMD, layer by
  layer, values and gradients, in float64 (the proof) and float32.
- :mod:`~mmdstyle.analysis.layer_tests`: kernel two-sample tests on each layer's features of two
  images, with Holm's adjustment.
- :mod:`~mmdstyle.analysis.folders`: the same tests on two collections: every image of two
  folders, read in batches, on all visible devices.
- :mod:`~mmdstyle.analysis.comparison`: style transfer with several losses, each result measured
  under several kernels.
- :mod:`~mmdstyle.analysis.patches`: local statistics, to find a region of a result that never
  moved (:func:`worst_patch_distance`).
- :mod:`~mmdstyle.analysis.figures`: the figures of all of these, in one house style.

This layer builds on :mod:`mmdstyle.style`, :mod:`mmdstyle.features` and the core.
"""

from mmdstyle.analysis.comparison import Comparison, LossRun, compare_losses, style_discrepancies
from mmdstyle.analysis.folders import collect_folder_samples, folder_two_sample_tests
from mmdstyle.analysis.layer_tests import (
    LayerTest,
    LayerTestReport,
    holm_adjust,
    image_two_sample_tests,
    layer_two_sample_tests,
)
from mmdstyle.analysis.patches import patch_statistics, worst_patch_distance
from mmdstyle.analysis.verification import (
    IdentityReport,
    LayerIdentity,
    synthetic_vgg_layers,
    verify_gram_mmd_identity,
    verify_images,
)

__all__ = [
    "Comparison",
    "IdentityReport",
    "LayerIdentity",
    "LayerTest",
    "LayerTestReport",
    "LossRun",
    "collect_folder_samples",
    "compare_losses",
    "folder_two_sample_tests",
    "holm_adjust",
    "image_two_sample_tests",
    "layer_two_sample_tests",
    "patch_statistics",
    "style_discrepancies",
    "synthetic_vgg_layers",
    "verify_gram_mmd_identity",
    "verify_images",
    "worst_patch_distance",
]
