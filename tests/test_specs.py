"""The style-loss spec language: what each spec builds, round trips, and errors that point."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mmdstyle as ms
from mmdstyle.mmd import pairwise_target
from mmdstyle.style.specs import (
    KERNEL_FORMS,
    LOSS_FORMS,
    SpecError,
    StyleSpec,
    parse_kernel_spec,
    parse_measure_spec,
    parse_style_spec,
    split_specs,
)
from mmdstyle.wasserstein import sliced_directions


@pytest.fixture
def samples(rng):
    x = jnp.asarray(np.maximum(rng.normal(size=(40, 5)), 0))
    y = jnp.asarray(np.maximum(rng.normal(size=(40, 5)) + 0.3, 0))
    return x, y


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("gram", lambda x, y: ms.gram_style_loss(x, y)),
        ("mmd", lambda x, y: ms.mmd_style_loss(x, y, ms.Polynomial(2))),
        ("mmd:linear", lambda x, y: ms.mmd_style_loss(x, y, ms.Linear())),
        ("mmd:poly(degree=3, c=1)", lambda x, y: ms.mmd_style_loss(x, y, ms.Polynomial(3, c=1.0))),
        ("mmd:gaussian(sigma=2)", lambda x, y: ms.mmd_style_loss(x, y, ms.Gaussian(2.0))),
        (
            "mmd:gaussian(sigma=median)",
            lambda x, y: ms.mmd_style_loss(x, y, ms.Gaussian(ms.median_bandwidth(y))),
        ),
        ("mmd:rbf(sigma=mean)", lambda x, y: ms.mmd_style_loss(x, y, ms.Gaussian(ms.mean_bandwidth(y)))),
        ("mmd:laplacian(sigma=3)", lambda x, y: ms.mmd_style_loss(x, y, ms.Laplacian(3.0))),
        ("bn", lambda x, y: ms.bn_style_loss(x, y)),
        (
            "0.5*mmd:linear + 0.5*bn",
            lambda x, y: 0.5 * ms.mmd_style_loss(x, y, ms.Linear()) + 0.5 * ms.bn_style_loss(x, y),
        ),
        (
            "mmd:(linear + 0.5*gaussian(sigma=2))",
            lambda x, y: ms.mmd_style_loss(x, y, ms.Linear() + 0.5 * ms.Gaussian(2.0)),
        ),
        (
            "2*mmd:(poly2 * laplacian(sigma=1))",
            lambda x, y: 2 * ms.mmd_style_loss(x, y, ms.Polynomial(2) * ms.Laplacian(1.0)),
        ),
        (
            "mmd:gaussian(sigma=0.5*median)",
            lambda x, y: ms.mmd_style_loss(x, y, ms.Gaussian(0.5 * ms.median_bandwidth(y))),
        ),
        (
            "mmd:gaussian(sigma=median*(0.5,2))",
            lambda x, y: ms.mmd_style_loss(x, y, ms.MultiGaussian.around(ms.median_bandwidth(y), (0.5, 2.0))),
        ),
        (
            "mmd:laplacian(sigma=(1,3))",
            lambda x, y: ms.mmd_style_loss(x, y, 0.5 * (ms.Laplacian(1.0) + ms.Laplacian(3.0))),
        ),
        ("mmd:energy@pairwise", lambda x, y: ms.mmd_style_loss(x, y, ms.Energy(), route="pairwise")),
        ("mmd:linear@feature", lambda x, y: ms.mmd_style_loss(x, y, ms.Linear(), route="feature")),
        ("w2", lambda x, y: ms.gaussian_w2_loss(x, y)),
        ("w2(epsilon=0.01)", lambda x, y: ms.gaussian_w2_loss(x, y, epsilon=0.01)),
        ("cmd", lambda x, y: ms.cmd_loss(x, y)),
        ("cmd(order=3, squash=none)", lambda x, y: ms.cmd_loss(x, y, order=3, squash=None)),
        (
            "0.5*gram + 2*cmd(order=2)",
            lambda x, y: 0.5 * ms.gram_style_loss(x, y) + 2 * ms.cmd_loss(x, y, order=2),
        ),
    ],
)
def test_each_spec_builds_the_loss_it_names(samples, spec, expected):
    x, y = samples
    term = parse_style_spec(spec).build(y)
    np.testing.assert_allclose(term(x, y), expected(x, y), rtol=1e-12)


@pytest.mark.parametrize("spec", ["gram", "bn", "0.5*gram + 2*bn"])
def test_gram_and_bn_terms_read_the_style_once(samples, spec):
    # built from y, a term keeps y's Gram matrix or statistics: the y it is called with later
    # (always the same target in a transfer) is not read again, and no copy of it is kept
    x, y = samples
    term = parse_style_spec(spec).build(y)
    np.testing.assert_array_equal(term(x, y), term(x, 3.0 * y + 1.0))
    assert all(np.shape(leaf) != y.shape for leaf in jax.tree.leaves(term))


@pytest.mark.parametrize("spec", ["mmd:gaussian(sigma=median)", "mmd:energy", "mmd:poly(degree=3, c=1)"])
def test_a_pairwise_term_keeps_the_styles_own_sum(samples, spec):
    # the style's own kernel sum, computed once; the samples themselves come with each call (the
    # objective holds them once: a copy in the term would count twice in the step's memory)
    x, y = samples
    term = parse_style_spec(spec).build(y)
    (mmd_term,) = term.terms
    assert mmd_term.target.samples is None
    assert all(np.shape(leaf) != y.shape for leaf in jax.tree.leaves(term))
    own_sum = pairwise_target(y, mmd_term.kernel).within
    np.testing.assert_allclose(float(mmd_term.target.within), float(own_sum), rtol=1e-15)
    expected = ms.mmd_style_loss(x, y, mmd_term.kernel, route="pairwise")
    np.testing.assert_allclose(float(term(x, y)), float(expected), rtol=1e-12)


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
@pytest.mark.parametrize(
    ("spec", "kernel", "route", "size"),
    [
        ("mmd:(gaussian(sigma=2) + 0.5*linear)@rff(64)", ms.Gaussian(2.0) + 0.5 * ms.Linear(), "rff", 64),
        ("mmd:energy@sliced(16)", ms.Energy(), "sliced", 16),
    ],
)
def test_a_random_route_term_draws_once_from_its_key(samples, estimator, spec, kernel, route, size):
    x, y = samples
    key = jax.random.key(4)
    term = parse_style_spec(spec).build(y, estimator, key)
    sizes = {"num_features": size} if route == "rff" else {"num_directions": size}

    def direct(x):
        # term i of a spec draws from fold_in(key, i)
        return ms.mmd_style_loss(
            x, y, kernel, estimator, route=route, key=jax.random.fold_in(key, 0), **sizes
        )

    # the rff term keeps the style's side from the build (centred on the style's mean instead of
    # the pooled mean: the same value up to float64 rounding)
    np.testing.assert_allclose(term(x, y), direct(x), rtol=1e-10)
    np.testing.assert_allclose(jax.grad(lambda x: term(x, y))(x), jax.grad(direct)(x), rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize(("spec", "count"), [("sw", None), ("0.5*bn + sw(directions=12)", 12)])
def test_a_sliced_wasserstein_term_draws_its_directions_once_from_its_key(samples, spec, count):
    x, y = samples
    key = jax.random.key(5)
    term = parse_style_spec(spec).build(y, key=key)
    index = len(term.terms) - 1  # term i draws from fold_in(key, i), as the random routes do
    directions = sliced_directions(5, y.dtype, key=jax.random.fold_in(key, index), num_directions=count)
    assert directions.shape == (count or 5, 5)  # as many as channels by default
    expected = ms.sliced_wasserstein_loss(x, y, directions=directions)
    np.testing.assert_allclose(term.terms[index](x, y), expected, rtol=1e-12)
    np.testing.assert_allclose(
        term.terms[index](x[:30], y), ms.sliced_wasserstein_loss(x[:30], y, directions=directions), rtol=1e-12
    )
    with pytest.raises(SpecError, match="needs a key"):
        parse_style_spec(spec).build(y)


def test_a_random_route_needs_a_key_and_an_all_pairs_estimator(samples):
    _, y = samples
    with pytest.raises(SpecError, match="needs a key"):
        parse_style_spec("mmd:gaussian@rff").build(y)
    with pytest.raises(SpecError, match="has no random route"):
        parse_style_spec("mmd:gaussian@rff").build(y, "linear", jax.random.key(0))


def test_the_estimator_reaches_every_mmd_term(samples):
    x, y = samples
    term = parse_style_spec("mmd:gaussian(sigma=1)").build(y, "unbiased")
    np.testing.assert_allclose(term(x, y), ms.mmd_style_loss(x, y, ms.Gaussian(1.0), "unbiased"), rtol=1e-12)


def test_gram_with_unequal_sizes_is_its_mmd_form(samples):
    x, y = samples
    term = parse_style_spec("gram").build(y)
    np.testing.assert_allclose(term(x[:30], y), ms.mmd_style_loss(x[:30], y), rtol=1e-12)


kernel_atoms = st.sampled_from(
    [
        "linear",
        "poly2",
        "poly(degree=3)",
        "poly(degree=2, c=0.5, scale=2)",
        "gaussian(sigma=median)",
        "gaussian(sigma=1.5)",
        "laplacian(sigma=mean)",
        "gaussian(sigma=0.25*mean)",
        "gaussian(sigma=median*(0.5,1,2))",
        "laplacian(sigma=(1,2.5))",
        "energy",
    ]
)
kernels = st.recursive(
    kernel_atoms,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "*"]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(st.sampled_from(["0.5", "2", "1e-3"]), inner).map(lambda t: f"{t[0]}*({t[1]})"),
    ),
    max_leaves=4,
)
routes = st.sampled_from(["", "@pairwise"])
losses = st.one_of(
    st.just("gram"),
    st.just("bn"),
    st.just("mmd"),
    st.tuples(kernels, routes).map(lambda t: f"mmd:{t[0]}{t[1]}"),
    st.just("mmd:gaussian(sigma=median)@rff(128)"),
    st.just("mmd:(linear + gaussian)@rff"),
    st.just("mmd:2*energy@sliced(32)"),
    st.sampled_from(["sw", "sw(directions=64)", "w2", "w2(epsilon=0.5)", "cmd(order=3)", "cmd(squash=none)"]),
)
specs = st.lists(st.tuples(st.sampled_from(["", "0.25*", "3*"]), losses), min_size=1, max_size=3).map(
    lambda terms: " + ".join(weight + loss for weight, loss in terms)
)


@settings(max_examples=60, deadline=None)
@given(specs)
def test_printing_and_parsing_round_trip(text):
    spec = parse_style_spec(text)
    assert parse_style_spec(str(spec)) == spec
    assert str(parse_style_spec(str(spec))) == str(spec)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("gaussian", "unknown loss 'gaussian'"),
        ("mmd:gauss", "unknown kernel 'gauss'"),
        ("mmd:poly(deg=2)", "poly takes degree, c, scale, not 'deg'"),
        ("mmd:poly(degree=2.5)", "whole number"),
        ("mmd:gaussian(sigma=0)", "sigma must be > 0"),
        ("mmd:gaussian(sigma=foo)", "sigma must be a number or median or mean"),
        ("mmd:linear(sigma=1)", "linear takes no parameters"),
        ("0*gram", "weight must be a positive number"),
        ("-1*gram", "weight must be a positive number"),
        ("gram +", "expected a name, found the end"),
        ("gram bn", r"unexpected 'bn' \(join terms with '\+'\)"),
        ("mmd:(linear", r"expected '\)', found the end"),
        ("gram; rm -rf /", "unexpected character"),
        ("mmd:gaussian(sigma=median*(1,1))", "must differ"),
        ("mmd:gaussian(sigma=-1*median)", "sigma must be > 0"),
        ("mmd:gaussian@warp", "unknown route 'warp'"),
        ("mmd:gaussian@rff(7)", "must be even"),
        ("mmd:gaussian@rff(2.5)", "whole number"),
        ("mmd:gaussian@pairwise(3)", "takes no size"),
        ("mmd:poly2@rff", "route='rff' cannot take poly2"),
        ("mmd:gaussian@sliced", "route='sliced' cannot take gaussian"),
        ("mmd:energy@feature", "route='feature' needs a kernel"),
        ("mmd:laplacian@rff", "infinite variance"),
        ("sw(direction=3)", r"'direction' is not one of its parameters \(sw takes directions\)"),
        ("sw(directions=0)", "directions must be a whole number >= 1"),
        ("cmd(order=2.5)", "order must be a whole number >= 1"),
        ("cmd(squash=tanh)", "squash must be sigmoid or none"),
        ("w2(epsilon=-1)", "epsilon must be a number >= 0"),
        ("cmd(order=2, order=3)", "'order' is given twice"),
        ("wasserstein", r"unknown loss 'wasserstein' \(use gram, mmd, bn, sw, w2 or cmd\)"),
    ],
)
def test_garbage_is_refused_with_a_pointer(text, message):
    with pytest.raises(SpecError, match=message) as error:
        parse_style_spec(text)
    if text:
        assert "^" in str(error.value)
        assert "Every form of a loss spec: mmdstyle transfer --help" in str(error.value)


def test_the_linear_estimator_pairs_samples_in_a_fixed_shuffled_order(samples):
    x, y = samples
    term = parse_style_spec("mmd:linear").build(y, "linear")
    shuffled = (x[np.random.default_rng(40).permutation(40)], y[np.random.default_rng(40).permutation(40)])
    np.testing.assert_allclose(term(x, y), ms.mmd_style_loss(*shuffled, ms.Linear(), "linear"), rtol=1e-12)
    assert not np.isclose(float(term(x, y)), float(ms.mmd_style_loss(x, y, ms.Linear(), "linear")))


def test_a_data_bandwidth_of_zero_is_explained():
    flat = jnp.ones((10, 3))
    with pytest.raises(SpecError, match="median distance between this layer's style features is 0"):
        parse_style_spec("mmd:gaussian(sigma=median)").build(flat)


# ---------------------------------------------------------------- kernel specs and lists of specs


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linear", ms.Linear()),
        ("poly(degree=3, c=1)", ms.Polynomial(3, c=1.0)),
        ("laplacian(sigma=2)", ms.Laplacian(2.0)),
        ("linear + 0.5*gaussian(sigma=1.5)", ms.Linear() + 0.5 * ms.Gaussian(1.5)),
    ],
)
def test_a_kernel_spec_builds_its_kernel(samples, text, expected):
    x, y = samples
    kernel = parse_kernel_spec(text).build(y)
    np.testing.assert_allclose(kernel(x, y), expected(x, y), rtol=1e-13)
    assert str(parse_kernel_spec(str(parse_kernel_spec(text)))) == str(parse_kernel_spec(text))


def test_a_kernel_spec_with_a_median_bandwidth_takes_it_from_the_samples(samples):
    _, y = samples
    kernel = parse_kernel_spec("gaussian(sigma=median)").build(y)
    np.testing.assert_allclose(kernel.sigma, ms.median_bandwidth(y), rtol=1e-15)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("gram", "unknown kernel"),
        ("linear)", r"unexpected '\)'"),
        ("mmd:linear", "follows 'mmd:'"),
    ],
)
def test_bad_kernel_specs_are_refused_with_a_pointer_to_the_kernel_forms(text, message):
    with pytest.raises(SpecError, match=message) as error:
        parse_kernel_spec(text)
    if text and "mmd" not in text:
        assert "Every form of a kernel spec: mmdstyle test --help" in str(error.value)


@pytest.mark.parametrize(
    ("forms", "parse"), [(LOSS_FORMS, parse_style_spec), (KERNEL_FORMS, parse_kernel_spec)]
)
def test_every_form_the_help_lists_is_a_spec(forms, parse):
    # the listings `--help` shows and spec errors point to: each line's first column is a spec
    # (lines indented further continue the description above them)
    listed = [
        re.split(r"\s{2,}", line.strip())[0] for line in forms.splitlines() if re.match(r" {4}\S", line)
    ]
    assert len(listed) >= 9
    for spec in listed:
        parse(spec)


def test_a_measure_is_a_kernel_or_one_loss_beyond_mmd():
    assert str(parse_measure_spec("gaussian(sigma=median)@rff(64)")) == "gaussian(sigma=median)@rff(64)"
    measure = parse_measure_spec("sw(directions=8)")
    assert isinstance(measure, StyleSpec)
    assert str(measure) == "sw(directions=8)"
    with pytest.raises(SpecError, match="a measure is one loss, not a sum"):
        parse_measure_spec("sw + w2")
    with pytest.raises(SpecError, match="unknown kernel 'bn'"):  # only the losses that are not MMDs
        parse_measure_spec("bn")


def test_lists_of_specs_split_at_commas_outside_parentheses():
    assert split_specs("gram, mmd:poly(degree=3, c=1),bn") == ("gram", "mmd:poly(degree=3, c=1)", "bn")
    assert split_specs("mmd:(linear + gaussian(sigma=1)), ,") == ("mmd:(linear + gaussian(sigma=1))",)
    assert split_specs("") == ()


def test_terms_of_different_kinds_have_different_structures(samples):
    # A structure is a compiled step's cache key: a BN term mistaken for a Gram term (both have no
    # fields) would run the Gram loss's program
    _, y = samples
    specs = ["gram", "bn", "mmd:linear", "mmd:gaussian(sigma=1)", "mmd:laplacian(sigma=1)", "0.5*bn"]
    structures = [jax.tree_util.tree_structure(parse_style_spec(spec).build(y)) for spec in specs]
    for i, first in enumerate(structures):
        for j, second in enumerate(structures):
            assert (first == second) == (i == j), (specs[i], specs[j])


@pytest.mark.parametrize("parse", [parse_kernel_spec, lambda text: parse_style_spec(f"mmd:{text}")])
def test_specs_of_any_depth_get_a_message_not_a_recursion_error(samples, parse):
    x, y = samples
    deepest = "(" * 64 + " + ".join(["linear"] * 64) + ")" * 64  # the limits, reached: still a spec
    kernel = parse_kernel_spec(deepest).build(None)
    np.testing.assert_allclose(ms.mmd2(x, y, kernel), 64 * ms.mmd2(x, y, ms.Linear()), rtol=1e-12)
    for text, problem, position in [
        ("(" * 500 + "linear" + ")" * 500, "parentheses nested more than 64 deep", 65),
        ("*".join(["linear"] * 1000), "more than 64 kernels in one spec", 64 * 7 + 1),
    ]:
        with pytest.raises(SpecError, match=problem) as error:
            parse(text)
        message = str(error.value)
        assert (
            f"at position {position + (4 if message.startswith('cannot read the loss') else 0)}:" in message
        )
        shown, caret = message.splitlines()[1:3]  # the spec around the problem, and a caret under it
        assert len(shown) < 100
        assert shown[caret.index("^")] in "(l"
