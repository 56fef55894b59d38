"""mmdstyle: neural style transfer as Maximum Mean Discrepancy, in JAX.

Gatys et al.'s Gram-matrix style loss is the biased MMD^2 with the kernel (a^T b)^2, divided by
4 d^2 (Li et al., 2017). mmdstyle computes both, with any kernel and estimator, and proves the
identity numerically. Formulas and conventions: ``docs/math.md`` in the repository, and the
docstrings of each function.

This package is the mathematical core: arrays of samples in, scalars out. The layers above it
are subpackages, each importing only from those below: :mod:`mmdstyle.features` (extractors,
weights), :mod:`mmdstyle.style` (loss specs, the transfer engine, images), :mod:`mmdstyle.analysis`
(verification, tests, comparisons, figures) and :mod:`mmdstyle.cli` (the ``mmdstyle`` command).
"""

from importlib.metadata import PackageNotFoundError, version

from mmdstyle import kernels
from mmdstyle._checks import as_samples
from mmdstyle.bandwidth import mean_bandwidth, median_bandwidth
from mmdstyle.kernels import (
    AbstractKernel,
    Energy,
    Gaussian,
    Laplacian,
    Linear,
    MultiGaussian,
    Polynomial,
    from_function,
)
from mmdstyle.losses import bn_style_loss, content_loss, gram_matrix, gram_style_loss, mmd_style_loss
from mmdstyle.mmd import mmd2, select_route
from mmdstyle.moments import cmd_loss
from mmdstyle.two_sample import TwoSampleTestResult, mmd2_test
from mmdstyle.wasserstein import gaussian_w2_loss, psd_sqrt, sliced_wasserstein_loss

try:
    __version__ = version("mmdstyle")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"


__all__ = [
    "AbstractKernel",
    "Energy",
    "Gaussian",
    "Laplacian",
    "Linear",
    "MultiGaussian",
    "Polynomial",
    "TwoSampleTestResult",
    "as_samples",
    "bn_style_loss",
    "cmd_loss",
    "content_loss",
    "from_function",
    "gaussian_w2_loss",
    "gram_matrix",
    "gram_style_loss",
    "kernels",
    "mean_bandwidth",
    "median_bandwidth",
    "mmd2",
    "mmd2_test",
    "mmd_style_loss",
    "psd_sqrt",
    "select_route",
    "sliced_wasserstein_loss",
]
