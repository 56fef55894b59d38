"""Style transfer and texture synthesis with any style loss: one engine for both.

The objective is :mod:`mmdstyle.style.objective`'s; this module optimises it over the image's pixels
with L-BFGS (optax's two-loop recursion, a strong-Wolfe line search run from the host:
:mod:`mmdstyle.style.lbfgs`) or optax's Adam. An Adam step is one compiled program, dispatched in
chunks; an L-BFGS step is one compiled evaluation per line-search trial. The progress bar and the
per-step history are updated after each chunk of steps. A multi-scale pyramid runs the stages in
turn, each from the previous result upsampled.

References:
    Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016.
    Gatys, Bethge, Hertzmann & Shechtman, "Preserving Color in Neural Artistic Style Transfer",
    arXiv:1606.05897, 2016 (luminance-only transfer).
"""

from __future__ import annotations

import dataclasses
import sys
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array

from mmdstyle.features.layers import ExtractorArgument, for_gradients, resolve_layers
from mmdstyle.features.progress import progress_bar
from mmdstyle.features.registry import extractor_or_default
from mmdstyle.style.images import fit_within, luminance_transfer, resize
from mmdstyle.style.lbfgs import HostLBFGS
from mmdstyle.style.objective import Objective, TransferConfig, check_config, with_default_weights
from mmdstyle.style.specs import parse_style_spec


@dataclass
class TransferResult:
    """What a run returns: the final image, the per-step history, and how the run went.

    ``image`` is (H, W, 3) in [0, 1]; ``stopped_early`` says why the run stopped early (None if it
    ran every step); ``config`` is the settings it ran with (weights resolved).
    """

    image: np.ndarray
    history: list[dict[str, Any]]
    stopped_early: str | None = None
    config: TransferConfig | None = None

    @property
    def stalled(self) -> str | None:
        """A sentence if the loss barely moved over the run (see :func:`stall_notice`), else None."""
        return stall_notice(self.history, self.config)

    @property
    def flat(self) -> str | None:
        """A sentence if a stage ended early on a flat loss (see :func:`flat_notice`), else None."""
        return None if self.config is None else flat_notice(self.history, self.config)


#: A run whose loss changes by less than this fraction of its first value has not moved.
STALL_TOLERANCE = 1e-4
#: Steps over which ``TransferConfig.min_progress`` measures the fall of the loss.
PROGRESS_WINDOW = 10


def flattened(history: Sequence[dict[str, Any]], min_progress: float) -> bool:
    """Whether the loss fell by less than ``min_progress`` of its value over the last steps.

    Over the last :data:`PROGRESS_WINDOW` records of ``history`` (a stage's); never with
    ``min_progress`` 0.
    """
    if min_progress <= 0 or len(history) <= PROGRESS_WINDOW:
        return False
    before, now = history[-1 - PROGRESS_WINDOW]["loss"], history[-1]["loss"]
    return before - now < min_progress * abs(before)


def flat_notice(history: Sequence[dict[str, Any]], config: TransferConfig) -> str | None:
    """What to say when stages ended early on a flat loss (records marked ``"flat"``), or None."""
    ends = [record["step"] for record in history if record.get("flat")]
    if not ends:
        return None
    where = ", ".join(f"step {step}" for step in ends)
    return (
        f"the loss fell by less than {config.min_progress:g} of its value over {PROGRESS_WINDOW} steps, so "
        f"the run ended early, after {where} ({config.steps} steps per stage): the steps left would change "
        "little. Lower min_progress (0: every step) to run them."
    )


def stall_notice(history: Sequence[dict[str, Any]], config: TransferConfig | None = None) -> str | None:
    """What to say when the loss of a run barely moved, or None when it moved.

    The loss of a run that starts from the content image with a style term far too weak for its
    content term, or of a kernel that has no gradient left where the image is, stays where it
    started; the image then stays the start. That is worth a sentence, not silence. An L-BFGS run
    that finds no descent at its first step (a single record marked converged) has not moved either.
    """
    # within the last stage: losses at different image sizes do not compare
    history = (
        [record for record in history if record.get("stage", 0) == history[-1].get("stage", 0)]
        if history
        else []
    )
    if not history or (len(history) == 1 and not history[0].get("converged")):
        return None  # one step, and the loss after it is not recorded
    first, last = history[0]["loss"], history[-1]["loss"]
    change = abs(first - last) / max(abs(first), np.finfo(np.float64).tiny)
    if not change < STALL_TOLERANCE:
        return None
    loss = f" of {config.loss!r}" if config is not None else ""
    return (
        f"the loss{loss} moved by only {change:.1e} of its value in {len(history)} steps ({first:.6g} -> "
        f"{last:.6g}): the image is still close to where it started. The style term may be too weak "
        "against the content term (raise the style weight, or leave it unset to have it balanced against "
        "the Gram loss's), or the kernel may have no gradient at these features (a Gaussian far from every "
        "style feature: try several bandwidths, sigma=median*(0.25,0.5,1,2,4), or mmd:energy@sliced)."
    )


@dataclass(frozen=True)
class OptimizerSettings:
    """The optimiser of a run, hashable: part of the compiled step's identity."""

    kind: str  # "lbfgs" or "adam"
    learning_rate: float

    @classmethod
    def of(cls, config: TransferConfig) -> OptimizerSettings:
        """``config``'s optimiser; the learning rate is kept for Adam only (0 for L-BFGS)."""
        return cls(config.optimizer, float(config.learning_rate) if config.optimizer == "adam" else 0.0)

    def build(self) -> optax.GradientTransformation:
        """Adam's optax transformation (L-BFGS runs from the host: :mod:`mmdstyle.style.lbfgs`)."""
        return optax.adam(self.learning_rate)


def _value_gradient_terms(
    image: Array, extractor: ExtractorArgument, objective: Objective
) -> tuple[Array, Array, dict[str, Any]]:
    """The objective's value, its gradient in the pixels, and its terms, in one pass."""

    def value_and_terms(image: Array) -> tuple[Array, dict[str, Any]]:
        terms = objective.terms_of(image, extractor)
        return objective.total(terms), terms

    (value, terms), gradient = jax.value_and_grad(value_and_terms, has_aux=True)(image)
    return value, gradient, terms


def _adam_step(
    image: Array, state: Any, extractor: ExtractorArgument, objective: Objective, optimizer: OptimizerSettings
) -> tuple[Array, Any, Array, dict[str, Any]]:
    """One Adam step, compiled whole: (image, state) -> (next image, state, value, terms).

    The steps run from a Python loop, not inside ``lax.scan``: XLA's CPU backend runs a loop
    body about 2x slower than the same computation compiled on its own (measured: VGG-19
    value + gradient at 128 px, 0.74 s per step in a scan against 0.26 s stepped from Python),
    and dispatch costs nothing next to a network's evaluation.
    """
    value, gradient, terms = _value_gradient_terms(image, extractor, objective)
    updates, state = optimizer.build().update(gradient, state, image)
    return optax.apply_updates(image, updates), state, value, terms


def _trial(
    image: Array, direction: Array, step: Array, extractor: ExtractorArgument, objective: Objective
) -> tuple[Array, Array, Array, Array, dict[str, Any]]:
    """One L-BFGS line-search trial: the image moved ``step`` along ``direction``.

    Returns the moved image and there the objective's value, gradient, slope along
    ``direction`` and terms (see :mod:`mmdstyle.style.lbfgs`).
    """
    moved = image + step * direction
    value, gradient, terms = _value_gradient_terms(moved, extractor, objective)
    return moved, value, gradient, jnp.vdot(gradient, direction), terms


#: The programs, compiled once per optimiser and per structure, shapes and dtypes of their
#: arguments (the objective's layers and kinds of terms, the extractor's architecture), never per
#: value: JAX's cache serves a stage, a run or a comparison with the same settings and sizes.
#: ``keep_unused``: whatever the run holds stays an argument even where the program does not read
#: it, so that the compiled step's memory analysis counts it (:func:`check_memory`); the objective
#: keeps no style samples that no term reads (a Gram term holds its Gram matrix alone).
_jitted_adam_step = jax.jit(_adam_step, static_argnames="optimizer", keep_unused=True)
_jitted_trial = jax.jit(_trial, keep_unused=True)


def _compiled(jitted: Any, *arguments: Any, **static: Any) -> tuple[Any, float]:
    """``jitted`` compiled for these arguments, and the seconds its lowering and compilation took.

    A program this process has compiled before comes from JAX's caches in about a millisecond.
    """
    started = time.perf_counter()
    compiled = jitted.lower(*arguments, **static).compile()
    return compiled, time.perf_counter() - started


class _AdamSteps:
    """Adam on the compiled step; the steps are dispatched without waiting for their results."""

    def __init__(
        self, image: Array, network: ExtractorArgument, objective: Objective, optimizer: OptimizerSettings
    ) -> None:
        self.image, self.state = image, optimizer.build().init(image)
        self.arguments = (network, objective)
        self.program, self.compile_seconds = _compiled(
            _jitted_adam_step, image, self.state, network, objective, optimizer=optimizer
        )
        self.converged = False
        self.failure = None  # a non-finite loss shows in the values

    def step(self) -> tuple[Array, Any, dict[str, Any], Any]:
        """(image the step started from, value there, terms there, evaluations), then moves on."""
        start = self.image
        self.image, self.state, value, terms = self.program(start, self.state, *self.arguments)
        return start, value, terms, 1

    def start_terms(self) -> dict[str, Any]:
        """The objective's terms where the steps start (a step computed and dropped)."""
        return self.program(self.image, self.state, *self.arguments)[3]


class _LBFGSSteps:
    """L-BFGS with its line search driven from the host (:class:`mmdstyle.style.lbfgs.HostLBFGS`)."""

    def __init__(self, image: Array, network: ExtractorArgument, objective: Objective) -> None:
        self.program, self.compile_seconds = _compiled(
            _jitted_trial, image, image, jnp.zeros((), image.dtype), network, objective
        )
        self.lbfgs = HostLBFGS(lambda x, d, t: self.program(x, d, t, network, objective), image)
        self.compile_seconds += self.lbfgs.compile_seconds  # its search direction's program

    def start_terms(self) -> dict[str, Any]:
        """The objective's terms where the steps start: the first step's evaluation there."""
        _, _, terms = self.lbfgs.evaluate_start().payload
        return terms

    @property
    def image(self) -> Array:
        return self.lbfgs.params

    @property
    def converged(self) -> bool:
        return self.lbfgs.converged

    @property
    def failure(self) -> str | None:
        return self.lbfgs.failure

    def step(self) -> tuple[Array, Any, dict[str, Any], Any]:
        """(image the step started from, value there, terms there, evaluations), then moves on."""
        return self.lbfgs.step()


def _stepper(params: Array, extractor: Any, objective: Objective) -> _AdamSteps | _LBFGSSteps:
    """The optimiser of ``objective.config`` at ``params``, its program compiled (or from the cache).

    The extractor is prepared for the run's many gradients (:func:`for_gradients`: a VGG-19's
    input-gradient kernels and Winograd filters computed once, for the layers and size it sees).
    """
    network = ExtractorArgument(for_gradients(extractor, objective.layers, params.shape[:2]))
    optimizer = OptimizerSettings.of(objective.config)
    if optimizer.kind == "adam":
        return _AdamSteps(params, network, objective, optimizer)
    return _LBFGSSteps(params, network, objective)


def run_stage(
    objective: Objective,
    image: np.ndarray,
    *,
    extractor: Any,
    steps: int,
    first_step: int = 0,
    first_seconds: float = 0.0,
    on_chunk: Callable[[int, np.ndarray, list[dict]], None] | None = None,
    on_step: Callable[[], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, list[dict], str | None]:
    """Optimise ``image`` for ``steps`` steps; returns (image, history records, stop reason).

    Each record holds the step, the total loss and every term at the image the step started
    from, the objective's evaluations in the step (L-BFGS: its line search's), and the seconds
    since the stage started (compilation excluded, reported apart in the first record as
    ``compile_seconds``: about a millisecond when this process had already compiled the step).
    An L-BFGS stage that finds no lower loss in any direction has converged and ends early (its
    last record says ``"converged": True``), as does a stage whose loss has flattened (by
    ``config.min_progress``, :func:`flattened`: ``"flat": True``); neither is a stop reason.
    ``on_step()`` is called after every step (a progress bar's tick; the values are read back
    once per chunk). ``stop`` is asked after every step; when it returns True the stage ends
    there, the image that step reached kept.
    """
    config = objective.config
    params = jnp.asarray(image, config.dtype)
    stepper = _stepper(params, extractor, objective)
    check_memory(stepper.program, params.shape[:2])
    history: list[dict] = []
    done, running = 0, 0.0
    last_finite = params  # an image whose loss is known to be finite (the start counts as such)
    requested = None
    while done < steps and not (stepper.converged or stepper.failure):
        length = min(config.chunk, steps - done)
        started = time.perf_counter()
        images, outputs = [], []
        for _ in range(length):  # Adam: dispatched asynchronously, read back once per chunk
            start, value, terms, evaluations = stepper.step()
            images.append(start)
            outputs.append((value, {**terms, "evaluations": evaluations}))
            if on_step is not None:
                on_step()
            if stepper.converged or stepper.failure or (stop is not None and stop()):
                length = len(outputs)
                break
        images.append(stepper.image)
        values = np.array([float(value) for value, _ in outputs])  # values[i]: the loss at images[i]
        terms = jax.tree.map(
            lambda *per_step: np.stack([np.asarray(v) for v in per_step]), *(t for _, t in outputs)
        )
        chunk_seconds = time.perf_counter() - started
        for i in range(length):
            history.append(
                {
                    "step": first_step + done + i,
                    "loss": float(values[i]),
                    "style": {layer: float(v[i]) for layer, v in terms["style"].items()},
                    "content": {layer: float(v[i]) for layer, v in terms["content"].items()},
                    "tv": float(terms["tv"][i]),
                    "evaluations": int(terms["evaluations"][i]),
                    "seconds": first_seconds + running + chunk_seconds * (i + 1) / length,
                }
            )
        running += chunk_seconds
        finite = np.isfinite(values)
        if not finite.all():
            bad = int(np.argmin(finite))
            kept, kept_step = (images[bad - 1], done + bad - 1) if bad else (last_finite, done - 1)
            del history[len(history) - length + bad + 1 :]  # nothing after the first bad record
            if kept_step < 0:
                return (
                    np.asarray(kept),
                    history,
                    (
                        f"the loss is {values[bad]} at the starting image: nothing to optimise. Check the "
                        "images (NaN pixels?), the extractor's features and the loss weights."
                    ),
                )
            reason = (
                f"the loss became {values[bad]} at step {first_step + done + bad}; stopped, keeping the "
                f"image from step {first_step + kept_step}, the last with a finite loss. "
                "Lower the learning rate or the loss weights, or try the other optimizer."
            )
            return np.asarray(kept), history, reason
        params, last_finite = images[-1], images[-2]
        done += length
        if stepper.failure:
            reason = (
                f"{stepper.failure} at step {first_step + done - 1}; stopped there. Check the extractor "
                "and the loss for operations without a gradient at these values, or try Adam."
            )
            return np.asarray(params), history, reason
        if stepper.converged:
            history[-1]["converged"] = True
        flat = flattened(history, config.min_progress)
        if flat:
            history[-1]["flat"] = True
        if on_chunk is not None:
            on_chunk(first_step + done, np.asarray(params), history[-length:])
        if stop is not None and stop():
            requested = f"stopped on request after step {first_step + done - 1}"
            break
        if flat:
            break
    if history:
        history[0]["compile_seconds"] = stepper.compile_seconds
    if not bool(jnp.all(jnp.isfinite(params))):
        return (
            np.asarray(last_finite),
            history,
            (
                f"the image became non-finite in the last step ({first_step + done - 1}); "
                "keeping the one before it."
            ),
        )
    return np.asarray(params), history, requested


def available_memory() -> int | None:
    """Bytes the computation may use: the device's limit on accelerators, MemAvailable on CPU."""
    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(compiled: Any, shape: tuple[int, int]) -> None:
    """Refuse a run whose compiled step needs more memory than there is, naming a size that fits."""
    analysis = compiled.memory_analysis()
    available = available_memory()
    if analysis is None or available is None:
        return
    needed = analysis.temp_size_in_bytes + analysis.argument_size_in_bytes + analysis.output_size_in_bytes
    _refuse_unless_it_fits(needed, available, shape, max(shape), exactly=True)


def _refuse_unless_it_fits(
    needed: int, available: int, shape: tuple[int, int], size: int, *, exactly: bool
) -> None:
    """A MemoryError when ``needed`` bytes exceed 90 % of ``available``, naming a size that fits.

    The need grows with the pixels, so the size that fits is ``size`` scaled by the square root
    of the shortfall. ``exactly``: ``needed`` is the compiled step's own; else a lower bound.
    """
    if needed <= 0.9 * available:
        return
    fits = int(size * (0.9 * available / needed) ** 0.5) // 8 * 8
    need, use = (
        ("about", f"of about {fits} pixels or less") if exactly else ("at least", f"below {fits} pixels")
    )
    setting = "for this extractor and loss" if exactly else "with this extractor and these layers"
    raise MemoryError(
        f"a {shape[0]} x {shape[1]} image needs {need} {_in_units(needed)} {setting}, but "
        f"{_in_units(available)} are available. Use a size {use} (--size), fewer or shallower layers, or "
        "a machine with more memory."
    )


def least_memory(
    config: TransferConfig,
    extractor: Any,
    shape: tuple[int, int],
    style_shapes: Sequence[tuple[int, int]],
    *,
    synthesis: bool,
) -> int:
    """Bytes a stage of ``shape`` needs at the least, from shapes alone: nothing is computed.

    The images (the content, the image, its gradient, the style images), the content layers'
    targets and one pass of the network's activations over the image: every named layer up to
    the deepest one the loss reads. The compiled step needs more (measured: 1.2-2.7x those
    activations for its temporaries, on VGG-19 and the multi-scale network at 128 and 256 px,
    besides the weights), so a run refused here could never have fitted.
    """
    itemsize = jnp.dtype(config.dtype).itemsize
    style_layers = resolve_layers(extractor, config.style_layers, role="style")
    content_layers = () if synthesis else resolve_layers(extractor, config.content_layers, role="content")
    used = (*style_layers, *content_layers)
    known = tuple(getattr(extractor, "layer_names", ()) or ())
    deepest = max((known.index(layer) for layer in used if layer in known), default=-1)
    passed = known[: deepest + 1] if set(used) <= set(known) else used

    def elements(image_shape: tuple[int, int], layers: Sequence[str]) -> int:
        return _feature_elements(extractor, (*image_shape, 3), tuple(layers), jnp.dtype(config.dtype).name)

    pixels = 3 * int(np.prod(shape)) * (2 if synthesis else 3) + sum(
        3 * int(np.prod(s)) for s in style_shapes
    )
    # the content layers' targets; the style layers' samples only where a term reads them at
    # every evaluation (a Gram term keeps its Gram matrix alone), so a lower bound leaves them out
    targets = elements(shape, content_layers)
    return itemsize * (pixels + targets + elements(shape, passed))


#: Elements of an extractor's maps by image shape, layers and dtype: tracing the network for its
#: shapes (0.05-0.3 s) once per extractor and settings, not once per run.
_FEATURE_ELEMENTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _feature_elements(extractor: Any, shape: tuple[int, ...], layers: tuple[str, ...], dtype: str) -> int:
    """Elements of ``extractor``'s maps of ``layers`` for an image of ``shape``; shapes only, cached."""
    if not layers:
        return 0
    try:
        known = _FEATURE_ELEMENTS.setdefault(extractor, {})
    except TypeError:  # an extractor that takes no weak reference is traced every time
        known = {}
    key = (shape, layers, dtype)
    if key not in known:
        image = jax.ShapeDtypeStruct(shape, jnp.dtype(dtype))
        maps = jax.eval_shape(lambda image: extractor(image, layers), image)
        known[key] = sum(int(np.prod(feature.shape)) for feature in maps.values())
    return known[key]


def check_run_memory(
    config: TransferConfig, extractor: Any, content: np.ndarray | None, styles: Sequence[np.ndarray]
) -> None:
    """Refuse, before any image is resized, a run whose largest stage cannot fit in memory.

    The bound of :func:`least_memory` against the memory available; the message names a size
    about which it would fit (the need grows with the pixels). The compiled step is checked
    again, exactly, before it runs (:func:`check_memory`).
    """
    available = available_memory()
    if available is None:
        return
    size = max(config.stages())
    content_shape = None if content is None else content.shape[:2]
    shape, style_shapes = stage_shapes(config, content_shape, [style.shape[:2] for style in styles], size)
    needed = least_memory(config, extractor, shape, style_shapes, synthesis=content is None)
    _refuse_unless_it_fits(needed, available, shape, size, exactly=False)


def _in_units(count: int) -> str:
    """Bytes as GiB, or MiB below one GiB."""
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def stage_images(
    config: TransferConfig, content: np.ndarray | None, styles: Sequence[np.ndarray], size: int
) -> tuple[np.ndarray | None, list[np.ndarray], tuple[int, int]]:
    """A stage's content and style images at ``size``, and the shape of the image it optimises.

    The shapes are :func:`stage_shapes`'.
    """
    content_shape = None if content is None else content.shape[:2]
    shape, style_shapes = stage_shapes(config, content_shape, [style.shape[:2] for style in styles], size)
    stage_content = resize(content, shape) if content is not None else None
    return stage_content, [resize(s, to) for s, to in zip(styles, style_shapes, strict=True)], shape


def stage_shapes(
    config: TransferConfig,
    content_shape: tuple[int, int] | None,
    style_shapes: Sequence[tuple[int, int]],
    size: int,
) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """The (height, width) of a stage's image and of each style image at ``size``; nothing resized.

    The content (and so the result) keeps its aspect ratio with its longer side ``size`` (a
    synthesis, ``content_shape`` None, is square); each style image keeps its own, its longer side
    ``size * style_scale`` (16 at least).
    """
    shape = fit_within(content_shape, size) if content_shape is not None else (size, size)
    side = max(16, round(size * config.style_scale))
    return shape, [fit_within(style_shape, side) for style_shape in style_shapes]


def with_default_init(config: TransferConfig, content: np.ndarray | None) -> TransferConfig:
    """``config``, starting a texture synthesis (no content) from noise where it says ``"content"``."""
    if content is None and isinstance(config.init, str) and config.init == "content":
        return dataclasses.replace(config, init="noise")
    return config


def initial_image(config: TransferConfig, content: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """The image a stage of ``shape`` starts from when nothing came before: ``config.init``."""
    init = config.init
    if not isinstance(init, str):
        return resize(np.asarray(init, np.float32), shape)
    if init == "content":
        if content is None:
            raise ValueError("init='content' needs a content image; texture synthesis starts from 'noise'.")
        return content
    if init == "noise":
        return np.random.default_rng(config.seed).uniform(0.0, 1.0, (*shape, 3)).astype(np.float32)
    raise ValueError(f"init must be 'content', 'noise' or an image array, got {init!r}.")


def transfer(
    content: np.ndarray | None,
    styles: Sequence[np.ndarray],
    config: TransferConfig | None = None,
    *,
    extractor: Any = None,
    progress: bool = True,
    on_chunk: Callable[[int, np.ndarray, list[dict]], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> TransferResult:
    """Style transfer (``content`` given) or texture synthesis (``content`` None).

    Args:
        content: the content image (H, W, 3) in [0, 1], or None for texture synthesis.
        styles: one or more style images (H, W, 3) in [0, 1]; sizes may differ.
        config: the run's settings (:class:`TransferConfig`).
        extractor: any feature extractor (see :mod:`mmdstyle.features`); ``None``: the default
            one (pretrained VGG-19 if cached, else the announced weight-free network).
        progress: show a progress bar with the current loss (on stderr).
        on_chunk: called as ``on_chunk(step, image, records)`` after every chunk of steps.
        stop: asked after every step; when it returns True the run ends there (the command line's
            Ctrl-C), ``stopped_early`` saying so, and the result holds the image that step reached.

    Returns:
        A :class:`TransferResult`. A loss that becomes NaN or infinite stops the run; the result
        then holds the last finite image and says why in ``stopped_early``.
    """
    config = TransferConfig() if config is None else config
    if not styles:
        raise ValueError("at least one style image is needed.")
    extractor = extractor_or_default(extractor)
    check_config(config, extractor, len(styles), synthesis=content is None)
    check_run_memory(config, extractor, content, styles)
    balance = config.style_weight is None and not _is_gram(config)
    config = with_default_weights(config, extractor)
    config = with_default_init(config, content)
    history: list[dict] = []
    image = None
    stopped = None
    balance_compile_seconds = 0.0  # of the first run's program, which the balance compiled
    bar = _progress_bar(config, progress)
    for stage, size in enumerate(config.stages()):
        stage_content, style_images, shape = stage_images(config, content, styles, size)
        # before anything is computed: building the objective of such a layer takes a while too
        style_shapes = [style.shape for style in style_images]
        advice = pairwise_route_advice(config, extractor, (*shape, 3), style_shapes)
        if advice and advice not in _advised:  # once per process
            _advised.add(advice)
            print(f"mmdstyle: {advice}", file=sys.stderr)
        objective = Objective(config, extractor, stage_content, style_images, stage=stage)
        start = resize(image, shape) if image is not None else initial_image(config, stage_content, shape)
        if balance and stage == 0:  # the first stage's objective serves the balance, then the run
            strength, balance_compile_seconds = _strength(objective, extractor, start, as_the_run=True)
            beta = balanced_style_weight(config, extractor, content, styles, strength=strength)
            config = dataclasses.replace(config, style_weight=beta)
            objective = objective.with_config(config)

        def report(
            step: int, current: np.ndarray, records: list[dict], stage: int = stage, size: int = size
        ) -> None:
            for record in records:
                record["stage"] = stage
            bar.set_postfix(loss=f"{records[-1]['loss']:.4g}", size=size, refresh=False)
            if on_chunk is not None:
                on_chunk(step, current, records)

        bar.set_postfix(size=size)  # the stage's size from its first step on; the loss after a chunk

        # one run of the optimiser per draw of the random routes: config.redraw_every steps each,
        # or the whole stage
        segment = config.redraw_every or config.steps
        done, draw = 0, 0
        while True:
            seconds = history[-1]["seconds"] if history else 0.0
            image, records, stopped = run_stage(
                objective,
                start,
                extractor=extractor,
                steps=min(segment, config.steps - done),
                first_step=stage * config.steps + done,
                first_seconds=seconds,
                on_chunk=report,
                on_step=lambda: bar.update(1),
                stop=stop,
            )
            for record in records:
                record["stage"] = stage
            history.extend(records)
            done += len(records)
            if stopped or not config.redraw_every or done >= config.steps:
                break
            draw += 1
            start = image
            objective = Objective(config, extractor, stage_content, style_images, stage=stage, draw=draw)
        if stopped:
            break
    bar.close()
    if history and balance_compile_seconds:  # reported with the run that it served, even one stopped early
        history[0]["compile_seconds"] = history[0].get("compile_seconds", 0.0) + balance_compile_seconds
    image = np.clip(image, 0.0, 1.0)
    if config.original_colors:
        image = luminance_transfer(image, resize(content, image.shape[:2]))
    return TransferResult(
        image=image.astype(np.float32), history=history, stopped_early=stopped, config=config
    )


#: Pairs (times channels / 64) of the exact pairwise route per second, value and gradient, on
#: the project's 2-core CPU: a 256 px Gaussian synthesis with random_vgg19 took 115 s a step,
#: nearly all of it relu1_1's and relu2_1's 1.5e10 pair-channel units. Only for the estimate below.
PAIRWISE_RATE = 1.3e8
#: Positions above which a layer on the exact pairwise route gets a word about its cost.
PAIRWISE_WARNING_POSITIONS = 16384
_advised: set[str] = set()


def pairwise_route_advice(
    config: TransferConfig,
    extractor: Any,
    image_shape: tuple[int, ...],
    style_shapes: Sequence[tuple[int, ...]],
) -> str | None:
    """A sentence on the cost of the exact pairwise route where a style layer has over 16k positions.

    The pairwise route costs O((m^2 + n^2 + mn) d) per step: at 256 px, VGG's relu1_1 (m = 65,536,
    d = 64) takes minutes a step on a CPU, where the random routes cost about what a Gram step does.
    Read from the settings and the shapes of the stage's image and style images alone: nothing
    is computed.
    """
    # the style layers whose loss has terms on the pairwise route, and how many; shapes only for them
    pairwise = {}
    for layer in resolve_layers(extractor, config.style_layers, role="style"):
        pairwise[layer] = config.style_spec(layer).routes(config.estimator).count("pairwise")
    layers = tuple(layer for layer, count in pairwise.items() if count)
    if not layers:
        return None

    def positions_and_channels(shape: tuple[int, ...]) -> dict[str, tuple[int, int]]:
        """(positions, channels) of each of those layers' maps for an image of this shape."""
        image = jax.ShapeDtypeStruct(tuple(shape), jnp.float32)
        maps = jax.eval_shape(lambda image: extractor(image, layers), image)
        return {layer: (int(np.prod(maps[layer].shape[:-1])), int(maps[layer].shape[-1])) for layer in layers}

    image_sizes = positions_and_channels(image_shape)
    style_sizes = [positions_and_channels(shape) for shape in style_shapes]
    slow = []
    for layer in layers:
        m, d = image_sizes[layer]
        for n, _ in (sizes[layer] for sizes in style_sizes):
            if max(m, n) > PAIRWISE_WARNING_POSITIONS:
                seconds = pairwise[layer] * (m * m + n * n + m * n) * d / 64.0 / PAIRWISE_RATE
                slow.append((layer, m, d, seconds))
    if not slow:
        return None
    seconds = sum(estimate for *_, estimate in slow)
    named = ", ".join(dict.fromkeys(f"{layer} ({m} positions, {d} channels)" for layer, m, d, _ in slow))
    return (
        f"the exact pairwise route costs O(m^2 d) per step on {named}: about {seconds:.0f} s a step "
        "for these layers on a 2-core CPU (GPUs: far less). For Gaussian kernels, '@rff(1024)' after the "
        "kernel (e.g. mmd:gaussian(sigma=median*(0.25,0.5,1,2,4))@rff(1024)) costs about what a Gram step "
        "costs; for the energy distance, '@sliced(256)'."
    )


def _is_gram(config: TransferConfig) -> bool:
    return all(str(parse_style_spec(spec)) == "gram" for spec in (config.loss, *config.layer_losses.values()))


def style_strength(
    config: TransferConfig,
    extractor: Any,
    content: np.ndarray | None,
    styles: Sequence[np.ndarray],
    *,
    as_the_run: bool = False,
) -> Strength:
    """``sum_l w_l L_style^l`` (before beta) at the image the first stage of ``config`` starts from.

    ``config`` has been through :func:`with_default_init`. ``as_the_run``: for a loss that will
    then run (see :func:`_strength`).

    Raises:
        ValueError: the style term is 0 or not finite there, so it cannot be balanced.
    """
    stage_content, stage_styles, shape = stage_images(config, content, styles, config.stages()[0])
    start = initial_image(config, stage_content, shape)
    # the run's weights, numbers as they will be there (beta does not change the style term)
    objective = Objective(with_default_weights(config, extractor), extractor, stage_content, stage_styles)
    return _strength(objective, extractor, start, as_the_run=as_the_run)


class Strength(NamedTuple):
    """A style term's strength at the start, and the seconds spent compiling the run's program for it."""

    value: float
    compile_seconds: float


def _strength(
    objective: Objective, extractor: Any, image: np.ndarray, *, as_the_run: bool = False
) -> Strength:
    """The objective's ``sum_l w_l L_style^l`` at ``image``; a ValueError where it cannot be balanced.

    ``as_the_run``: evaluated by the program a run of the objective compiles, as its first step
    does (L-BFGS: a trial at step 0; Adam: a step, whose terms are those where it starts); the
    run then finds that program compiled, and the seconds its compilation took are returned, for
    the run to report. Otherwise by a forward pass alone, cheaper to compile for an objective
    that will not run (the Gram loss a beta is balanced against), and ``compile_seconds`` is 0.
    """
    config = objective.config
    params = jnp.asarray(np.asarray(image, np.float32), config.dtype)
    compile_seconds = 0.0
    if as_the_run:
        stepper = _stepper(params, extractor, objective)
        terms, compile_seconds = stepper.start_terms(), stepper.compile_seconds
    else:
        terms = objective.terms_of(params, extractor)
    strength = float(objective.weighted_style(terms))
    if not (np.isfinite(strength) and strength > 0):
        raise ValueError(
            f"the style term of {config.loss!r} is {strength} at the starting image, so its weight cannot be "
            "balanced; give the style weight (beta) explicitly."
        )
    return Strength(strength, compile_seconds)


def balanced_style_weight(
    config: TransferConfig,
    extractor: Any,
    content: np.ndarray | None,
    styles: Sequence[np.ndarray],
    *,
    strength: float | None = None,
) -> float:
    """Beta for ``config``'s loss such that its style term starts where the Gram loss's would.

    Kernel MMDs differ by many orders of magnitude (a Gaussian MMD^2 is at most 2; a Gram loss
    grows with the fourth power of the features), so one default beta cannot serve them all. The
    extractor's default beta (``config.style_weight``, filled in by ``with_default_weights``) is
    tuned for the Gram loss; it is scaled by ``strength(gram) / strength(loss)`` at the starting
    image, the balance that :func:`mmdstyle.analysis.compare_losses` applies between losses.
    :func:`transfer` applies it to an unset beta, passing the ``strength`` of the loss at the
    start, which it has from the objective it runs (else it is computed here).
    """
    gram = dataclasses.replace(config, loss="gram", layer_losses={})
    gram_strength = style_strength(gram, extractor, content, styles).value
    if strength is None:
        strength = style_strength(config, extractor, content, styles).value
    return float(config.style_weight * gram_strength / strength)


def synthesize(
    styles: Sequence[np.ndarray], config: TransferConfig | None = None, **options
) -> TransferResult:
    """Texture synthesis: :func:`transfer` without a content image, starting from seeded noise."""
    return transfer(None, styles, config, **options)


def _progress_bar(config: TransferConfig, progress: bool):
    return progress_bar(
        total=config.steps * len(config.stages()), disable=not progress, unit="step", leave=False
    )
