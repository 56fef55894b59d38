"""mmdstyle: neural style transfer as Maximum Mean Discrepancy, in JAX.

Gatys et al.'s Gram-matrix style loss is the biased MMD^2 with the kernel (a^T b)^2, divided by
4 d^2 (Li et al., 2017). mmdstyle computes both, with any kernel and estimator, and proves the
identity numerically. Formulas and conventions: MATH.md in the project's shared notes, and the
docstrings of each function.
"""

from mmdstyle import kernels
from mmdstyle.bandwidth import mean_bandwidth, median_bandwidth
from mmdstyle.kernels import (
    AbstractKernel,
    Gaussian,
    Laplacian,
    Linear,
    Polynomial,
    from_function,
)
from mmdstyle.losses import bn_style_loss, content_loss, gram_matrix, gram_style_loss, mmd_style_loss
from mmdstyle.mmd import mmd2, select_route
from mmdstyle.two_sample import TwoSampleTestResult, mmd2_test

__version__ = "0.1.0"


def __getattr__(name: str):
    # The math core imports no network code; ``mmdstyle.features`` (Flax) loads on first access.
    if name == "features":
        import importlib

        return importlib.import_module("mmdstyle.features")
    raise AttributeError(f"module 'mmdstyle' has no attribute {name!r}")


__all__ = [
    "AbstractKernel",
    "Gaussian",
    "Laplacian",
    "Linear",
    "Polynomial",
    "TwoSampleTestResult",
    "bn_style_loss",
    "content_loss",
    "from_function",
    "gram_matrix",
    "gram_style_loss",
    "kernels",
    "mean_bandwidth",
    "median_bandwidth",
    "mmd2",
    "mmd2_test",
    "mmd_style_loss",
    "select_route",
]
