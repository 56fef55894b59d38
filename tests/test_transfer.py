"""The transfer engine on a tiny random VGG-19: every loss descends, Gram equals MMD end to end."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

import mmdstyle as ms
from mmdstyle.features import random_vgg19
from mmdstyle.style.engine import flattened, pairwise_route_advice, stage_images, synthesize, transfer
from mmdstyle.style.images import fit_within
from mmdstyle.style.objective import TransferConfig, total_variation
from tests.helpers import count_compilations

WIDTHS = ((4, 4), (8, 8), (8,) * 4, (8,) * 4, (8,) * 4)
LAYERS = ("relu1_1", "relu2_1", "relu3_1")


pytestmark = pytest.mark.usefixtures("standard_dtype_promotion")  # see conftest


@pytest.fixture(scope="module")
def network():
    return random_vgg19(0, widths=WIDTHS)


@pytest.fixture(scope="module")
def network64():
    return random_vgg19(0, widths=WIDTHS, param_dtype=jnp.float64)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:40, 0:40]
    style = np.stack(
        [0.5 + 0.4 * np.sin(xx / 2.0), 0.5 + 0.4 * np.cos(yy / 3.0), 0.5 + 0.4 * np.sin((xx + yy) / 4.0)], -1
    )
    content = rng.uniform(size=(24, 32, 3))
    return content.astype(np.float32), style.astype(np.float32)


def config(**changes) -> TransferConfig:
    base = TransferConfig(size=32, steps=12, chunk=6, style_layers=LAYERS, content_layers=("relu2_2",))
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    "loss",
    [
        "gram",
        "mmd:linear",
        "mmd:poly2",
        "mmd:gaussian(sigma=median)",
        "mmd:laplacian(sigma=mean)",
        "bn",
        "0.5*mmd:linear + 0.5*bn",
        "mmd:gaussian(sigma=median*(0.5,1,2))@rff(64)",
        "mmd:energy@sliced(16)",
        "sw + w2 + cmd",  # one run for the losses beyond MMD: each is tested apart in the core
    ],
)
def test_every_loss_decreases_in_synthesis(network, images, loss):
    # Adam: one compiled evaluation per step (L-BFGS compiles its line search too; it is tested below)
    _, style = images
    settings = config(loss=loss, style_weight=1e4, optimizer="adam", learning_rate=0.05)
    result = synthesize([style], settings, extractor=network, progress=False)
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    assert result.stopped_early is None
    assert last < 0.7 * first, (first, last)


def test_an_unset_style_weight_is_balanced_against_the_gram_loss(network, images):
    _, style = images
    gram = synthesize([style], config(loss="gram", steps=1), extractor=network, progress=False)
    linear = synthesize([style], config(loss="mmd:linear", steps=1), extractor=network, progress=False)
    # a synthesis's loss is beta times the style term: both start at the same loss from the same noise
    np.testing.assert_allclose(linear.history[0]["loss"], gram.history[0]["loss"], rtol=1e-5)
    assert gram.config.style_weight == 1e3  # the Gram loss keeps the extractor's default
    chosen = synthesize(
        [style], config(loss="mmd:linear", steps=1, style_weight=7.0), extractor=network, progress=False
    )
    assert chosen.config.style_weight == 7.0  # a beta that is given is kept


def test_a_run_whose_loss_does_not_move_says_so(network, images):
    content, style = images
    # the content is the start and a vanishing style weight leaves nothing to optimise
    result = transfer(
        content, [style], config(style_weight=1e-30, steps=3), extractor=network, progress=False
    )
    assert result.stopped_early is None
    assert result.stalled is not None
    assert "moved by only" in result.stalled
    moving = synthesize([style], config(steps=3), extractor=network, progress=False)
    assert moving.stalled is None


def test_synthesis_from_noise_reduces_the_style_mmd_by_a_large_factor(network, images):
    _, style = images
    result = synthesize([style], config(steps=60, chunk=20), extractor=network, progress=False)
    before = sum(result.history[0]["style"].values())
    after = sum(result.history[-1]["style"].values())
    assert after < before / 50, (before, after)


def test_transfer_with_adam_and_a_content_term_decreases(network, images):
    content, style = images
    settings = config(optimizer="adam", learning_rate=0.05, steps=20, chunk=10)
    result = transfer(content, [style], settings, extractor=network, progress=False)
    assert result.image.shape == (24, 32, 3)
    assert result.history[-1]["loss"] < result.history[5]["loss"]
    assert set(result.history[0]["content"]) == {"relu2_2"}


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_the_steps_differentiate_the_network_prepared_for_gradients(monkeypatch, network, images, optimizer):
    # VGG19.for_gradients: the input gradients' kernels computed once per run, not per step
    from mmdstyle.features.vgg import VGG19

    prepared, prepare = [], VGG19.for_gradients
    monkeypatch.setattr(
        VGG19, "for_gradients", lambda self, *a: prepared.append(prepare(self, *a)) or prepared[-1]
    )
    content, style = images
    transfer(
        content, [style], config(optimizer=optimizer, steps=2, chunk=2), extractor=network, progress=False
    )
    assert prepared  # a copy of the network, with its twins
    assert all(len(copy.twins) == 16 for copy in prepared)
    assert network.twins is None


def test_gram_and_biased_poly2_mmd_follow_the_same_trajectory(network64, images):
    # float64 end to end: the two losses are equal as functions (docs/math.md), so L-BFGS takes the same
    # steps; the only differences are rounding in two summation orders, ~1e-15 per step
    _, style = images
    run = lambda loss: synthesize(  # noqa: E731
        [style], config(loss=loss, steps=8, chunk=4, dtype="float64"), extractor=network64, progress=False
    )
    gram, mmd = run("gram"), run("mmd:poly2")
    losses = lambda result: np.array([record["loss"] for record in result.history])  # noqa: E731
    np.testing.assert_allclose(losses(mmd), losses(gram), rtol=1e-9)
    np.testing.assert_allclose(mmd.image, gram.image, atol=1e-6)  # images are stored as float32


def test_runs_are_reproducible_and_seeds_matter(network, images):
    _, style = images
    settings = config(steps=6, optimizer="adam")  # the seed matters through the noise it starts from
    first, again, other = (
        synthesize([style], dataclasses.replace(settings, seed=seed), extractor=network, progress=False)
        for seed in (3, 3, 4)
    )
    np.testing.assert_array_equal(first.image, again.image)
    assert not np.allclose(first.image, other.image)


def test_history_records_every_step_and_term(network, images):
    content, style = images
    result = transfer(
        content, [style], config(steps=7, chunk=3, tv_weight=1e-3), extractor=network, progress=False
    )
    assert [record["step"] for record in result.history] == list(range(7))
    record = result.history[3]
    assert set(record["style"]) == set(LAYERS)
    seconds = [r["seconds"] for r in result.history]
    assert seconds == sorted(seconds)
    assert "compile_seconds" in result.history[0]
    # L-BFGS (the default): the first step evaluates its start, then every step searches
    assert result.history[0]["evaluations"] >= 2
    assert all(record["evaluations"] >= 1 for record in result.history)
    weights = 1e3 / 3  # beta * w_l with equal layer weights
    expected = weights * sum(record["style"].values()) + sum(record["content"].values()) + 1e-3 * record["tv"]
    np.testing.assert_allclose(record["loss"], expected, rtol=1e-5)  # float32 sums in another order


def test_a_repeated_run_compiles_nothing(network, images):
    # The step is compiled once per optimiser, settings and shapes in a process: a second run,
    # another style image of the same size (its own median bandwidth, a traced number), another
    # seed, or another stage of the same size finds every program compiled.
    content, style = images
    settings = config(loss="mmd:gaussian(sigma=median)", steps=3, chunk=3, optimizer="adam")
    transfer(content, [style], settings, extractor=network, progress=False)
    other_style = np.ascontiguousarray(style[::-1, ::-1])
    with count_compilations() as compiled:
        again = transfer(
            content, [other_style], dataclasses.replace(settings, seed=5), extractor=network, progress=False
        )
        two_stages = transfer(
            content,
            [style],
            dataclasses.replace(settings, scales=(32, 32)),
            extractor=network,
            progress=False,
        )
    assert compiled[0] == 0
    # a cached step is looked up in about a millisecond; compiling this one takes over a second
    assert again.history[0]["compile_seconds"] < 0.1
    assert two_stages.history[0]["compile_seconds"] < 0.1


def test_the_compiled_step_follows_the_settings(network, images):
    # What changes the program (the optimiser, a loss) compiles a new step; the weights do not.
    # A size no other test runs at, so that no test in this process has compiled these programs
    # (clearing JAX's caches instead would make every later test on this worker compile again).
    content, style = images
    settings = config(size=20, steps=2, chunk=2, optimizer="adam")
    transfer(content, [style], settings, extractor=network, progress=False)
    reweighted = dataclasses.replace(
        settings, style_weight=3.0, content_weight=0.5, style_layer_weights=(1.0, 2.0, 3.0)
    )
    with count_compilations() as compiled:
        transfer(content, [style], reweighted, extractor=network, progress=False)
    assert compiled[0] == 0
    for changed in (
        dataclasses.replace(settings, optimizer="lbfgs"),
        dataclasses.replace(settings, loss="bn"),
    ):
        with count_compilations() as compiled:
            result = transfer(content, [style], changed, extractor=network, progress=False)
        assert compiled[0] > 0
        # the step itself was compiled, not looked up (about a millisecond, as in the test above)
        assert result.history[0]["compile_seconds"] > 0.1, result.history[0]["compile_seconds"]
        with count_compilations() as compiled:  # L-BFGS's host loop too runs compiled programs only
            transfer(
                content,
                [style],
                dataclasses.replace(changed, style_weight=7.0),
                extractor=network,
                progress=False,
            )
        assert compiled[0] == 0


def test_a_pyramid_runs_each_scale_from_the_previous(network, images):
    content, style = images
    settings = config(scales=(16, 32), steps=4, chunk=4, optimizer="adam")
    result = transfer(content, [style], settings, extractor=network, progress=False)
    assert result.image.shape == (24, 32, 3)
    assert [record["stage"] for record in result.history] == [0] * 4 + [1] * 4


def test_several_styles_blend_and_style_scale_resizes(network, images):
    content, style = images
    result = transfer(
        content,
        [style, style[::-1]],
        config(style_blend_weights=(3.0, 1.0), style_scale=0.5, steps=4),
        extractor=network,
        progress=False,
    )
    assert result.stopped_early is None


def test_original_colors_keep_the_contents_chroma(network, images):
    content, style = images
    result = transfer(
        content, [style], config(original_colors=True, steps=4), extractor=network, progress=False
    )
    yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    chroma = lambda image: (image.astype(np.float64) @ yiq.T)[..., 1:]  # noqa: E731
    inside = (result.image > 0.01).all(-1) & (result.image < 0.99).all(-1)  # clipping changes chroma
    np.testing.assert_allclose(chroma(result.image)[inside], chroma(content)[inside], atol=5e-6)


def test_a_loss_that_overflows_stops_the_run_and_keeps_the_last_good_image(network, images):
    content, style = images
    settings = config(optimizer="adam", learning_rate=1e30, steps=6, chunk=3)
    result = transfer(content, [style], settings, extractor=network, progress=False)
    assert result.stopped_early is not None
    assert "the last with a finite loss" in result.stopped_early
    assert np.all(np.isfinite(result.image))
    np.testing.assert_allclose(result.image, np.clip(content, 0, 1), atol=1e-6)  # the start of the chunk


def test_an_lbfgs_run_whose_gradient_is_not_finite_stops_and_says_why():
    def kinked(image, layers):  # |image - 0.5| as sqrt((image - 0.5)^2): NaN gradient at 0.5
        return {"rgb": jnp.sqrt((jnp.asarray(image) - 0.5) ** 2)}

    target = np.zeros((16, 16, 3), np.float32)
    settings = TransferConfig(
        size=16, steps=5, style_layers=("rgb",), content_layers=("rgb",), init=np.full((16, 16, 3), 0.5)
    )
    result = transfer(target, [target], settings, extractor=kinked, progress=False)
    assert "gradient is not finite" in result.stopped_early
    assert len(result.history) == 1
    np.testing.assert_array_equal(result.image, np.full((16, 16, 3), 0.5, np.float32))


def test_a_loss_that_turns_nan_mid_chunk_keeps_the_image_just_before():
    target = np.zeros((24, 32, 3), np.float32)
    target[:, 16:] = 0.9  # mean square 0.405: pulls a flat 0.3 image up

    def fragile(image, layers):  # NaN once every pixel is above 0.35 (never for the target)
        image = jnp.asarray(image)
        return {"rgb": jnp.where(jnp.min(image) > 0.35, jnp.nan, 1.0) * image}

    settings = TransferConfig(
        size=32,
        steps=20,
        chunk=10,
        style_layers=("rgb",),
        content_layers=("rgb",),
        content_weight=0.0,
        optimizer="adam",
        learning_rate=0.02,
        init=np.full((24, 32, 3), 0.3, np.float32),
    )
    result = transfer(target, [target], settings, extractor=fragile, progress=False)
    bad = len(result.history) - 1  # Adam moves every pixel by ~0.02 a step: NaN from step 3
    assert 1 < bad < 10
    assert not np.isfinite(result.history[-1]["loss"])
    assert np.isfinite(result.history[-2]["loss"])
    assert f"from step {bad - 1}," in result.stopped_early
    assert 0.3 < result.image.min() <= 0.35


def test_synthesis_can_start_from_an_image(network, images):
    _, style = images
    start = np.full((40, 40, 3), 0.5, np.float32)
    result = synthesize([style], config(steps=2, init=start), extractor=network, progress=False)
    assert result.history[0]["tv"] == 0.0  # a flat start has no variation


def test_total_variation_is_the_sum_of_squared_neighbour_differences():
    image = jnp.asarray(np.arange(12, dtype=np.float64).reshape(2, 2, 3))
    # vertical differences are 6 (12 of them over 2x... ), horizontal 3
    assert float(total_variation(image)) == pytest.approx(6 * 36 + 6 * 9)


@pytest.mark.usefixtures("as_a_user")
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"optimizer": "sgd"}, "optimizer must be one of"),
        ({"steps": 0}, "steps must be a positive integer"),
        ({"size": 8}, ">= 16"),
        ({"style_weight": -1.0}, "style_weight must be a finite number >= 0"),
        ({"style_layer_weights": (1.0,)}, "one weight >= 0 per style layer"),
        ({"layer_losses": {"relu9_9": "bn"}}, "not style layers"),
        ({"style_layers": ("relu1_1", "fc7")}, r"unknown layer name\(s\) \['fc7'\]"),
        ({"style_blend_weights": (1.0, 2.0)}, "one weight >= 0 per style image"),
        ({"loss": "mmd:gauss"}, "unknown kernel"),
        ({"style_layers": ()}, "at least one layer"),
        ({"style_layers": ("relu1_1", "relu1_1")}, "each layer once"),
        ({"seed": -1}, "seed must be a whole number >= 0"),
        ({"learning_rate": 0.0}, "learning_rate must be a finite number > 0"),
        ({"chunk": 0}, "chunk must be a positive integer"),
        ({"min_progress": 1.0}, "min_progress must be below 1"),
        ({"min_progress": float("nan")}, "min_progress must be a finite number >= 0"),
        ({"style_layer_weights": (1.0, float("nan"), 1.0)}, "one weight >= 0 per style layer"),
        ({"original_colors": True, "init": "noise"}, None),
    ],
)
def test_bad_settings_are_explained(network, images, changes, message):
    content, style = images
    if message is None:  # original colours without a content image
        with pytest.raises(ValueError, match="needs a content image"):
            synthesize([style], config(**changes), extractor=network, progress=False)
        return
    with pytest.raises(ValueError, match=message):
        transfer(content, [style], config(**changes), extractor=network, progress=False)


def test_a_run_too_large_for_memory_is_refused_with_a_size_that_fits(network, images, monkeypatch):
    # memory enough for the bound from shapes, not for the compiled step: its exact check refuses
    from mmdstyle.style import engine

    content, style = images
    settings = engine.with_default_weights(config(), network)
    shape, style_shape = fit_within(content.shape[:2], 32), fit_within(style.shape[:2], 32)
    least = engine.least_memory(settings, network, shape, [style_shape], synthesis=False)
    monkeypatch.setattr(engine, "available_memory", lambda: int(least / 0.9) + 1)
    with pytest.raises(MemoryError, match=r"needs about .* MiB .* Use a size of about \d+ pixels"):
        transfer(content, [style], settings, extractor=network, progress=False)


def test_a_users_own_extractor_works(images):
    _, style = images

    def colours(image, layers):
        image = jnp.asarray(image)
        return {"rgb": image, "edges": image[1:] - image[:-1]}

    result = synthesize(
        [style],
        TransferConfig(size=24, steps=5, style_layers=("rgb", "edges")),
        extractor=colours,
        progress=False,
    )
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert ms.gram_style_loss  # the package's losses, the user's features


def test_a_large_layer_on_the_exact_pairwise_route_gets_advice(network, images):
    _, style = images

    def advice(loss, size):
        settings = config(loss=loss, size=size)
        _, styles, shape = stage_images(settings, None, [style], size)
        return pairwise_route_advice(settings, network, (*shape, 3), [image.shape for image in styles])

    # relu1_1 at 136 px: 18,496 positions, over the 16,384 that call for a word
    assert "@rff(1024)" in advice("mmd:gaussian(sigma=median)", 136)
    assert advice("mmd:gaussian(sigma=median)", 120) is None  # 14,400 positions
    assert advice("mmd:gaussian(sigma=median)@rff(64)", 136) is None
    assert advice("gram", 136) is None


@pytest.mark.parametrize("loss", ["mmd:gaussian(sigma=median)@rff(64)", "sw"])
def test_random_routes_redraw_every_n_steps(network, images, loss):
    _, style = images
    settings = config(loss=loss, steps=4, chunk=2, style_weight=1e4)
    fixed = synthesize([style], settings, extractor=network, progress=False)
    redrawn = synthesize(
        [style], dataclasses.replace(settings, redraw_every=2), extractor=network, progress=False
    )
    losses = [[record["loss"] for record in result.history] for result in (fixed, redrawn)]
    assert [record["step"] for record in redrawn.history] == [0, 1, 2, 3]
    assert losses[0][:2] == losses[1][:2]  # the first draw is the same
    assert losses[0][2] != losses[1][2]  # then new frequencies (directions): another objective
    with pytest.raises(ValueError, match="redraws the frequencies"):
        synthesize([style], config(redraw_every=2), extractor=network, progress=False)


def test_a_layers_style_loss_is_its_override_else_the_loss():
    settings = TransferConfig(loss="mmd:linear", layer_losses={"relu1_1": "bn"})
    assert str(settings.style_spec("relu1_1")) == "bn"
    assert str(settings.style_spec("relu2_1")) == "mmd:linear"


def test_a_stop_request_ends_the_run_after_the_step_it_follows(network, images):
    # what the command line's Ctrl-C uses: asked after every step, here True from the third on
    content, style = images
    asked = iter(range(1000))
    settings = config(steps=10, chunk=10, optimizer="adam")
    result = transfer(
        content, [style], settings, extractor=network, progress=False, stop=lambda: next(asked) >= 2
    )
    assert [record["step"] for record in result.history] == [0, 1, 2]
    assert result.stopped_early == "stopped on request after step 2"
    whole = transfer(
        content, [style], dataclasses.replace(settings, steps=3), extractor=network, progress=False
    )
    np.testing.assert_array_equal(result.image, whole.image)  # the image that the third step reached
    assert whole.stopped_early is None


@pytest.mark.parametrize(
    ("losses", "flat"),
    [
        ([10.0] * 10, False),  # not 10 steps to compare over yet
        ([10.0] * 11, True),
        ([10.0] + [9.0] * 10, False),  # fell by 10 % over the last 10 steps
        ([10.0] + [9.0] * 11, True),  # by 0 over these
        ([10.0, *[9.99] * 10], True),  # by 0.1 %: less than 1 %
        ([10.0, *[11.0] * 10], True),  # rose
        ([-10.0, *[-10.2] * 10], False),  # fell by 2 % of a negative loss's size
    ],
)
def test_a_flat_loss_is_a_fall_below_min_progress_over_the_window(losses, flat):
    history = [{"loss": loss} for loss in losses]
    assert flattened(history, 0.01) is flat
    assert not flattened(history, 0.0)  # 0: never


def test_a_stage_ends_early_on_a_flat_loss_and_says_so(network, images):
    # with min_progress 0.99 no run falls fast enough: the first check, after 15 steps (chunks of
    # 5, a window of 10), ends each stage; a pyramid starts its next stage afresh
    content, style = images
    settings = config(scales=(16, 32), steps=40, chunk=5, optimizer="adam", min_progress=0.99)
    result = transfer(content, [style], settings, extractor=network, progress=False)
    assert [record["step"] for record in result.history] == [*range(15), *range(40, 55)]
    assert [record["step"] for record in result.history if record.get("flat")] == [14, 54]
    assert result.stopped_early is None
    assert "ended early, after step 14, step 54 (40 steps per stage)" in result.flat
    every_step = transfer(
        content, [style], dataclasses.replace(settings, min_progress=0.0), extractor=network, progress=False
    )
    assert len(every_step.history) == 80
    assert every_step.flat is None


def test_the_progress_bar_ticks_every_step_and_shows_the_stages_size(network, images, monkeypatch):
    from mmdstyle.style import engine

    calls = []

    class Bar:
        def update(self, count):
            calls.append(("update", count))

        def set_postfix(self, **shown):
            calls.append(("postfix", shown))

        def close(self):
            pass

    monkeypatch.setattr(engine, "progress_bar", lambda **options: Bar())
    content, style = images
    settings = config(steps=3, chunk=2, optimizer="adam", scales=(16, 32))
    transfer(content, [style], settings, extractor=network, progress=True)
    sizes = [shown["size"] for kind, shown in calls if kind == "postfix"]
    assert [kind for kind, _ in calls[:4]] == ["postfix", "update", "update", "postfix"]  # a tick per step
    assert sum(count for kind, count in calls if kind == "update") == 6
    assert calls[0] == ("postfix", {"size": 16})  # each stage's size, before any loss
    assert ("postfix", {"size": 32}) in calls
    assert sizes == sorted(sizes)


def test_a_run_that_cannot_fit_is_refused_from_shapes_before_any_work(network, images, monkeypatch):
    from mmdstyle.style import engine

    content, style = images
    settings = engine.with_default_weights(config(size=32, steps=1), network)
    shape, style_shape = fit_within(content.shape[:2], 32), fit_within(style.shape[:2], 32)
    needed = engine.least_memory(settings, network, shape, [style_shape], synthesis=False)
    # at least the activations of the image through every layer up to relu5_1 (float32), and more
    maps = network(jnp.zeros((*shape, 3)), network.layer_names[: network.layer_names.index("relu5_1") + 1])
    assert needed > 4 * sum(feature.size for feature in maps.values())
    monkeypatch.setattr(engine, "available_memory", lambda: needed)  # 90 % of it is all a run may take
    monkeypatch.setattr(engine, "stage_images", None)  # nothing may be resized: it would fail here
    expected = rf"a {shape[0]} x {shape[1]} image needs at least .* MiB .* Use a size below 24 pixels"
    with pytest.raises(MemoryError, match=expected):
        transfer(content, [style], settings, extractor=network, progress=False)


@pytest.mark.parametrize(
    ("loss", "kept"),
    [
        ("0.5*gram + 0.5*bn", False),
        ("mmd:energy@sliced(8)", False),
        ("mmd:gaussian(sigma=median)@rff(16)", False),
        ("mmd:(linear + gaussian(sigma=median))@rff(16)", True),  # its exact linear part reads y
        ("mmd:gaussian(sigma=median)", True),  # pairwise: the cross sum
        ("0.5*gram + 0.5*mmd:linear", True),  # the feature route
    ],
)
def test_the_objective_keeps_the_style_samples_only_where_a_term_reads_them(network, images, loss, kept):
    from mmdstyle.style.objective import Objective

    content, style = images
    settings = config(loss=loss, style_layers=("relu1_1", "relu2_1"))
    objective = Objective(settings, network, None, [style])
    for layer in settings.style_layers:
        (samples,) = objective.targets["style"][layer]
        assert (samples.shape[0] > 0) == kept, (loss, samples.shape)
        assert samples.shape[1] == network(style[:8, :8], [layer])[layer].shape[-1]
    # and the terms are what they were: the loss at an image as with the samples kept
    maps = network(jnp.asarray(content), list(settings.style_layers))
    for layer in settings.style_layers:
        (term,) = objective.terms[layer]
        full = ms.as_samples(network(jnp.asarray(style), [layer])[layer])
        np.testing.assert_allclose(
            term(ms.as_samples(maps[layer]), objective.targets["style"][layer][0]),
            term(ms.as_samples(maps[layer]), full),
            rtol=1e-6,
        )


def test_the_losses_beyond_mmd_read_only_their_targets():
    from mmdstyle.style import specs

    beyond = (specs.SlicedWassersteinTerm, specs.GaussianW2Term, specs.CMDTerm)
    for term in (specs.GramTerm, specs.BNTerm, *beyond):
        assert term.reads_samples is False, term
    assert specs.reads_samples(lambda x, y: 0.0)  # a user's own term is assumed to read them
