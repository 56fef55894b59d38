"""Pytree registration whose structure names the class (mmdstyle/_pytrees.py)."""

from __future__ import annotations

import ast
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from mmdstyle._pytrees import pytree_dataclass
from tests import REPOSITORY

PACKAGE = REPOSITORY / "mmdstyle"


def two_classes_with_the_same_fields():
    def make(name):
        @pytree_dataclass
        @dataclasses.dataclass(frozen=True)
        class Node:
            value: jax.Array
            label: str = dataclasses.field(default="a", metadata={"static": True})

            def __post_init__(self):
                if isinstance(self.value, (int, float)) and self.value < 0:
                    raise ValueError("negative")

        Node.__name__ = Node.__qualname__ = name
        return Node

    return make("First"), make("Second")


def test_two_classes_with_the_same_fields_have_unequal_structures():
    # jax.tree_util.register_dataclass gives these equal structures (JAX 0.10), which lets a jit
    # cache serve one class's program to the other (the module's docstring tells how it happened)
    first, second = two_classes_with_the_same_fields()
    assert jax.tree_util.tree_structure(first(1.0)) != jax.tree_util.tree_structure(second(1.0))
    assert jax.tree_util.tree_structure(first(1.0)) == jax.tree_util.tree_structure(first(2.0))
    assert jax.tree_util.tree_structure(first(1.0, "a")) != jax.tree_util.tree_structure(first(1.0, "b"))


def test_a_node_flattens_to_its_fields_and_rebuilds_without_init():
    first, _ = two_classes_with_the_same_fields()
    node = first(jnp.arange(3.0), "b")
    (path, leaf), *rest = jax.tree_util.tree_flatten_with_path(node)[0]
    assert rest == []
    assert jax.tree_util.keystr(path) == ".value"
    np.testing.assert_array_equal(leaf, node.value)
    # JAX rebuilds nodes from placeholders that __init__ (or __post_init__) would refuse
    rebuilt = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(node), [-1.0])
    assert type(rebuilt) is first
    assert (rebuilt.value, rebuilt.label) == (-1.0, "b")
    doubled = jax.jit(lambda node: jax.tree_util.tree_map(lambda v: 2 * v, node))(node)
    np.testing.assert_array_equal(doubled.value, [0.0, 2.0, 4.0])
    assert doubled.label == "b"


def registrations_by_register_dataclass(source: str) -> list[int]:
    """Lines of ``source`` that name ``register_dataclass``."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if (isinstance(node, ast.Attribute) and node.attr == "register_dataclass")
        or (isinstance(node, ast.Name) and node.id == "register_dataclass")
        or (isinstance(node, ast.alias) and node.name.endswith("register_dataclass"))
    ]


def test_no_module_registers_with_register_dataclass():
    found = {
        str(path.relative_to(PACKAGE)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if (lines := registrations_by_register_dataclass(path.read_text()))
    }
    assert found == {}


def test_the_check_finds_every_spelling():
    source = (
        "import jax\nfrom jax.tree_util import register_dataclass\n"
        "@jax.tree_util.register_dataclass\nclass A: ...\nregister_dataclass(A)\n"
    )
    assert registrations_by_register_dataclass(source) == [2, 3, 5]
