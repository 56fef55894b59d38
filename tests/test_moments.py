"""The central moment discrepancy against its NumPy reference (float64)."""

import jax
import numpy as np
import pytest
from jax.test_util import check_grads

import mmdstyle as ms
from mmdstyle import moments
from tests import reference


@pytest.mark.parametrize(("order", "squash"), [(5, "sigmoid"), (3, None), (1, "sigmoid")])
def test_cmd_matches_the_reference(rng, order, squash):
    x, y = rng.normal(size=(30, 4)), rng.exponential(size=(20, 4)) - 0.5
    value = ms.cmd_loss(x, y, order=order, squash=squash)
    np.testing.assert_allclose(value, reference.cmd(x, y, order, squash is not None), rtol=1e-12)
    target = moments.cmd_target(y, order=order, squash=squash)
    assert target.shape == (order, 4)
    np.testing.assert_allclose(moments.cmd_loss_to_target(x, target, squash=squash), value, rtol=1e-12)


def test_cmd_sees_marginals_only(rng):
    # y: x with one channel's values shuffled over the positions: every channel's distribution is
    # unchanged, the correlation between channels is gone. CMD cannot tell; the Gram loss can.
    x = rng.normal(size=(200, 2)) @ np.array([[1.0, 0.9], [0.0, 0.4]])
    y = x.copy()
    y[:, 1] = rng.permutation(y[:, 1])
    assert float(ms.cmd_loss(x, y)) < 1e-14
    assert float(ms.gram_style_loss(x, y)) > 1e-3


def test_cmd_gradients_are_right_and_zero_not_nan_where_moments_agree(rng):
    x, y = rng.normal(size=(8, 3)), rng.normal(size=(6, 3))
    check_grads(lambda x, y: ms.cmd_loss(x, y), (x, y), order=1, modes=["rev"])
    constant = np.concatenate([x[:, :2], np.full((8, 1), 3.0)], axis=1)
    for a, b in ((x, x), (constant, constant), (constant, y)):
        gradient = jax.grad(ms.cmd_loss)(a, b)
        assert np.all(np.isfinite(gradient))
    np.testing.assert_array_equal(jax.grad(lambda a: ms.cmd_loss(a, x))(x), 0.0)


def test_cmd_refuses_bad_arguments(rng):
    x = rng.normal(size=(5, 2))
    with pytest.raises(ValueError, match="order must be a positive integer"):
        ms.cmd_loss(x, x, order=0)
    with pytest.raises(ValueError, match="squash must be one of"):
        ms.cmd_loss(x, x, squash="tanh")
