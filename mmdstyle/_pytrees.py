"""Pytree registration whose tree structure names the node's class.

Every pytree class of mmdstyle (kernels, built style terms, the random routes' targets, test
results) is registered here, not with ``jax.tree_util.register_dataclass``. The structures that
``register_dataclass`` makes compare equal across two classes with the same fields (JAX 0.10:
``GramTerm`` and ``BNTerm``, each a ``target`` array) while their hashes differ. A jit cache is a
hash table keyed by the arguments' structures: when two such hashes meet in one of its buckets,
equality decides, and one class's compiled program runs on the other's arguments. It happened: a
BN-statistics transfer ran the Gram loss's program and recorded the Gram loss's values. A node
registered here is a custom node, whose class is part of its structure's equality.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, TypeVar

import jax

T = TypeVar("T", bound=type)


def register_fields(cls: T, children: Sequence[str], static: Sequence[str]) -> T:
    """Register ``cls`` as a pytree node of the attributes ``children`` (leaves) and ``static``.

    The static attributes' values are the node's auxiliary data: hashable Python values that are
    part of a compiled program. Unflattening bypasses ``__init__`` (JAX rebuilds nodes from
    tracers and placeholders, which validation would refuse) and sets the attributes directly,
    so frozen dataclasses qualify. Key paths name the attributes (``.sigma``).
    """
    children, static = tuple(children), tuple(static)

    def flatten_with_keys(node: Any) -> tuple[tuple[tuple[Any, Any], ...], tuple[Any, ...]]:
        keyed = tuple((jax.tree_util.GetAttrKey(name), getattr(node, name)) for name in children)
        return keyed, tuple(getattr(node, name) for name in static)

    def flatten(node: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        return tuple(getattr(node, name) for name in children), tuple(getattr(node, name) for name in static)

    def unflatten(aux: tuple[Any, ...], leaves: Sequence[Any]) -> Any:
        node = object.__new__(cls)
        for name, value in zip(children, leaves, strict=True):
            object.__setattr__(node, name, value)
        for name, value in zip(static, aux, strict=True):
            object.__setattr__(node, name, value)
        return node

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    return cls


def pytree_dataclass(cls: T) -> T:
    """Register the dataclass ``cls`` as a pytree: fields with ``metadata={"static": True}`` static.

    Used as ``@pytree_dataclass`` above ``@dataclass(frozen=True)``, in place of
    ``jax.tree_util.register_dataclass`` (see the module's docstring for why).
    """
    fields = dataclasses.fields(cls)
    return register_fields(
        cls,
        children=[field.name for field in fields if not field.metadata.get("static", False)],
        static=[field.name for field in fields if field.metadata.get("static", False)],
    )
