"""VGG-19 in Flax NNX: layer names, a NumPy reference forward pass, loading every file format, torch."""

from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from mmdstyle.features import (
    GATYS_STYLE_LAYERS,
    VGG19,
    VGG19_CONVOLUTIONS,
    VGG19_LAYERS,
    CheckpointError,
    ChecksumError,
    ExtractorArgument,
    jitted_extractor,
    load_vgg19,
    preprocess,
    random_vgg19,
    sha256_of,
)
from mmdstyle.features.vgg import TORCHVISION_INDEX
from tests import torch_format
from tests.helpers import max_norm_relative_error

TINY_WIDTHS = ((4, 4), (6, 6), (8, 8, 8, 8), (8, 8, 8, 8), (10, 10, 10, 10))


def tiny_state_dict(rng: np.random.Generator, widths=TINY_WIDTHS) -> dict[str, np.ndarray]:
    """A torchvision-named VGG-19 state dict of narrow widths, with a classifier to be ignored."""
    channels = [3] + [width for block in widths for width in block]
    state = {}
    for name, inputs, outputs in zip(VGG19_CONVOLUTIONS, channels[:-1], channels[1:], strict=True):
        scale = np.sqrt(2.0 / (9 * inputs))
        state[f"features.{TORCHVISION_INDEX[name]}.weight"] = rng.normal(
            0, scale, (outputs, inputs, 3, 3)
        ).astype(np.float32)
        state[f"features.{TORCHVISION_INDEX[name]}.bias"] = rng.normal(0, 0.1, outputs).astype(np.float32)
    state["classifier.0.weight"] = rng.normal(size=(5, 7)).astype(np.float32)
    return state


def reference_forward(state, image, *, pooling="max", padding="zero", preprocessing="torchvision"):
    """VGG-19 written out in float64 NumPy: padding, 3 x 3 windows and an einsum per convolution.

    Independent of the package and of XLA (nothing to compile): the preprocessing constants are
    the publishers' (torchvision's ImageNet statistics, the Caffe VGG mean pixel in BGR).
    """
    x = np.asarray(image, np.float64)
    if preprocessing == "torchvision":
        x = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    elif preprocessing == "caffe":
        x = x[..., ::-1] * 255.0 - np.array([103.939, 116.779, 123.68])
    outputs = {}
    convolution = 0
    for name in VGG19_LAYERS:
        if name.startswith("conv"):
            stem = f"features.{TORCHVISION_INDEX[VGG19_CONVOLUTIONS[convolution]]}"
            kernel = np.asarray(state[f"{stem}.weight"], np.float64)  # (out, in, 3, 3)
            mode = "reflect" if padding == "reflect" else "constant"
            padded = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode=mode)
            windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(0, 1))  # h, w, in, 3, 3
            x = np.einsum("hwcij,ocij->hwo", windows, kernel) + np.asarray(state[f"{stem}.bias"], np.float64)
            convolution += 1
        elif name.startswith("relu"):
            x = np.maximum(x, 0.0)
        else:
            h, w, c = x.shape
            blocks = x[: h // 2 * 2, : w // 2 * 2].reshape(h // 2, 2, w // 2, 2, c)
            x = blocks.max(axis=(1, 3)) if pooling == "max" else blocks.mean(axis=(1, 3))
        outputs[name] = x
    return outputs


def features(model, image, layers):
    """The model's maps, computed in one compiled program (eager dispatch compiles every op)."""
    return jitted_extractor(ExtractorArgument(model), jnp.asarray(image), tuple(layers))


@pytest.fixture(scope="module")
def state():
    return tiny_state_dict(np.random.default_rng(7))


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(8).uniform(size=(37, 42, 3))  # odd sizes: pooling rounds down


def test_layer_names_follow_the_literature():
    assert len(VGG19_CONVOLUTIONS) == 16
    assert VGG19_LAYERS[:5] == ("conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1")
    assert VGG19_LAYERS[-3:] == ("conv5_4", "relu5_4", "pool5")
    assert len(VGG19_LAYERS) == 16 * 2 + 5
    assert [TORCHVISION_INDEX[name] for name in ("conv1_1", "conv2_1", "conv5_4")] == [0, 5, 34]


@pytest.mark.parametrize(
    ("pooling", "padding", "preprocessing"),
    [("max", "zero", "torchvision"), ("average", "reflect", "caffe"), ("average", "zero", "none")],
)
def test_every_layer_matches_a_numpy_reference(tmp_path, state, image, pooling, padding, preprocessing):
    # float64 weights and image: the network and the reference differ only in summation order
    path = tmp_path / "tiny.safetensors"
    save_file(state, str(path))
    model = load_vgg19(
        path, pooling=pooling, padding=padding, preprocessing=preprocessing, param_dtype=jnp.float64
    )
    expected = reference_forward(state, image, pooling=pooling, padding=padding, preprocessing=preprocessing)
    outputs = features(model, image, VGG19_LAYERS)
    assert set(outputs) == set(VGG19_LAYERS)
    for name in VGG19_LAYERS:
        assert outputs[name].shape == expected[name].shape, name
        assert max_norm_relative_error(outputs[name], expected[name]) < 1e-12, name


def test_float32_network_matches_the_reference_to_1e_5(tmp_path, state, image):
    # float32 rounding through 16 convolutions of <= 90 terms each stays far below 1e-5 relative
    path = tmp_path / "tiny.npz"
    np.savez(path, **state)
    model = load_vgg19(path)
    expected = reference_forward(state, image)
    outputs = features(model, image.astype(np.float32), ("relu1_1", "relu3_1", "relu5_1", "pool5"))
    for name, value in outputs.items():
        assert value.dtype == jnp.float32
        assert max_norm_relative_error(value, expected[name]) < 1e-5, name


@pytest.mark.parametrize("writer", ["zip", "zip-shared-transposed", "legacy", "npz", "safetensors", "timm"])
def test_every_file_format_loads_the_same_network(tmp_path, state, image, writer):
    path = tmp_path / "weights.bin"
    if writer == "zip":
        torch_format.save_zip(path, state)
    elif writer == "zip-shared-transposed":
        torch_format.save_zip(path, state, share_storage=True, transpose_keys={"features.0.weight"})
    elif writer == "legacy":
        torch_format.save_legacy(path, state)
    elif writer == "npz":
        with open(path, "wb") as file:  # np.savez would append .npz to a path
            np.savez(file, **{f"module.{key}": value for key, value in state.items()})
    elif writer == "safetensors":
        save_file({f"vgg.{key}": value for key, value in state.items()}, str(path))
    else:  # timm's names: features.N as torchvision, a pre_logits head to ignore
        save_file({**state, "pre_logits.fc1.weight": np.zeros((2, 10, 7, 7), np.float32)}, str(path))
    path = path.rename(path.with_suffix(".whatever"))  # the format is read from the bytes, not the name
    model = load_vgg19(path, param_dtype=jnp.float64)
    outputs = features(model, image, ("relu2_1", "pool3"))
    expected = reference_forward(state, image)
    for name, value in outputs.items():
        assert max_norm_relative_error(value, expected[name]) < 1e-12, name


def test_layer_names_of_mmdstyle_are_accepted(tmp_path, state, image):
    renamed = {}
    for name in VGG19_CONVOLUTIONS:
        stem = f"features.{TORCHVISION_INDEX[name]}"
        renamed[f"{name}.weight"], renamed[f"{name}.bias"] = state[f"{stem}.weight"], state[f"{stem}.bias"]
    np.savez(tmp_path / "named.npz", **renamed)
    model = load_vgg19(tmp_path / "named.npz", param_dtype=jnp.float64)
    assert (
        max_norm_relative_error(
            features(model, image, ("relu4_4",))["relu4_4"], reference_forward(state, image)["relu4_4"]
        )
        < 1e-12
    )


def test_nothing_past_the_deepest_requested_layer_is_computed():
    model = random_vgg19(widths=TINY_WIDTHS)
    image = jnp.zeros((32, 32, 3), jnp.float32)

    def convolutions(layers):
        text = str(jax.make_jaxpr(lambda x: model(x, layers))(image))
        return text.count("conv_general_dilated")

    assert convolutions(("relu1_1",)) == 1
    assert convolutions(("conv2_1", "relu1_2")) == 3
    assert convolutions(("relu3_1", "pool2")) == 5
    assert convolutions(("pool5",)) == 16


def test_batch_and_single_image_agree(state, tmp_path, image):
    save_file(state, str(tmp_path / "w.safetensors"))
    model = load_vgg19(tmp_path / "w.safetensors", param_dtype=jnp.float64)
    batch = jnp.stack([jnp.asarray(image), jnp.asarray(image[::-1])])
    together = features(model, batch, ("relu3_2",))["relu3_2"]
    alone = features(model, image[::-1], ("relu3_2",))["relu3_2"]
    assert together.shape[0] == 2
    np.testing.assert_allclose(together[1], alone, rtol=1e-12, atol=1e-12)


def test_jit_value_and_gradient_with_respect_to_the_image():
    model = random_vgg19(widths=TINY_WIDTHS)
    image = jnp.asarray(np.random.default_rng(0).uniform(size=(32, 32, 3)), jnp.float32)

    @jax.jit
    def loss(image, model):
        return sum(jnp.mean(value**2) for value in model(image, GATYS_STYLE_LAYERS).values())

    value, gradient = jax.value_and_grad(loss)(image, model)
    eager = sum(jnp.mean(v**2) for v in features(model, image, GATYS_STYLE_LAYERS).values())
    assert gradient.shape == image.shape
    assert bool(jnp.all(jnp.isfinite(gradient)))
    assert float(jnp.abs(gradient).max()) > 0
    # jit fuses and reorders float32 sums; agreement to ~1e-6 relative is all that rounding allows
    np.testing.assert_allclose(value, eager, rtol=1e-5)


def test_random_vgg19_is_the_same_for_a_seed_and_differs_across_seeds():
    first, again, other = (random_vgg19(seed, widths=TINY_WIDTHS) for seed in (0, 0, 1))
    kernel = lambda model: np.asarray(model.convolutions[3].kernel[...])  # noqa: E731
    np.testing.assert_array_equal(kernel(first), kernel(again))
    assert not np.allclose(kernel(first), kernel(other))
    assert first.pooling == "average"


def test_real_vgg19_widths_by_default():
    model = random_vgg19()
    shapes = [convolution.kernel.shape for convolution in model.convolutions]
    assert shapes[0] == (3, 3, 3, 64)
    assert shapes[-1] == (3, 3, 512, 512)
    assert sum(np.prod(shape) + shape[-1] for shape in shapes) == 20_024_384  # torchvision's conv parameters


@pytest.mark.usefixtures("as_a_user")
@pytest.mark.parametrize(
    ("image", "layers", "message"),
    [
        (np.zeros((32, 32)), ("relu1_1",), r"shape \(height, width, 3\)"),
        (np.zeros((32, 32, 4)), ("relu1_1",), "RGB"),
        (np.zeros((32, 32, 3), np.uint8), ("relu1_1",), "divide 8-bit images by 255"),
        (np.zeros((32, 32, 3)), ("relu6_1",), "unknown layer"),
        (np.zeros((32, 32, 3)), (), "at least one layer"),
        (np.zeros((15, 64, 3)), ("pool4",), "at least 16 pixels"),
        (np.zeros((31, 64, 3)), ("pool5",), "at least 32 pixels"),
    ],
)
def test_bad_input_is_explained(image, layers, message):
    model = random_vgg19(widths=TINY_WIDTHS)
    with pytest.raises(ValueError, match=message):
        model(image, layers)


@pytest.mark.usefixtures("as_a_user")
def test_bad_options_and_files_are_explained(tmp_path, state):
    with pytest.raises(ValueError, match="pooling must be one of"):
        VGG19(pooling="min")
    with pytest.raises(ValueError, match="widths must give"):
        VGG19(widths=((4,), (4, 4)))
    with pytest.raises(FileNotFoundError, match="mmdstyle weights download"):
        load_vgg19(tmp_path / "absent.pth")
    vgg16_like = {key: value for key, value in state.items() if not key.startswith("features.34")}
    np.savez(tmp_path / "partial.npz", **vgg16_like)
    with pytest.raises(CheckpointError, match=r"not a VGG-19 state dict, missing features\.34"):
        load_vgg19(tmp_path / "partial.npz")
    broken = dict(state)
    broken["features.2.weight"] = np.zeros((4, 5, 3, 3), np.float32)  # 5 inputs after a 4-channel layer
    np.savez(tmp_path / "broken.npz", **broken)
    with pytest.raises(ValueError, match="conv1_2: expected a kernel of shape"):
        load_vgg19(tmp_path / "broken.npz")


def test_expected_hash_is_checked(tmp_path, state):
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    load_vgg19(path, sha256=sha256_of(path))
    with pytest.raises(ChecksumError, match=f"{path}.*expected {'0' * 64}"):
        load_vgg19(path, sha256="0" * 64)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
@pytest.mark.parametrize(("pooling", "padding"), [("max", "zero"), ("average", "reflect")])
def test_forward_matches_torch_on_the_same_weights(tmp_path, state, image, pooling, padding):
    import torch

    layers = []
    convolution = 0
    for name in VGG19_LAYERS:
        if name.startswith("conv"):
            stem = f"features.{TORCHVISION_INDEX[VGG19_CONVOLUTIONS[convolution]]}"
            weight = torch.from_numpy(state[f"{stem}.weight"]).double()
            conv = torch.nn.Conv2d(
                weight.shape[1],
                weight.shape[0],
                3,
                padding=1,
                padding_mode=("reflect" if padding == "reflect" else "zeros"),
            ).double()
            conv.weight.data, conv.bias.data = weight, torch.from_numpy(state[f"{stem}.bias"]).double()
            layers.append(conv)
            convolution += 1
        elif name.startswith("relu"):
            layers.append(torch.nn.ReLU())
        else:
            layers.append(torch.nn.MaxPool2d(2) if pooling == "max" else torch.nn.AvgPool2d(2))
    network = torch.nn.Sequential(*layers)
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64)[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64)[:, None, None]
    batch = (torch.from_numpy(image).permute(2, 0, 1)[None] - mean) / std
    with torch.no_grad():
        expected = network(batch)[0].permute(1, 2, 0).numpy()

    torch.save(
        {key: torch.from_numpy(value) for key, value in state.items()}, tmp_path / "torch.pth"
    )  # torch's own writer, read back without torch
    model = load_vgg19(tmp_path / "torch.pth", pooling=pooling, padding=padding, param_dtype=jnp.float64)
    assert max_norm_relative_error(features(model, image, ("pool5",))["pool5"], expected) < 1e-12


def test_a_file_named_as_torchvisions_is_checked_against_the_published_hash(tmp_path, state):
    path = tmp_path / "vgg19-dcbb9e9d.pth"  # right name, other bytes: a tampered or truncated download
    torch_format.save_legacy(path, state)
    with pytest.raises(ChecksumError, match=r"vgg19-dcbb9e9d\.pth has SHA-256 .*expected dcbb9e9dad569fff"):
        load_vgg19(path)


@pytest.mark.parametrize(
    ("side", "layer", "padding", "output"),
    [
        (16, "pool4", "zero", 1),
        (16, "relu5_4", "zero", 1),
        (32, "pool5", "zero", 1),
        (32, "relu5_4", "reflect", 2),
    ],
)
def test_the_smallest_allowed_images_work(side, layer, padding, output):
    model = random_vgg19(widths=TINY_WIDTHS, padding=padding)
    value = features(model, np.zeros((side, side, 3), np.float32), (layer,))[layer]
    assert value.shape[:2] == (output, output)


@pytest.mark.usefixtures("as_a_user")
def test_reflection_needs_two_pixels_at_every_convolution():
    with pytest.raises(ValueError, match="at least 32 pixels"):
        random_vgg19(widths=TINY_WIDTHS, padding="reflect")(np.zeros((16, 16, 3)), ("relu5_1",))


def test_preprocessing_constants_are_the_published_ones():
    pixel = jnp.asarray([[[1.0, 0.5, 0.0]]])  # R, G, B
    # torchvision: (x - mean) / std per RGB channel
    expected = [(1.0 - 0.485) / 0.229, (0.5 - 0.456) / 0.224, (0.0 - 0.406) / 0.225]
    np.testing.assert_allclose(preprocess(pixel, "torchvision")[0, 0], expected, rtol=1e-12)
    # caffe: BGR order, 0-255, minus the VGG mean pixel B 103.939, G 116.779, R 123.68
    expected = [0.0 - 103.939, 127.5 - 116.779, 255.0 - 123.68]
    np.testing.assert_allclose(preprocess(pixel, "caffe")[0, 0], expected, rtol=1e-12)
    np.testing.assert_array_equal(preprocess(pixel, "none"), pixel)


def test_max_pooling_differentiates_as_reduce_window_and_shares_ties():
    from mmdstyle.features.vgg import _pool

    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 9, 10, 3)))  # odd height: a row dropped
    weights = jnp.asarray(np.random.default_rng(4).normal(size=(2, 4, 5, 3)))
    window = (1, 2, 2, 1)

    def reference(x):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, window, "VALID")

    np.testing.assert_array_equal(_pool(x, "max"), reference(x))
    np.testing.assert_array_equal(
        jax.grad(lambda x: jnp.sum(_pool(x, "max") * weights))(x),
        jax.grad(lambda x: jnp.sum(reference(x) * weights))(x),
    )
    # a block of equal maxima shares the gradient (PyTorch gives it all to the first)
    tied = jax.grad(lambda x: jnp.sum(_pool(x, "max")))(jnp.ones((1, 2, 2, 1)))
    np.testing.assert_array_equal(tied, np.full((1, 2, 2, 1), 0.25))


@pytest.mark.parametrize("padding", ["zero", "reflect"])
def test_prepared_for_gradients_it_computes_the_same_values_and_gradients(padding):
    # the input gradient through the precomputed kernel twins, the kernels' own gradients through
    # the convolution's: all as the network itself computes them (float64, to rounding)
    widths = ((4, 4), (6, 6), (8,) * 4, (8,) * 4, (8,) * 4)
    network = random_vgg19(0, padding=padding, widths=widths, param_dtype=jnp.float64)
    prepared = network.for_gradients()
    assert network.twins is None  # the original is left as it was
    assert len(prepared.twins) == 16
    image = jnp.asarray(np.random.default_rng(9).uniform(size=(35, 38, 3)))
    layers = ("relu1_1", "relu3_2", "relu4_2", "relu5_1")
    weights = {layer: jnp.asarray(np.random.default_rng(10).normal(size=(8,))) for layer in layers}

    def loss(image, model):
        return sum(
            jnp.sum(jnp.mean(maps, axis=(0, 1)) ** 2 * weights[layer][: maps.shape[-1]])
            for layer, maps in model(image, layers).items()
        )

    for model in (network, prepared):
        assert np.isfinite(float(loss(image, model)))
    np.testing.assert_allclose(loss(image, prepared), loss(image, network), rtol=1e-13)
    np.testing.assert_allclose(
        jax.grad(loss)(image, prepared), jax.grad(loss)(image, network), rtol=1e-11, atol=1e-16
    )

    def kernel_gradient(model):
        return nnx.grad(lambda model: loss(image, model))(model).convolutions[3].kernel.get_value()

    np.testing.assert_allclose(kernel_gradient(prepared), kernel_gradient(network), rtol=1e-11, atol=1e-16)


def test_prepared_at_full_width_its_wide_layers_go_by_winograd_to_float32_rounding():
    # VGG-19's own widths, float32, so that conv4_2 ... conv5_1 take Winograd's route; prepared
    # for the layers read, the convolutions past them get nothing (reflect padding's sizes are
    # tested in float64 above, and the winograd module's own tests)
    network = random_vgg19(0)
    layers = ("relu1_1", "relu4_1", "relu4_2", "relu5_1")
    prepared = network.for_gradients(layers)
    winograd_layers = [index for index, twins in enumerate(prepared.twins) if twins and twins.forward]
    assert winograd_layers == [9, 10, 11, 12]  # conv4_2, conv4_3, conv4_4, conv5_1
    assert prepared.twins[13] is None  # conv5_2 is not needed

    def winograd_layers_at(size):
        twins = network.for_gradients(layers, size).twins
        return [index for index, twin in enumerate(twins) if twin and twin.forward]

    # images of at most 256 x 256 pixels' area (conv4's maps 32 x 32 at most) only
    assert winograd_layers_at((256, 256)) == winograd_layers_at((200, 320)) == [9, 10, 11, 12]
    assert winograd_layers_at((512, 480)) == winograd_layers_at((257, 256)) == []
    image = jnp.asarray(np.random.default_rng(11).uniform(size=(36, 44, 3)), jnp.float32)

    def loss(image, model):
        return sum(jnp.mean(maps**2) for maps in model(image, layers).values())

    plain = jax.jit(jax.value_and_grad(loss))(image, network)
    fast = jax.jit(jax.value_and_grad(loss))(image, prepared)
    # float32: Winograd's transforms sum the products in another order, four layers deep
    # (measured: the value to 8e-8 relative, the gradient to 4e-7 of its largest entry)
    np.testing.assert_allclose(fast[0], plain[0], rtol=2e-5)
    scale = float(jnp.max(jnp.abs(plain[1])))
    np.testing.assert_allclose(fast[1], plain[1], rtol=0, atol=1e-4 * scale)
