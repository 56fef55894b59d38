"""Sums over a device mesh: samples split by rows, each sum formed where its rows are.

:func:`mmdstyle.mmd2`'s feature, pairwise and random-feature routes take samples whose rows are
split over the devices of a ``jax.sharding.Mesh``, in one process or several (after
``jax.distributed.initialize``), and return the value they return on one device. This module
says how a sum is formed across the devices; :mod:`mmdstyle.mmd` says what is summed.

- **Row totals** (feature and random-feature routes): each device totals its own rows (a mean,
  a Gram matrix, mean random features), then ``lax.psum`` adds the p totals
  (:class:`mmdstyle._rows.RowSums`): O(d^2) or O(D) numbers cross between devices, whatever m.
- **A ring** (pairwise route, :func:`ring_pair_sum`, :func:`ring_self_sum`): each device keeps its
  block of x and passes the visiting block of y on to its neighbour (``lax.ppermute``), p - 1
  times; after s steps device i holds block i - s (mod p), so every pair of blocks meets once.
  The symmetric x-x sum stops after floor(p/2) steps: steps s and p - s meet the same unordered
  pairs, so steps 1 ... ceil(p/2) - 1 count twice and, for even p, step p/2 (which meets each of
  its pairs from both ends) once. No device holds more than two blocks of a set. The backward
  pass (a custom VJP) runs the ring again, each visiting block's gradient travelling with it and
  sent home at the end, so it holds no more.
- **Uneven sets**: rows are padded to a multiple of p with copies of a real row that weigh 0
  (:func:`mmdstyle._rows.pad_rows`), so m and n need not divide by the number of devices.

Per ring step a device computes (m/p)(n/p) kernel values, O((m/p)(n/p) d) work, and sends
(n/p) d numbers (a block of y): docs/scaling.md works out when a ring stays compute-bound.

References:
  JAX documentation, "Distributed arrays and automatic parallelization" and "shard_map for
  simple per-device code". https://docs.jax.dev/en/latest/notebooks/shard_map.html
  Liu, Zaharia, Abbeel, "Ring Attention with Blockwise Transformers for Near-Infinite Context",
  ICLR 2024 (the same ring, its backward pass carrying gradients with the blocks).
  https://arxiv.org/abs/2310.01889
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Float

from mmdstyle._checks import check_sample_pair, is_traced
from mmdstyle._rows import RowSums, pad_rows

__all__ = [
    "Placement",
    "device_count",
    "place_samples",
    "ring_pair_sum",
    "ring_self_sum",
    "sample_placement",
    "with_auto_axes",
]

#: ``pair_sum(kernel, a, a_weights, b, b_weights) = sum_ij u_i v_j k(a_i, b_j)`` on one device.
PairSum = Callable[[Any, Array, Array, Array, Array], Array]
#: ``self_sum(kernel, a, a_weights) = sum_{i != j} u_i u_j k(a_i, a_j)`` on one device.
SelfSum = Callable[[Any, Array, Array], Array]


@dataclass(frozen=True)
class Placement:
    """Where sample sets lie: their rows split over the ``axes`` of ``mesh``, the columns whole.

    Hashable, so that it can be a static argument of a compiled function.

    Attributes:
      mesh: the devices, with every axis of type ``Auto`` (``shard_map`` and sharding constraints
        work on it however the caller's mesh was typed).
      axes: the mesh axes the rows are split over, in order; the p = product of their sizes
        devices hold one block of rows each.
    """

    mesh: Mesh
    axes: tuple[str, ...]

    @property
    def size(self) -> int:
        """p, the number of blocks (devices) the rows are split into."""
        return math.prod(self.mesh.shape[axis] for axis in self.axes)

    @property
    def rows(self) -> P:
        """The partition of a sample set (r, d): rows split, channels whole."""
        return P(self.axes, None)

    @property
    def weights(self) -> P:
        """The partition of a vector of per-row weights (r,)."""
        return P(self.axes)

    def spread(self, x: Float[Array, "m d"]) -> tuple[Float[Array, "r d"], Float[Array, " r"]]:
        """``x`` padded to a multiple of p rows (padding weighs 0) and split over the devices."""
        padded, weights = pad_rows(x, -(-x.shape[0] // self.size) * self.size)
        return (
            lax.with_sharding_constraint(padded, NamedSharding(self.mesh, self.rows)),
            lax.with_sharding_constraint(weights, NamedSharding(self.mesh, self.weights)),
        )

    def receive(self, array: Any) -> Any:
        """A concrete array on other devices than the mesh's, moved onto them (rows split where they divide).

        A compiled program takes its arguments from one set of devices; a sample set placed on
        one device beside another split over the mesh would be refused by JAX. Traced arrays,
        NumPy arrays and arrays already on the mesh's devices come back unchanged.
        """
        if is_traced(array) or not isinstance(array, jax.Array):
            return array
        if array.sharding.device_set == set(self.mesh.devices.flat):
            return array
        spec = self.rows if array.shape[0] % self.size == 0 else P()
        return jax.device_put(array, NamedSharding(self.mesh, spec))

    def map(self, body: Callable[..., Any], in_specs: Any, out_specs: Any, *, check_vma: bool = True) -> Any:
        """``body`` run on each device's blocks (``jax.shard_map`` over this mesh)."""
        return jax.shard_map(
            body, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs, check_vma=check_vma
        )

    def over_rows(
        self,
        body: Callable[..., Array],
        x: Float[Array, "m d"],
        y: Float[Array, "n d"],
        *shared: Any,
    ) -> Float[Array, ""]:
        """``body(*shared, x_block, x_rows, y_block, y_rows)`` on every device, its one result.

        x and y are spread over the devices (:meth:`spread`); ``x_rows`` and ``y_rows`` are
        :class:`~mmdstyle._rows.RowSums` that total over the real rows of all devices, so a body
        written for one device computes the same scalar on each, from totals ``psum`` formed.
        ``shared`` (pytrees: draws, coefficients) is the same on every device.
        """
        m, n = x.shape[0], y.shape[0]
        (x, u), (y, v) = self.spread(x), self.spread(y)

        def local(shared: tuple[Any, ...], x: Array, u: Array, y: Array, v: Array) -> Array:
            return body(*shared, x, RowSums(m, u, self.axes), y, RowSums(n, v, self.axes))

        run = self.map(local, (P(), self.rows, self.weights, self.rows, self.weights), P())
        return run(shared, x, u, y, v)

    def shift(self, blocks: Any, steps: int) -> Any:
        """Inside :meth:`map`: every array of ``blocks`` sent from device i to device i + steps (mod p)."""
        p = self.size
        pairs = [(source, (source + steps) % p) for source in range(p)]
        return jax.tree.map(lambda block: lax.ppermute(block, self.axes, pairs), blocks)


def _auto_mesh(mesh: Mesh) -> Mesh:
    """The same devices and axis names, every axis of type ``Auto``."""
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def with_auto_axes(array: Any) -> Any:
    """A concrete array placed on a mesh with ``Explicit`` axes, relabelled onto its ``Auto`` twin.

    Explicit sharding puts the placement into the array's type, and operations that cannot keep
    it (``jnp.tile`` of split rows, say) refuse to trace; the routes are written for XLA's
    automatic partitioning. The data stay where they are. Anything else comes back unchanged.

    Raises:
      ValueError: a traced array (inside the caller's ``jit``, ``grad`` or ``vmap``) split over
        ``Explicit`` axes, which cannot be relabelled there.
    """
    if is_traced(array):
        sharding = getattr(jax.typeof(array), "sharding", None)
        axes = () if sharding is None else [a for a in sharding.spec if a is not None]
        if axes and AxisType.Explicit in sharding.mesh.axis_types:
            raise ValueError(
                f"the samples are split over a mesh with Explicit axes ({sharding.spec}) inside a JAX "
                "transformation (jit, grad, vmap), where mmdstyle cannot relabel them. Build the mesh "
                "with Auto axes: jax.make_mesh(shape, names, axis_types=(jax.sharding.AxisType.Auto,) * "
                "len(names)) (jax.make_mesh's default is Explicit)."
            )
        return array
    if not isinstance(array, jax.Array):
        return array
    sharding = array.sharding
    if not isinstance(sharding, NamedSharding) or AxisType.Explicit not in sharding.mesh.axis_types:
        return array
    return jax.device_put(array, NamedSharding(_auto_mesh(sharding.mesh), sharding.spec))


def _row_split(name: str, array: Any) -> tuple[Mesh, tuple[str, ...]] | None:
    """The mesh and axes a concrete array's rows are split over, or None (one device, or copies)."""
    if is_traced(array) or not isinstance(array, jax.Array):
        return None
    sharding = array.sharding
    if not isinstance(sharding, NamedSharding):
        return None
    spec = tuple(sharding.spec) + (None,) * (array.ndim - len(sharding.spec))
    if array.ndim == 2 and spec[1] is not None:
        rows = spec[0] if spec[0] is not None else spec[1]
        raise ValueError(
            f"{name} is split along its channels (partition {sharding.spec}); mmd2 splits samples "
            f"by rows, each device holding whole samples. Place {name} with "
            f"NamedSharding(mesh, PartitionSpec({rows!r}, None)) instead."
        )
    if spec[0] is None:
        return None
    return sharding.mesh, (spec[0],) if isinstance(spec[0], str) else tuple(spec[0])


def _same_devices(first: Mesh, second: Mesh) -> bool:
    return first.axis_names == second.axis_names and np.array_equal(
        np.vectorize(lambda device: device.id)(first.devices),
        np.vectorize(lambda device: device.id)(second.devices),
    )


def sample_placement(x: Any, y: Any, mesh: Mesh | None = None) -> Placement | None:
    """Where :func:`mmdstyle.mmd2` sums: over ``mesh``, over the mesh x or y lie on, or on one device.

    Args:
      x: the samples (m, d), as the caller passed them.
      y: the samples (n, d).
      mesh: split the rows over all axes of this mesh; default: the mesh and axes that x's or
        y's rows are already split over (a ``NamedSharding`` whose first entry names mesh axes).

    Returns:
      The placement, or None where the sums run on one device (no mesh, or a mesh of one device).

    Raises:
      ValueError: ``mesh`` not a ``Mesh``; x or y split along the channel axis; x and y split
        over different meshes, or over another mesh than ``mesh``.
    """
    splits = {name: _row_split(name, array) for name, array in (("x", x), ("y", y))}
    found = [(name, split) for name, split in splits.items() if split is not None]
    if mesh is not None:
        if not isinstance(mesh, Mesh):
            raise ValueError(
                f"mesh must be a jax.sharding.Mesh, e.g. jax.make_mesh((jax.device_count(),), "
                f"('samples',)); got {type(mesh).__name__}."
            )
        for name, (other, _) in found:
            if not _same_devices(mesh, other):
                raise ValueError(
                    f"{name} is split over another mesh ({dict(other.shape)}) than mesh= "
                    f"({dict(mesh.shape)}). Pass samples placed on that mesh, or omit mesh= to use "
                    f"the one they lie on."
                )
        chosen, axes = mesh, tuple(mesh.axis_names)
    elif not found:
        return None
    else:
        (first_name, (chosen, axes)), *rest = found
        for name, (other, other_axes) in rest:
            if not _same_devices(chosen, other) or other_axes != axes:
                raise ValueError(
                    f"{first_name} and {name} are split differently: {first_name} over axes {axes} "
                    f"of {dict(chosen.shape)}, {name} over axes {other_axes} of {dict(other.shape)}. "
                    f"Place both on one mesh with the same PartitionSpec, or pass mesh=."
                )
    placement = Placement(_auto_mesh(chosen), axes)
    return placement if placement.size > 1 else None


def place_samples(x: Any, y: Any, mesh: Mesh | None = None) -> tuple[Array, Array, Placement | None]:
    """The checked sample pair (``check_sample_pair``) and where it is summed: mmd2's and mmd2_test's start.

    Samples on a mesh of ``Explicit`` axes are relabelled (:func:`with_auto_axes`), the placement
    found (:func:`sample_placement`), and a set on other devices than the placement's moved onto
    them (:meth:`Placement.receive`).

    Raises:
      ValueError: bad samples (as ``check_sample_pair``), or a placement :func:`sample_placement`
        or :func:`with_auto_axes` refuses.
    """
    x, y = check_sample_pair(with_auto_axes(x), with_auto_axes(y))
    placement = sample_placement(x, y, mesh)
    if placement is not None:
        x, y = placement.receive(x), placement.receive(y)
    return x, y, placement


def device_count(placement: Placement | None) -> int:
    """The number of devices a placement splits the rows over: 1 without one."""
    return 1 if placement is None else placement.size


# ----------------------------------------------------------------------------------------------
# The ring


def ring_pair_sum(
    pair_sum: PairSum,
    kernel: Any,
    x: Float[Array, "r d"],
    x_weights: Float[Array, " r"],
    y: Float[Array, "s d"],
    y_weights: Float[Array, " s"],
    placement: Placement,
) -> Float[Array, ""]:
    """``sum_ij u_i v_j k(x_i, y_j)`` over every pair of blocks, by a ring of p steps.

    x and y are split by rows over the placement (:meth:`Placement.spread`); ``pair_sum`` forms
    one device's sum of one block pair. Differentiable in the kernel, x and y (not the weights).
    """
    return _ring(pair_sum, None, placement, kernel, x, x_weights, y, y_weights)


def ring_self_sum(
    pair_sum: PairSum,
    self_sum: SelfSum,
    kernel: Any,
    x: Float[Array, "r d"],
    weights: Float[Array, " r"],
    placement: Placement,
) -> Float[Array, ""]:
    """``sum_{i != j} u_i u_j k(x_i, x_j)`` with each unordered pair of blocks met once, floor(p/2) + 1 steps.

    ``self_sum`` forms a block's sum with itself (self-pairs left out), ``pair_sum`` that of two
    blocks. Differentiable in the kernel and x.
    """
    return _ring(pair_sum, self_sum, placement, kernel, x, weights, x, weights)


def _steps_and_count(self_sum: SelfSum | None, p: int) -> tuple[int, Callable[[Array, Any], Array]]:
    """The ring's steps after the first, and how often step s counts its pairs."""
    if self_sum is None:
        return p - 1, lambda s, dtype: jnp.ones((), dtype)
    return p // 2, lambda s, dtype: jnp.where(2 * s == p, 1.0, 2.0).astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _ring(
    pair_sum: PairSum,
    self_sum: SelfSum | None,
    placement: Placement,
    kernel: Any,
    x: Array,
    u: Array,
    y: Array,
    v: Array,
) -> Array:
    steps, count = _steps_and_count(self_sum, placement.size)

    def body(kernel: Any, x: Array, u: Array, y: Array, v: Array) -> Array:
        if self_sum is None:
            total, visiting = pair_sum(kernel, x, u, y, v), (y, v)
        else:
            total, visiting = self_sum(kernel, x, u), (x, u)

        def step(s: Array, carry: tuple[Array, tuple[Array, Array]]) -> tuple[Array, tuple[Array, Array]]:
            total, visiting = carry
            visiting = placement.shift(visiting, 1)
            return total + count(s, total.dtype) * pair_sum(kernel, x, u, *visiting), visiting

        total, _ = lax.fori_loop(1, steps + 1, step, (total, visiting))
        return lax.psum(total, placement.axes)

    rows, weights = placement.rows, placement.weights
    # check_vma=False: the backward pass psums the kernel's cotangent itself, once
    run = placement.map(body, (P(), rows, weights, rows, weights), P(), check_vma=False)
    return run(kernel, x, u, y, v)


def _ring_forward(
    pair_sum: PairSum, self_sum: SelfSum | None, placement: Placement, *arguments: Any
) -> tuple[Array, tuple[Any, ...]]:
    return _ring(pair_sum, self_sum, placement, *arguments), arguments


def _ring_backward(
    pair_sum: PairSum, self_sum: SelfSum | None, placement: Placement, residuals: tuple[Any, ...], g: Array
) -> tuple[Any, ...]:
    kernel, x, u, y, v = residuals
    steps, count = _steps_and_count(self_sum, placement.size)

    def body(kernel: Any, x: Array, u: Array, y: Array, v: Array, g: Array) -> tuple[Any, Array, Array]:
        def pull(b: Array, b_weights: Array, factor: Array) -> tuple[Any, Array, Array]:
            _, vjp = jax.vjp(lambda k, a, b: pair_sum(k, a, u, b, b_weights), kernel, x, b)
            return vjp(g * factor)

        if self_sum is None:
            d_kernel, dx, db = pull(y, v, jnp.ones((), g.dtype))
            visiting = (y, v, db)
        else:
            _, vjp = jax.vjp(lambda k, a: self_sum(k, a, u), kernel, x)
            d_kernel, dx = vjp(g)
            visiting = (x, u, jnp.zeros_like(x))

        def step(s: Array, carry: tuple[Any, Array, tuple[Array, Array, Array]]) -> tuple[Any, ...]:
            d_kernel, dx, visiting = carry
            b, b_weights, db = placement.shift(visiting, 1)
            dk_s, dx_s, db_s = pull(b, b_weights, count(s, g.dtype))
            return jax.tree.map(jnp.add, d_kernel, dk_s), dx + dx_s, (b, b_weights, db + db_s)

        d_kernel, dx, (_, _, db) = lax.fori_loop(1, steps + 1, step, (d_kernel, dx, visiting))
        db = placement.shift(db, -steps)  # each visiting block's gradient, home to its owner
        return lax.psum(d_kernel, placement.axes), dx, db

    rows, weights = placement.rows, placement.weights
    run = placement.map(body, (P(), rows, weights, rows, weights, P()), (P(), rows, rows), check_vma=False)
    d_kernel, dx, db = run(kernel, x, u, y, v, g)
    if self_sum is not None:  # x came in twice: its whole gradient in the first slot
        dx, db = dx + db, jnp.zeros_like(y)
    return d_kernel, dx, jnp.zeros_like(u), db, jnp.zeros_like(v)


_ring.defvjp(_ring_forward, _ring_backward)
