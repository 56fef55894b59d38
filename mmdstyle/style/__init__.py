"""Style transfer and texture synthesis with any style loss.

- :mod:`~mmdstyle.style.specs`: the loss-spec language (``gram``, ``mmd:gaussian(sigma=median)``,
  ``0.5*mmd:linear + 0.5*bn``) and the style terms it builds.
- :mod:`~mmdstyle.style.objective`: the settings of a run and the objective they define.
- :mod:`~mmdstyle.style.engine`: the optimisation (optax L-BFGS or Adam), pyramids, results.
- :mod:`~mmdstyle.style.images`: image files in and out; :mod:`~mmdstyle.style.samples`: the
  bundled images.

This layer builds on :mod:`mmdstyle.features` and the core, and knows nothing of the command line.
"""

from mmdstyle.style.engine import TransferResult, synthesize, transfer
from mmdstyle.style.images import load_image, save_image
from mmdstyle.style.objective import Objective, TransferConfig
from mmdstyle.style.samples import SAMPLES, load_sample
from mmdstyle.style.specs import (
    RoutedKernel,
    SpecError,
    StyleSpec,
    mmd2_options,
    parse_kernel_spec,
    parse_style_spec,
)

__all__ = [
    "SAMPLES",
    "Objective",
    "RoutedKernel",
    "SpecError",
    "StyleSpec",
    "TransferConfig",
    "TransferResult",
    "load_image",
    "load_sample",
    "mmd2_options",
    "parse_kernel_spec",
    "parse_style_spec",
    "save_image",
    "synthesize",
    "transfer",
]
