"""Rows of a sample set: padding them to a whole number of blocks, and totals over the real ones.

Every route sums something over the rows of a sample set. When the rows are padded (to fill the
last block of a scan, or to split them evenly over devices) the padding rows carry weight 0; when
they are split over a device mesh, each device totals its own rows and ``psum`` adds the totals.
:class:`RowSums` says both, so that one formula serves one device and many.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float

from mmdstyle.kernels import HIGHEST

__all__ = ["RowSums", "pad_rows"]


def pad_rows(
    x: Float[Array, "m ..."], rows: int, weights: Float[Array, " m"] | None = None
) -> tuple[Float[Array, "r ..."], Float[Array, " r"]]:
    """``x`` padded to ``rows`` rows (first axis) with copies of its last row; weights that give them 0.

    The weights are ``weights`` (default 1) on the real rows. Copies of a real row keep every
    kernel value finite (zeros might not be in a user's kernel domain), so masked values cannot
    turn into NaN through 0 * inf, and they leave the largest entry, which sets the scaling of
    the samples, unchanged.
    """
    m, pad = x.shape[0], rows - x.shape[0]
    padded = jnp.concatenate([x, jnp.broadcast_to(x[-1], (pad, *x.shape[1:]))]) if pad else x
    valid = jnp.asarray(np.arange(rows) < m, dtype=x.dtype)
    if weights is not None:
        valid = valid * (jnp.concatenate([weights, jnp.zeros(pad, weights.dtype)]) if pad else weights)
    return padded, valid


@dataclass(frozen=True)
class RowSums:
    """How to total a per-row quantity over a sample set's real rows, wherever they are.

    Attributes:
      count: the number of real rows in the whole set (on every device together).
      weights: 1 for a real row and 0 for padding, (r,), or None when every row is real.
      axes: the mesh axes the rows are split over (inside ``shard_map``), or None on one device.
    """

    count: int
    weights: Array | None = None
    axes: tuple[str, ...] | None = None

    def total(self, local: Array) -> Array:
        """This device's total of a quantity added to the other devices' (itself on one device)."""
        return local if self.axes is None else lax.psum(local, self.axes)

    def zeros(self, shape: tuple[int, ...], dtype: Any) -> Array:
        """Zeros to start a running total of this device's rows (varying across the mesh's devices).

        Inside ``shard_map`` a loop's carry must keep its type, and a total of the device's own
        rows differs from device to device: the zeros it starts from must say so.
        """
        zeros = jnp.zeros(shape, dtype)
        return zeros if self.axes is None else lax.pcast(zeros, self.axes, to="varying")

    def sum(self, values: Float[Array, "r ..."]) -> Float[Array, " ..."]:
        """``sum_i w_i values_i`` over the rows, on every device together."""
        if self.weights is None:
            return self.total(jnp.sum(values, axis=0))
        return self.total(jnp.tensordot(self.weights, values, axes=1, precision=HIGHEST))

    def mean(self, values: Float[Array, "r ..."]) -> Float[Array, " ..."]:
        """The mean of ``values`` over the real rows."""
        return self.sum(values) / float(self.count)

    def gram(self, x: Float[Array, "r d"]) -> Float[Array, "d d"]:
        """``sum_i w_i x_i x_i^T``, at HIGHEST precision (GPUs would otherwise multiply in TF32)."""
        weighted = x if self.weights is None else x * self.weights[:, None]
        return self.total(jnp.matmul(weighted.T, x, precision=HIGHEST))
