"""VGG-19's convolutional part in Flax NNX, returning the named activations a style loss reads.

The network is Simonyan & Zisserman's configuration E: sixteen 3x3 convolutions in five blocks,
each block closed by a 2x2 pooling of stride 2. Layers are named as in the style-transfer
literature: ``conv{block}_{i}`` (before the ReLU), ``relu{block}_{i}`` and ``pool{block}``.

References:
    Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
    ICLR 2015, https://arxiv.org/abs/1409.1556.
    Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016
    (average pooling for synthesis).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.custom_derivatives import SymbolicZero
from jax.typing import DTypeLike
from jaxtyping import Array, ArrayLike, Float

from mmdstyle._checks import check_choice
from mmdstyle.features import winograd as _winograd
from mmdstyle.features.layers import compiled_when_eager, resolve_layers
from mmdstyle.features.preprocessing import PREPROCESSINGS, Preprocessing, preprocess

#: Output channels of each block's convolutions (configuration E).
VGG19_BLOCKS: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4)

#: The sixteen convolutions in order, e.g. ``"conv3_2"``.
VGG19_CONVOLUTIONS: tuple[str, ...] = tuple(
    f"conv{block}_{i}" for block, widths in enumerate(VGG19_BLOCKS, 1) for i in range(1, len(widths) + 1)
)

#: Every layer the network can return, in the order it computes them.
VGG19_LAYERS: tuple[str, ...] = tuple(
    name
    for block, widths in enumerate(VGG19_BLOCKS, 1)
    for name in (
        *(f"{kind}{block}_{i}" for i in range(1, len(widths) + 1) for kind in ("conv", "relu")),
        f"pool{block}",
    )
)

#: Index of each convolution in torchvision's ``vgg19().features`` (ReLUs and pools in between).
TORCHVISION_INDEX: dict[str, int] = {
    name: index
    for name, index in zip(
        VGG19_CONVOLUTIONS, (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34), strict=True
    )
}

#: Gatys et al.'s style layers and content layer (CVPR 2016, section 3).
GATYS_STYLE_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
GATYS_CONTENT_LAYERS: tuple[str, ...] = ("relu4_2",)

Pooling = Literal["max", "average"]
Padding = Literal["zero", "reflect"]
POOLINGS = ("max", "average")
PADDINGS = ("zero", "reflect")


def check_image(image: ArrayLike, *, name: str = "image") -> Array:
    """An RGB image batch (N, H, W, 3) or a single image (H, W, 3) as a floating JAX array."""
    array = jnp.asarray(image)
    if array.ndim not in (3, 4) or array.shape[-1] != 3:
        raise ValueError(
            f"{name} must have shape (height, width, 3) or (batch, height, width, 3) with RGB values "
            f"in [0, 1], got shape {array.shape}. Convert grey or RGBA images to RGB first."
        )
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise ValueError(
            f"{name} must be floating point with values in [0, 1], got dtype {array.dtype}; "
            "divide 8-bit images by 255 (mmdstyle.style.images.load_image does this)."
        )
    return array


class VGG19(nnx.Module):
    """VGG-19's sixteen convolutions; ``model(image, layers)`` returns the named activations.

    Args:
        pooling: ``"max"`` as trained, or ``"average"``, which Gatys et al. found gives smoother
            gradients and better syntheses.
        padding: ``"zero"`` as trained, or ``"reflect"``, which avoids dark borders in synthesis.
        preprocessing: what the weights expect of an RGB image in [0, 1]: ``"torchvision"``
            (ImageNet mean/std), ``"caffe"`` (BGR, 0-255, mean subtracted) or ``"none"``.
        rngs: random state for the initial weights (He-normal fan-in, zero biases). A network
            meant for pretrained weights can use any seed: :func:`load_vgg19` overwrites them.
        param_dtype: dtype of the weights; the image is cast to it.
        widths: output channels of each block's convolutions; VGG-19's own by default. Narrower
            networks of the same shape serve tests and quick experiments.
        precision: precision of the convolutions (``None``: the backend's default, TF32 on
            recent NVIDIA GPUs; ``jax.lax.Precision.HIGHEST`` for full float32).

    Calling the model on ``(N, H, W, 3)`` returns maps ``(N, h, w, c)``; on ``(H, W, 3)`` it
    returns ``(h, w, c)``. Nothing past the deepest requested layer is computed.
    """

    layer_names: tuple[str, ...] = VGG19_LAYERS
    default_style_layers: tuple[str, ...] = GATYS_STYLE_LAYERS
    default_content_layers: tuple[str, ...] = GATYS_CONTENT_LAYERS

    def __init__(
        self,
        *,
        pooling: Pooling = "max",
        padding: Padding = "zero",
        preprocessing: Preprocessing = "torchvision",
        rngs: nnx.Rngs | None = None,
        param_dtype: DTypeLike = jnp.float32,
        widths: Sequence[Sequence[int]] = VGG19_BLOCKS,
        precision: jax.lax.PrecisionLike = None,
    ) -> None:
        if [len(block) for block in widths] != [len(block) for block in VGG19_BLOCKS] or not all(
            isinstance(width, int) and width >= 1 for block in widths for width in block
        ):
            raise ValueError(
                f"widths must give positive channel counts for VGG-19's blocks of 2, 2, 4, 4 and 4 "
                f"convolutions, got {widths}."
            )
        self.widths = tuple(tuple(block) for block in widths)
        self.pooling = check_choice("pooling", pooling, POOLINGS)
        self.padding = check_choice("padding", padding, PADDINGS)
        self.preprocessing = check_choice("preprocessing", preprocessing, PREPROCESSINGS)
        rngs = nnx.Rngs(0) if rngs is None else rngs
        channels = [3] + [width for block in self.widths for width in block]
        he_normal = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")
        self.convolutions = nnx.List(
            [
                nnx.Conv(
                    inputs,
                    outputs,
                    (3, 3),
                    padding="VALID" if self.padding == "reflect" else ((1, 1), (1, 1)),
                    kernel_init=he_normal,
                    param_dtype=param_dtype,
                    precision=precision,
                    rngs=rngs,
                )
                for inputs, outputs in itertools.pairwise(channels)
            ]
        )
        #: per convolution, what :meth:`for_gradients` computed once (None: nothing, as built)
        self.twins: nnx.List | None = nnx.data(None)

    def for_gradients(
        self, layers: Sequence[str] | None = None, size: tuple[int, int] | None = None
    ) -> VGG19:
        """This network with what its gradients in the image need computed once, for many gradients.

        The gradient of a convolution with respect to its input is a convolution with the kernel
        reversed in space and its channels swapped. Where the kernel is a program's argument (as
        the style transfer engine passes networks, so that one compiled program serves every
        network of the same shapes), XLA makes that copy at every evaluation: through conv5_1 about
        80 MB, and 10 % of a Gram objective's value and gradient at 256 px (0.454 -> 0.41 s, the
        same as with the weights compiled in as constants). The copy returned holds each kernel's
        twin; for the wide float32 layers on the CPU, both kernels Winograd-transformed instead
        (:mod:`mmdstyle.features.winograd`: 0.41 -> 0.35 s). Values and gradients are the same
        (the kernels' gradients too), to float32 rounding where Winograd's products are summed in
        another order.

        Args:
          layers: only the convolutions these need are prepared (default: all).
          size: the (height, width) of the images the copy will see, if known: Winograd's route
            is then taken only for images of at most 256 x 256 pixels' area
            (:data:`WINOGRAD_MAX_PIXELS`), whose wide layers' maps are at most 32 x 32, where it
            gains most (0.64-0.71x). On larger maps it gains less (0.84x at 64 x 64) and its
            filters and tile buffers cost memory: a 512 px L-BFGS transfer's peak 1.31 -> 1.59
            GiB with every wide layer on it, 1.21 -> 1.28 GiB with conv5_1 alone (32 x 32 there),
            which saved no measurable time.

        The copy shares the weights' arrays and does not follow later changes of this network's.
        Its convolutions define reverse-mode derivatives (a custom VJP): ``jax.grad`` and
        ``jax.vjp`` work, forward mode (``jax.jvp``, ``jax.jacfwd``) does not; use the network
        itself for those.
        """
        needed = len(VGG19_CONVOLUTIONS)
        if layers is not None:
            deepest = max(VGG19_LAYERS.index(name) for name in resolve_layers(self, layers))
            needed = sum(name.startswith("conv") for name in VGG19_LAYERS[: deepest + 1])
        prepared = nnx.clone(self)
        small = size is None or size[0] * size[1] <= WINOGRAD_MAX_PIXELS
        prepared.twins = nnx.List(
            [
                Twins(c.kernel.get_value(), winograd=small) if i < needed else None
                for i, c in enumerate(self.convolutions)
            ]
        )
        return prepared

    def __call__(
        self, image: ArrayLike, layers: str | Sequence[str] = GATYS_STYLE_LAYERS
    ) -> dict[str, Float[Array, ...]]:
        """The activations of ``layers`` (default: Gatys' style layers), in the order named."""
        names = resolve_layers(self, layers)
        image = check_image(image)
        single = image.ndim == 3
        x = image[None] if single else image
        _check_spatial_size(x.shape[1:3], names, self.padding)
        if (compiled := compiled_when_eager(self, image, names)) is not None:
            return compiled
        x = preprocess(x.astype(self.convolutions[0].kernel.dtype), self.preprocessing)

        deepest = max(VGG19_LAYERS.index(name) for name in names)
        wanted = set(names)
        outputs: dict[str, Array] = {}
        convolutions = iter(self.convolutions)
        twins = iter(self.twins) if self.twins is not None else itertools.repeat(None)
        for name in VGG19_LAYERS[: deepest + 1]:
            if name.startswith("conv"):
                if self.padding == "reflect":
                    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
                convolution, prepared = next(convolutions), next(twins)
                x = convolution(x) if prepared is None else _convolve(convolution, prepared, x)
            elif name.startswith("relu"):
                x = jax.nn.relu(x)
            else:
                x = _pool(x, self.pooling)
            if name in wanted:
                outputs[name] = x[0] if single else x
        return {name: outputs[name] for name in names}

    def load_parameters(
        self, parameters: Mapping[str, tuple[np.ndarray, np.ndarray]], *, origin: str = "the weights"
    ) -> None:
        """Set each convolution's (kernel, bias) from ``{"conv1_1": (kernel HWIO, bias), ...}``."""
        for name, convolution in zip(VGG19_CONVOLUTIONS, self.convolutions, strict=True):
            kernel, bias = parameters[name]
            expected = convolution.kernel.shape
            if tuple(kernel.shape) != expected or tuple(bias.shape) != (expected[-1],):
                raise ValueError(
                    f"{origin}: {name}: expected a kernel of shape {expected} (height, width, in, out) "
                    f"and a bias of shape {(expected[-1],)}, "
                    f"got {tuple(kernel.shape)} and {tuple(bias.shape)}. "
                    "Is this a VGG-19 (not VGG-16 or a batch-norm variant)?"
                )
            dtype = convolution.kernel.dtype
            convolution.kernel.set_value(jnp.asarray(kernel, dtype=dtype))
            convolution.bias.set_value(jnp.asarray(bias, dtype=dtype))


#: the largest image (height x width) for which a prepared network convolves by Winograd's route
WINOGRAD_MAX_PIXELS = 256 * 256


class Twin(nnx.Variable):
    """What a convolution's evaluations need, computed once: a kernel or its Winograd transform."""


class Twins(nnx.Module):
    """A convolution's operands, prepared once: the forward pass's and the input gradient's.

    The input gradient convolves with the kernel reversed in space, its channels swapped
    (``backward``). Where Winograd's algorithm pays (:func:`mmdstyle.features.winograd.pays`)
    and ``winograd`` allows it, both are stored transformed, (16, C, O); otherwise ``forward`` is
    None (the kernel itself).
    """

    def __init__(self, kernel: Float[Array, "kh kw i o"], *, winograd: bool = True) -> None:
        backward = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
        if winograd and _winograd.pays(kernel):
            self.forward = Twin(_winograd.transformed_filters(kernel))
            self.backward = Twin(_winograd.transformed_filters(backward))
        else:
            self.forward = nnx.data(None)
            self.backward = Twin(backward)


def _convolve(
    convolution: nnx.Conv, twins: Twins, x: Float[Array, "n h_in w_in i"]
) -> Float[Array, "n h_out w_out o"]:
    """``convolution(x)`` (3 x 3, stride 1, its bias added) with the prepared ``twins``."""
    pad = 1 if convolution.padding == ((1, 1), (1, 1)) else 0  # "zero"; "VALID" after "reflect"
    kernel, bias = convolution.kernel.get_value(), convolution.bias.get_value()
    forward = kernel if twins.forward is None else twins.forward.get_value()
    y = _convolution(x, kernel, forward, twins.backward.get_value(), pad, convolution.precision)
    return y + bias.reshape(1, 1, 1, -1)


def _plain_convolution(x: Array, operand: Array, pad: int, precision: jax.lax.PrecisionLike) -> Array:
    """``x`` convolved with a kernel (3, 3, C, O) or Winograd filters (16, C, O), padded by ``pad``."""
    if operand.ndim == 3:
        x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        return _winograd.convolve(x, operand, precision)
    kernel = operand
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        (1, 1),
        ((pad, pad), (pad, pad)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=precision,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _convolution(
    x: Array, kernel: Array, forward: Array, backward: Array, pad: int, precision: jax.lax.PrecisionLike
) -> Array:
    """``x`` convolved with ``kernel``, through its prepared form ``forward``, padded by ``pad``.

    The input gradient goes through the prepared ``backward``, the kernel's through the
    convolution's own rule.
    """
    return _plain_convolution(x, forward, pad, precision)


def _convolution_forward(
    x: Any, kernel: Any, forward: Any, backward: Any, pad: int, precision: jax.lax.PrecisionLike
):
    # symbolic zeros: each primal says whether it is differentiated; keep only what the
    # cotangents asked for need (the kernel's gradient: the input; the input's: the twin)
    residuals = (
        x.value if kernel.perturbed else None,
        kernel.value if kernel.perturbed else None,
        backward.value if x.perturbed else None,
    )
    return _plain_convolution(x.value, forward.value, pad, precision), residuals


def _convolution_backward(pad: int, precision: jax.lax.PrecisionLike, residuals: Any, cotangent: Any):
    x, kernel, backward = residuals
    if isinstance(cotangent, SymbolicZero):
        return None, None, None, None
    # the input gradient: the cotangent convolved with the twin, padded so the sizes come back
    dx = None if backward is None else _plain_convolution(cotangent, backward, 2 - pad, precision)
    if kernel is None:
        return dx, None, None, None
    _, pullback = jax.vjp(lambda kernel: _plain_convolution(x, kernel, pad, precision), kernel)
    return dx, pullback(cotangent)[0], None, None


_convolution.defvjp(_convolution_forward, _convolution_backward, symbolic_zeros=True)


def _pool(x: Float[Array, "n h w c"], pooling: str) -> Float[Array, "n half_h half_w c"]:
    """2 x 2 pooling of stride 2 (an odd last row or column is dropped, as in PyTorch).

    Max pooling is a maximum over each 2 x 2 block of a reshaped map, not a ``reduce_window``:
    the same values, and XLA:CPU differentiates it 9x faster (value and gradient at 256 x 256 x
    64: 9 ms against 81 ms for ``reduce_window``'s select-and-scatter; 14 against 142 ms over
    VGG-19's four pools at 256 px). Where a block holds equal maxima its gradient is shared
    among them (JAX's rule for a maximum); PyTorch gives it to the first. Average pooling stays a
    ``reduce_window``, which is the faster of the two there (6 against 14 ms).
    """
    if pooling == "max":
        n, h, w, c = x.shape
        blocks = x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)
        return jnp.max(blocks, axis=(2, 4))
    window = (1, 2, 2, 1)
    return jax.lax.reduce_window(x, 0.0, jax.lax.add, window, window, "VALID") * jnp.asarray(0.25, x.dtype)


def _check_spatial_size(size: tuple[int, int], names: Sequence[str], padding: str) -> None:
    """Each pooling halves the map (rounding down): the deepest layer must keep at least one pixel.

    Reflection also needs two pixels at every convolution, i.e. 2^block pixels in the input.
    """
    block = max(int(name[4]) for name in names)  # conv3_2, relu3_2, pool3 -> 3
    pools = max(block if name.startswith("pool") else block - 1 for name in names if int(name[4]) == block)
    smallest = max(2**pools, 2**block if padding == "reflect" else 1)
    if min(size) < smallest:
        raise ValueError(
            f"the image is {size[0]} x {size[1]} pixels, too small for layer(s) {list(names)}: "
            f"each side needs at least {smallest} pixels ({pools} pooling(s) of stride 2"
            f"{' and reflection padding' if padding == 'reflect' else ''}). "
            "Use a larger image or shallower layers."
        )


def unfilled_vgg19(**options) -> VGG19:
    """A :class:`VGG19` whose weights are only shapes, for :meth:`VGG19.load_parameters` to fill.

    Building it draws no random numbers and compiles nothing (a real initialisation costs seconds
    of compilation per convolution shape on first use).
    """
    return nnx.eval_shape(lambda: VGG19(**options))


def random_vgg19(
    seed: int = 0,
    *,
    pooling: Pooling = "average",
    padding: Padding = "zero",
    param_dtype: DTypeLike = jnp.float32,
    widths: Sequence[Sequence[int]] = VGG19_BLOCKS,
    precision: jax.lax.PrecisionLike = None,
) -> VGG19:
    """A weight-free VGG-19: He-initialised from a fixed seed, the same network on every machine.

    Kernels are drawn from N(0, 2 / fan_in) with NumPy's PCG64 generator (fan_in = 9 x input
    channels; He et al. 2015), biases are zero. Random deep networks carry far less texture
    information than trained ones; this exists so that every code path runs without a download,
    and as a control in experiments. Average pooling is the default here because it is the
    synthesis default of Gatys et al.
    """
    model = unfilled_vgg19(
        pooling=pooling,
        padding=padding,
        preprocessing="torchvision",
        param_dtype=param_dtype,
        widths=widths,
        precision=precision,
    )
    generator = np.random.default_rng(seed)
    parameters = {}
    for name, convolution in zip(VGG19_CONVOLUTIONS, model.convolutions, strict=True):
        height, width, inputs, outputs = convolution.kernel.shape
        scale = np.sqrt(2.0 / (height * width * inputs))
        kernel = generator.standard_normal((height, width, inputs, outputs), dtype=np.float32) * scale
        parameters[name] = (kernel, np.zeros(outputs, np.float32))
    model.load_parameters(parameters)
    return model
