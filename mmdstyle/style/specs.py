"""A small language for style losses, for command lines and configuration files.

    gram                              Gatys' Gram loss (||G_x/m - G_y/n||^2 / (4 d^2) if m != n)
    mmd                               MMD^2 / (4 d^2) with Polynomial(2): the Gram loss as an MMD
    mmd:linear                        ... with any kernel: linear, poly2, poly(degree=3, c=1, scale=1),
    mmd:gaussian(sigma=median)        gaussian(sigma=...), laplacian(sigma=...); sigma is a number,
    mmd:laplacian(sigma=2.5)          "median" (the median heuristic) or "mean" (Li et al.'s choice),
                                      computed per layer from the style image's features
    mmd:gaussian(sigma=0.5*median)    a bandwidth relative to the data
    mmd:gaussian(sigma=median*(0.25,0.5,1,2,4))  several bandwidths at once: their mean kernel
                                      (a MultiGaussian for gaussian), so k(a, a) = 1
    mmd:energy                        the energy distance (k(a, b) = |a| + |b| - |a - b|)
    mmd:(linear + 0.5*gaussian(sigma=median))   kernel sums in parentheses; products and
    mmd:0.5*linear * poly2                      scalings also without
    mmd:gaussian(sigma=median)@rff(1024)   the route of mmdstyle.mmd2 after '@': pairwise, feature,
    mmd:energy@sliced(256)                 rff(num_features) or sliced(num_directions); without
                                           '@', the exact default (feature, else pairwise)
    bn                                Li et al.'s mean/std (batch-norm statistics) loss
    sw                                sliced Wasserstein (Heitz et al.): sorted projections on d
    sw(directions=256)                random directions (or as many as given), drawn like a route's
    w2                                W2 between Gaussians fitted to the features (means and
    w2(epsilon=1e-4)                  covariances, epsilon added to the covariances)
    cmd                               central moment discrepancy (Kalischek et al.): per channel,
    cmd(order=5, squash=none)         moments 1..order after a sigmoid (squash=none: without)
    0.5*mmd:linear + 0.5*bn           weighted sums of all of these (Li et al.'s fusion)

The MMD estimator is chosen apart (``build(target, estimator, key)``); with ``"linear"`` the
samples are paired through one fixed shuffled order, since neighbouring pixels are correlated.
The random routes and the sliced Wasserstein loss draw their frequencies or directions once,
from the ``key`` given to ``build``: the built term is then a deterministic function of its
samples.

Parsing gives a :class:`StyleSpec` that prints back as the canonical text (``str(parse(s))``
parses to the same spec) and builds, for one layer, the style term the transfer engine
minimises: a function ``term(samples, target_samples) -> scalar``. Parsing happens at the edge
(command line, configuration); the math core only ever sees kernels and functions.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from mmdstyle import random_features, sliced
from mmdstyle._checks import ESTIMATORS
from mmdstyle._pytrees import pytree_dataclass
from mmdstyle.bandwidth import mean_bandwidth, median_bandwidth
from mmdstyle.kernels import AbstractKernel, Energy, Gaussian, Laplacian, Linear, MultiGaussian, Polynomial
from mmdstyle.losses import (
    bn_loss_to_target,
    bn_target,
    gram_loss_to_target,
    gram_target,
    mmd2_to_style_loss,
    mmd_style_loss,
)
from mmdstyle.mmd import (
    DEFAULT_NUM_DIRECTIONS,
    DEFAULT_NUM_FEATURES,
    RANDOM_ROUTES,
    PairwiseTarget,
    mmd2,
    pairwise_mmd2_to_target,
    pairwise_target,
    select_route,
)
from mmdstyle.moments import DEFAULT_ORDER, cmd_loss_to_target, cmd_target
from mmdstyle.wasserstein import (
    DEFAULT_EPSILON,
    GaussianTarget,
    SlicedWassersteinTarget,
    gaussian_w2_target,
    gaussian_w2_to_target,
    sliced_directions,
    sliced_wasserstein_target,
    sliced_wasserstein_to_target,
)

StyleTerm = Callable[[Float[Array, "m d"], Float[Array, "n d"]], Float[Array, ""]]

#: Every form of a loss spec, with what it means: the listing at the top of this module, which
#: ``mmdstyle transfer --help`` shows and every spec error points to.
LOSS_FORMS = __doc__.split("\n\n")[1] if __doc__ else "(python -OO removed the listing)"
#: The same for a kernel spec alone (``mmdstyle test --kernel``, ``compare --kernels``).
KERNEL_FORMS = """\
    linear                            a^T b: the means
    poly2                             (a^T b)^2: the Gram matrices
    poly(degree=3, c=1, scale=1)      (scale a^T b + c)^degree
    gaussian(sigma=median)            sigma: a number, "median" or "mean" (from the features), or a
    laplacian(sigma=0.5*median)       multiple of either; gaussian(sigma=median*(0.5,1,2)): the
                                      mean kernel of several bandwidths
    energy                            |a| + |b| - |a - b|: the energy distance
    linear + 0.5*gaussian(sigma=median)   sums, products and positive scalings
    gaussian(sigma=median)@rff(1024)  a route after '@': pairwise, feature, rff(num_features) or
    energy@sliced(256)                sliced(num_directions)"""

_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_]\w*)|(?P<symbol>[-+*(),=:@]))"
)
KERNEL_PARAMETERS = {
    "linear": (),
    "poly2": (),
    "poly": ("degree", "c", "scale"),
    "gaussian": ("sigma",),
    "laplacian": ("sigma",),
    "energy": (),
}
#: The losses beyond MMD and the parameters each takes in parentheses, with their defaults.
LOSS_PARAMETERS = {
    "sw": {"directions": None},
    "w2": {"epsilon": DEFAULT_EPSILON},
    "cmd": {"order": DEFAULT_ORDER, "squash": "sigmoid"},
}
DATA_BANDWIDTHS = ("median", "mean")
#: Routes that can follow '@', and the size each takes in parentheses (None: no size).
ROUTE_SIZES = {
    "pairwise": None,
    "feature": None,
    "rff": DEFAULT_NUM_FEATURES,
    "sliced": DEFAULT_NUM_DIRECTIONS,
}


#: Parentheses nested deeper than this, or more kernels than this in one spec, are refused: the
#: parser and every function that walks a kernel recurse once per level and once per term of a
#: sum or product (built as nested pairs), and a deeper spec would exhaust Python's recursion limit.
MAX_NESTING = 64
MAX_KERNELS = 64
#: Characters of a spec that an error message shows, around the position of the problem.
SHOWN_CHARACTERS = 80


def reads_samples(term: StyleTerm) -> bool:
    """Whether ``term(x, y)`` reads the style's samples ``y``; a term that says nothing, does."""
    return getattr(term, "reads_samples", True)


class SpecError(ValueError):
    """A loss spec that cannot be parsed; the message shows where and what was expected."""


# ---------------------------------------------------------------- kernel expressions


@dataclass(frozen=True)
class Bandwidths:
    """A bandwidth as written: ``rule`` (median, mean) times ``values``, or the numbers ``values``.

    ``median`` is ``Bandwidths("median", (1.0,))``, ``0.5*median`` is ``Bandwidths("median", (0.5,))``,
    ``median*(0.25,0.5,1)`` has three factors and ``(0.5,1,2)`` (rule None) three numbers.
    """

    rule: str | None
    values: tuple[float, ...]

    def __str__(self) -> str:
        if self.rule is None:
            return f"({','.join(_number(v) for v in self.values)})"
        if len(self.values) > 1:
            return f"{self.rule}*({','.join(_number(v) for v in self.values)})"
        return self.rule if self.values[0] == 1.0 else f"{_number(self.values[0])}*{self.rule}"

    def resolve(self, target: Array | None, atom: KernelAtom) -> Array | float | tuple[Array | float, ...]:
        """The bandwidth(s): the rule's sigma from ``target`` times each value (a tuple if several).

        A ``target`` of None takes the rule's sigma as 1 (a placeholder, to check a spec's structure).
        """
        sigma = 1.0
        if self.rule is not None and target is not None:
            sigma = (median_bandwidth if self.rule == "median" else mean_bandwidth)(target)
            if not float(sigma) > 0:
                raise SpecError(
                    f"{atom}: the {self.rule} distance between this layer's style features is 0 (the layer "
                    "is constant on the style image); give sigma a number, or use another layer or loss."
                )
        values = tuple(value if self.rule is None else sigma * value for value in self.values)
        return values if len(values) > 1 else values[0]


@dataclass(frozen=True)
class KernelAtom:
    """One named kernel of a spec with its parameters as written, e.g. ``gaussian(sigma=median)``."""

    name: str
    parameters: tuple[tuple[str, float | Bandwidths], ...] = ()

    def __str__(self) -> str:
        if not self.parameters:
            return self.name
        return f"{self.name}({', '.join(f'{key}={_number(value)}' for key, value in self.parameters)})"

    def build(self, target: Array | None) -> AbstractKernel:
        """The kernel; a ``sigma`` of ``median`` (the default) or ``mean`` is computed from ``target``.

        Several bandwidths give their mean kernel: a :class:`~mmdstyle.kernels.MultiGaussian` for
        ``gaussian``, a sum of Laplacians weighted ``1/K`` for ``laplacian``. A ``target`` of None
        builds a placeholder (data-driven bandwidths taken as 1) whose structure can be checked.

        Raises:
            SpecError: that data-driven bandwidth is 0 (the layer is constant on the style image).
        """
        options = dict(self.parameters)
        if self.name == "linear":
            return Linear()
        if self.name == "poly2":
            return Polynomial(2)
        if self.name == "energy":
            return Energy()
        if self.name == "poly":
            degree = int(options.get("degree", 2))
            return Polynomial(degree, c=options.get("c", 0.0), scale=options.get("scale", 1.0))
        sigma = options.get("sigma", Bandwidths("median", (1.0,)))
        if isinstance(sigma, Bandwidths):
            sigma = sigma.resolve(target, self)
        if not isinstance(sigma, tuple):
            return Gaussian(sigma) if self.name == "gaussian" else Laplacian(sigma)
        if self.name == "gaussian":
            return MultiGaussian(jnp.stack([jnp.asarray(value) for value in sigma]))
        laplacians = [Laplacian(value) for value in sigma]
        total = laplacians[0]
        for laplacian in laplacians[1:]:
            total = total + laplacian
        return (1.0 / len(laplacians)) * total


@dataclass(frozen=True)
class KernelCombination:
    """A sum (``operator`` ``"+"``) or product (``"*"``) of kernel expressions."""

    operator: str  # "+" or "*"
    parts: tuple[KernelExpression, ...]

    def __str__(self) -> str:
        if self.operator == "*":
            return " * ".join(_operand(part) for part in self.parts)
        nested = lambda part: isinstance(part, KernelCombination) and part.operator == "+"  # noqa: E731
        return " + ".join(f"({part})" if nested(part) else str(part) for part in self.parts)

    def build(self, target: Array | None) -> AbstractKernel:
        """The parts' kernels, each built from ``target``, added or multiplied left to right."""
        kernels = [part.build(target) for part in self.parts]
        result = kernels[0]
        for kernel in kernels[1:]:
            result = result + kernel if self.operator == "+" else result * kernel
        return result


@dataclass(frozen=True)
class KernelScaling:
    """A kernel expression times a factor, e.g. ``0.5*linear``."""

    factor: float
    kernel: KernelExpression

    def __str__(self) -> str:
        return f"{_number(self.factor)}*{_operand(self.kernel)}"

    def build(self, target: Array | None) -> AbstractKernel:
        """``factor`` times the kernel built from ``target``."""
        return self.factor * self.kernel.build(target)


KernelExpression = KernelAtom | KernelCombination | KernelScaling


@dataclass(frozen=True)
class RoutedKernel:
    """A kernel spec with the route its MMD takes, e.g. ``gaussian(sigma=median)@rff(1024)``.

    ``build`` gives the kernel as for the bare spec; :meth:`mmd2_options` the matching keyword
    arguments of :func:`mmdstyle.mmd2`.
    """

    kernel: KernelExpression
    route: str
    size: int | None = None

    def __str__(self) -> str:
        return f"{_operand(self.kernel)}@{self.route}" + ("" if self.size is None else f"({self.size})")

    def build(self, target: Array | None) -> AbstractKernel:
        """The kernel, as :meth:`KernelAtom.build` gives it."""
        return self.kernel.build(target)

    def mmd2_options(self, key: jax.Array | None) -> dict:
        """``route``, the size and, for a random route, ``key`` for :func:`mmdstyle.mmd2`."""
        options: dict = {"route": self.route}
        if self.route == "rff":
            options["num_features"] = self.size
        elif self.route == "sliced":
            options["num_directions"] = self.size
        if self.route in RANDOM_ROUTES:
            options["key"] = key
        return options


def mmd2_options(kernel: KernelExpression | RoutedKernel, key: jax.Array | None = None) -> dict:
    """The keyword arguments of :func:`mmdstyle.mmd2` that a parsed kernel spec asks for.

    ``{}`` (the default route) for a spec without ``@``; ``key`` is passed to random routes only.
    """
    return kernel.mmd2_options(key) if isinstance(kernel, RoutedKernel) else {}


def _operand(part: KernelExpression) -> str:
    """A kernel as an operand of ``*`` or ``mmd:``: composites in parentheses."""
    return str(part) if isinstance(part, KernelAtom) else f"({part})"


# ---------------------------------------------------------------- style losses


@dataclass(frozen=True)
class LossAtom:
    """``gram``, ``bn``, ``mmd:<kernel>[@route[(size)]]``, or ``sw``, ``w2``, ``cmd`` with parameters.

    ``size`` is the random route's number of features (``rff``) or directions (``sliced``).
    ``parameters`` are those of ``sw``, ``w2`` and ``cmd`` that differ from their defaults
    (``LOSS_PARAMETERS``), in its order.
    """

    kind: str
    kernel: KernelExpression | None = None
    route: str = "auto"
    size: int | None = None
    parameters: tuple[tuple[str, int | float | str | None], ...] = ()

    def __str__(self) -> str:
        if self.kind in LOSS_PARAMETERS:
            inside = ", ".join(f"{key}={_parameter_text(value)}" for key, value in self.parameters)
            return f"{self.kind}({inside})" if inside else self.kind
        if self.kind != "mmd" or self.kernel is None:
            return self.kind
        route = "" if self.route == "auto" else f"@{self.route}"
        size = "" if self.size is None else f"({self.size})"
        return f"mmd:{_operand(self.kernel)}{route}{size}"

    @property
    def random(self) -> bool:
        """Whether the term draws at random when built (a random route, or sliced Wasserstein)."""
        return self.route in RANDOM_ROUTES or self.kind == "sw"

    def parameter(self, name: str) -> int | float | str | None:
        """The value of a parameter of ``sw``, ``w2`` or ``cmd``, its default if not given."""
        return dict(self.parameters).get(name, LOSS_PARAMETERS[self.kind][name])


@dataclass(frozen=True)
class StyleSpec:
    """A weighted sum of style losses, e.g. ``0.5*mmd:linear + 0.5*bn``."""

    terms: tuple[tuple[float, LossAtom], ...]

    def __str__(self) -> str:
        return " + ".join(
            str(atom) if weight == 1.0 else f"{_number(weight)}*{atom}" for weight, atom in self.terms
        )

    @property
    def random(self) -> bool:
        """Whether a term takes a random route (and so building needs a key)."""
        return any(atom.random for _, atom in self.terms)

    def check_estimator(self, estimator: str) -> None:
        """The estimator is known and every mmd term's route exists with it (checked without data).

        Raises:
            SpecError: an unknown estimator, or a route the estimator lacks (the linear-time
                estimator has no random route).
        """
        self.routes(estimator)

    def routes(self, estimator: str) -> tuple[str, ...]:
        """The route each mmd term takes with ``estimator`` (:func:`mmdstyle.mmd.select_route`).

        Raises:
            SpecError: as :meth:`check_estimator`.
        """
        if estimator not in ESTIMATORS:
            raise SpecError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}.")
        routes = []
        for _, atom in self.terms:
            if atom.kind != "mmd":
                continue
            try:
                routes.append(
                    select_route((atom.kernel or KernelAtom("poly2")).build(None), estimator, atom.route)
                )
            except ValueError as error:
                raise SpecError(f"{atom} with the {estimator} estimator: {error}") from None
        return tuple(routes)

    def build(
        self, target: Float[Array, "n d"], estimator: str = "biased", key: jax.Array | None = None
    ) -> StyleTerm:
        """The style term for one layer whose style features (samples) are ``target``.

        Data-driven bandwidths (``median``, ``mean``) are computed here, once, from ``target``.
        Term i of a random route draws from ``jax.random.fold_in(key, i)``.

        Raises:
            SpecError: an unknown estimator, a random route without a key or with the
                linear-time estimator, or a bandwidth of 0.
        """
        self.check_estimator(estimator)
        if self.random and key is None:
            raise SpecError(
                f"{self}: a random route needs a key to draw from; pass key=jax.random.key(seed)."
            )
        weights, terms = [], []
        for index, (weight, atom) in enumerate(self.terms):
            if atom.kind == "gram":
                term = GramTerm(gram_target(target))
            elif atom.kind == "bn":
                term = BNTerm(bn_target(target))
            elif atom.kind == "sw":
                directions = sliced_directions(
                    target.shape[1],
                    target.dtype,
                    key=jax.random.fold_in(key, index),
                    num_directions=atom.parameter("directions"),
                )
                term = SlicedWassersteinTerm(sliced_wasserstein_target(target, directions))
            elif atom.kind == "w2":
                term = GaussianW2Term(gaussian_w2_target(target, epsilon=atom.parameter("epsilon")))
            elif atom.kind == "cmd":
                squash = atom.parameter("squash")
                term = CMDTerm(cmd_target(target, order=atom.parameter("order"), squash=squash), squash)
            else:
                kernel = (atom.kernel or KernelAtom("poly2")).build(target)
                term_key = jax.random.fold_in(key, index) if atom.route in RANDOM_ROUTES else None
                side = None  # the style's side of the estimate, computed once where it is a sum
                if atom.route == "rff":
                    side = random_features.feature_target(target, kernel, term_key, atom.size)
                elif atom.route == "sliced":
                    side = sliced.direction_target(target, kernel, term_key, atom.size)
                elif select_route(kernel, estimator, atom.route) == "pairwise":
                    # without the samples: the term is called with them (the objective holds
                    # them once, and a second reference would count them twice in the compiled
                    # step's memory analysis)
                    side = dataclasses.replace(pairwise_target(target, kernel, estimator), samples=None)
                term = MMDTerm(kernel, estimator, atom.route, atom.size, side)
            weights.append(weight)
            terms.append(term)
        return WeightedTerms(tuple(weights), tuple(terms))


# The built terms are pytrees: a kernel's numbers (a data-driven bandwidth) are traced arguments
# of the compiled transfer step, so one program serves every style image of the same shapes.


@pytree_dataclass
@dataclass(frozen=True)
class GramTerm:
    """Gatys' Gram loss; for unequal sample counts its natural form ||G_x/m - G_y/n||^2 / (4 d^2).

    The style's side, ``target = G_y/n``, is computed once, when the term is built
    (:func:`mmdstyle.losses.gram_target`), not at every evaluation of the objective. A style
    image of another size than the output has another number of positions; Gatys' formula
    assumes equal counts, and the MMD form (docs/math.md, "The Gram loss is a biased MMD") is
    what it becomes otherwise.
    """

    target: Float[Array, "d d"]

    #: the style's samples are not read at evaluation: their target holds all the term needs
    reads_samples = False

    def __call__(self, x: Array, y: Array) -> Array:
        """:func:`mmdstyle.gram_style_loss` of x against the y the term was built from (its ``target``)."""
        return gram_loss_to_target(x, self.target)


@pytree_dataclass
@dataclass(frozen=True)
class BNTerm:
    """Li et al.'s BN-statistics loss (:func:`mmdstyle.bn_style_loss`).

    The style's side, its channel means and standard deviations, is computed once, when the term
    is built (:func:`mmdstyle.losses.bn_target`).
    """

    target: Float[Array, "2 d"]

    #: the style's samples are not read at evaluation: their target holds all the term needs
    reads_samples = False

    def __call__(self, x: Array, y: Array) -> Array:
        """:func:`mmdstyle.bn_style_loss` of x against the y the term was built from (its ``target``)."""
        return bn_loss_to_target(x, self.target)


@pytree_dataclass
@dataclass(frozen=True)
class SlicedWassersteinTerm:
    """Heitz et al.'s sliced Wasserstein loss (:func:`mmdstyle.sliced_wasserstein_loss`).

    The directions, drawn when the term is built, and the style's sorted projections on them are
    its ``target`` (:func:`mmdstyle.wasserstein.sliced_wasserstein_target`).
    """

    target: SlicedWassersteinTarget

    #: the style's samples are not read at evaluation: their target holds all the term needs
    reads_samples = False

    def __call__(self, x: Array, y: Array) -> Array:
        """The loss of x against the y the term was built from (its ``target``)."""
        return sliced_wasserstein_to_target(x, self.target)


@pytree_dataclass
@dataclass(frozen=True)
class GaussianW2Term:
    """The W2 distance of Gaussians fitted to the features (:func:`mmdstyle.gaussian_w2_loss`).

    The style's means, covariance trace and covariance square root are its ``target``, computed
    once (:func:`mmdstyle.wasserstein.gaussian_w2_target`).
    """

    target: GaussianTarget

    #: the style's samples are not read at evaluation: their target holds all the term needs
    reads_samples = False

    def __call__(self, x: Array, y: Array) -> Array:
        """The loss of x against the y the term was built from (its ``target``)."""
        return gaussian_w2_to_target(x, self.target)


@pytree_dataclass
@dataclass(frozen=True)
class CMDTerm:
    """The central moment discrepancy (:func:`mmdstyle.cmd_loss`); the style's moments are its ``target``."""

    target: Float[Array, "K d"]
    squash: str | None = field(metadata={"static": True})

    #: the style's samples are not read at evaluation: their target holds all the term needs
    reads_samples = False

    def __call__(self, x: Array, y: Array) -> Array:
        """The loss of x against the y the term was built from (its ``target``)."""
        return cmd_loss_to_target(x, self.target, squash=self.squash)


@pytree_dataclass
@dataclass(frozen=True)
class MMDTerm:
    """``MMD^2[x, y; kernel] / (4 d^2)`` with one estimator and route (:func:`mmdstyle.mmd_style_loss`).

    ``target`` holds the style's side of the estimate, computed once, when the term is built: on
    the pairwise route the style's own kernel sum (:func:`mmdstyle.mmd.pairwise_target`, a
    quarter of the kernel values when m = n; the samples themselves come with each call, as
    ``y``, which must be the style the term was built from); on a random route (``rff``,
    ``sliced``) the ``size`` features or directions drawn once, with the style's mean features or
    sorted projections (``y`` then read only for its shape, or for a sum kernel's exact
    inner-product terms). The feature route forms both sides' means and Gram matrices at every
    call, O((m + n) d^2): no target.
    """

    kernel: AbstractKernel
    estimator: str = field(metadata={"static": True})
    route: str = field(default="auto", metadata={"static": True})
    size: int | None = field(default=None, metadata={"static": True})
    target: PairwiseTarget | random_features.FeatureTarget | sliced.DirectionTarget | None = None

    @property
    def reads_samples(self) -> bool:
        """Whether an evaluation reads the style's samples ``y``, or only the target built from them.

        A random route's target holds the style's side whole, unless the kernel has exact
        inner-product terms (computed from ``y``); the pairwise route reads ``y`` for the cross
        sum; the feature route and the linear-time estimator read it whole.
        """
        if self.estimator == "linear" or self.target is None or isinstance(self.target, PairwiseTarget):
            return True
        if isinstance(self.target, sliced.DirectionTarget):
            return False
        return random_features.split_kernel(self.kernel)[1] is not None

    def __call__(self, x: Array, y: Array) -> Array:
        """The loss of ``x`` against ``y``, for ``"linear"`` after a fixed reordering of each.

        The reordering is one permutation per sample count (docs/math.md, "Linear-time route").
        """
        if self.estimator == "linear":
            # the linear-time estimator pairs consecutive samples, and neighbouring pixels are
            # correlated: pair them through one fixed random order instead (Li et al. shuffle too)
            x, y = x[_permutation(x.shape[0])], y[_permutation(y.shape[0])]
        if self.target is None:
            return mmd_style_loss(x, y, self.kernel, self.estimator, route=self.route)
        unbiased = self.estimator == "unbiased"
        if isinstance(self.target, PairwiseTarget):
            value = pairwise_mmd2_to_target(x, dataclasses.replace(self.target, samples=y))
        elif isinstance(self.target, sliced.DirectionTarget):
            value = sliced.sliced_mmd2_to_target(x, self.target, unbiased=unbiased)
        else:
            value = random_features.rff_mmd2_to_target(x, self.target, unbiased=unbiased)
            _, exact = random_features.split_kernel(self.kernel)
            if exact is not None:
                value = value + mmd2(x, y, exact, self.estimator, route="feature")
        return mmd2_to_style_loss(value, x.shape[1])


def _permutation(count: int) -> np.ndarray:
    return np.random.default_rng(count).permutation(count)


@pytree_dataclass
@dataclass(frozen=True)
class WeightedTerms:
    """``sum_i weights[i] * terms[i](x, y)``: a spec's weighted sum, as the engine evaluates it."""

    weights: tuple[float, ...] = field(metadata={"static": True})
    terms: tuple[StyleTerm, ...]

    @property
    def reads_samples(self) -> bool:
        """Whether any of the terms reads the style's samples at evaluation."""
        return any(reads_samples(term) for term in self.terms)

    def __call__(self, x: Array, y: Array) -> Array:
        """``sum_i weights[i] * terms[i](x, y)``; a weight of 1 multiplies nothing."""
        total = None
        for weight, term in zip(self.weights, self.terms, strict=True):
            value = term(x, y)
            value = value if weight == 1.0 else weight * value
            total = value if total is None else total + value
        return total


def _parameter_text(value: int | float | str | None) -> str:
    """A parameter of ``sw``, ``w2`` or ``cmd`` as a spec writes it (``None``: ``none``)."""
    if value is None or isinstance(value, str):
        return str(value).lower()
    return _number(float(value))


def _number(value: float | str | Bandwidths) -> str:
    if isinstance(value, (str, Bandwidths)):
        return str(value)
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


# ---------------------------------------------------------------- the parser


class _Parser:
    """Recursive descent over tokens; every error says where it happened and what was expected."""

    def __init__(self, text: str, what: str = "loss spec") -> None:
        self.text = text
        self.what = what
        self.tokens: list[tuple[str, str, int]] = []
        position = 0
        while position < len(text):
            if text[position:].strip() == "":
                break
            match = _TOKEN.match(text, position)
            if match is None:
                self.fail(len(text) - len(text[position:].lstrip()), "an unexpected character")
            kind = match.lastgroup
            self.tokens.append((kind, match.group(kind), match.start(kind)))
            position = match.end()
        self.index = 0
        self.depth = 0  # of the parentheses around the kernel being read
        self.kernels = 0  # read so far

    def fail(self, position: int, problem: str) -> None:
        # a long spec is named by its length and shown around the position only
        text, shown, column = self.text, self.text, position
        if len(text) > SHOWN_CHARACTERS:
            start = max(0, min(position - SHOWN_CHARACTERS // 2, len(text) - SHOWN_CHARACTERS))
            end = start + SHOWN_CHARACTERS
            shown = ("..." if start else "") + text[start:end] + ("..." if end < len(text) else "")
            column = position - start + (3 if start else 0)
        named = f"{text!r}" if len(text) <= SHOWN_CHARACTERS else f"of {len(text)} characters"
        forms = "mmdstyle test --help" if self.what == "kernel spec" else "mmdstyle transfer --help"
        raise SpecError(
            f"cannot read the {self.what} {named}: {problem} at position {position + 1}:\n"
            f"  {shown}\n  {' ' * column}^\n"
            f"Every form of a {self.what}: {forms} (in Python: help(mmdstyle.style.specs))."
        )

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def position(self) -> int:
        token = self.peek()
        return token[2] if token else len(self.text)

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        token = self.peek()
        if (
            token is None
            or (value is not None and token[1] != value)
            or (kind is not None and token[0] != kind)
        ):
            expected = repr(value) if value else {"name": "a name", "number": "a number"}.get(kind, "more")
            found = repr(token[1]) if token else "the end"
            self.fail(self.position(), f"expected {expected}, found {found}")
        self.index += 1
        return token[1]

    def accept(self, value: str) -> bool:
        token = self.peek()
        if token is not None and token[1] == value:
            self.index += 1
            return True
        return False

    def number(self) -> float:
        sign = -1.0 if self.accept("-") else 1.0
        return sign * float(self.take(kind="number"))

    # spec := term ('+' term)*
    def spec(self) -> StyleSpec:
        terms = [self.term()]
        while self.accept("+"):
            terms.append(self.term())
        if self.peek() is not None:
            self.fail(self.position(), f"unexpected {self.peek()[1]!r} (join terms with '+')")
        return StyleSpec(tuple(terms))

    # kernel_spec := kernel_sum ['@' route], the whole text
    def kernel_spec(self) -> KernelExpression | RoutedKernel:
        kernel = self.kernel_sum()
        if self.accept("@"):
            kernel = RoutedKernel(kernel, *self.route(kernel))
        if self.peek() is not None:
            self.fail(self.position(), f"unexpected {self.peek()[1]!r}")
        return kernel

    # term := [number '*'] loss
    def term(self) -> tuple[float, LossAtom]:
        weight = 1.0
        if self.peek() is not None and (self.peek()[0] == "number" or self.peek()[1] == "-"):
            position = self.position()
            weight = self.number()
            self.take("*")
            if not (math.isfinite(weight) and weight > 0):
                self.fail(position, "a weight must be a positive number")
        return weight, self.loss()

    # loss := 'gram' | 'bn' | 'mmd' [':' kernel_product] ['@' route ['(' integer ')']]
    #         | ('sw' | 'w2' | 'cmd') ['(' name '=' value (',' name '=' value)* ')']
    def loss(self) -> LossAtom:
        position = self.position()
        name = self.take(kind="name").lower()
        if name in ("gram", "bn"):
            return LossAtom(name)
        if name in LOSS_PARAMETERS:
            return LossAtom(name, parameters=self.loss_parameters(name))
        if name != "mmd":
            self.fail(position, f"unknown loss {name!r} (use gram, mmd, bn, sw, w2 or cmd)")
        kernel = self.kernel_product() if self.accept(":") else KernelAtom("poly2")  # a '+' ends the term
        if not self.accept("@"):
            return LossAtom("mmd", kernel)
        route, size = self.route(kernel, loss=True)
        return LossAtom("mmd", kernel, route, size)

    # parameters of sw, w2 and cmd: those given that differ from the defaults, in LOSS_PARAMETERS' order
    def loss_parameters(self, name: str) -> tuple[tuple[str, int | float | str | None], ...]:
        defaults = LOSS_PARAMETERS[name]
        given: dict[str, int | float | str | None] = {}
        if self.accept("("):
            while True:
                key_position = self.position()
                key = self.take(kind="name").lower()
                if key not in defaults or key in given:
                    problem = "is given twice" if key in given else "is not one of its parameters"
                    self.fail(key_position, f"{key!r} {problem} ({name} takes {', '.join(defaults)})")
                self.take("=")
                value_position = self.position()
                if key == "squash":
                    value = self.take(kind="name").lower()
                    if value not in ("sigmoid", "none"):
                        self.fail(value_position, "squash must be sigmoid or none")
                    given[key] = None if value == "none" else value
                else:
                    number = self.number()
                    if key == "epsilon":
                        if not (math.isfinite(number) and number >= 0):
                            self.fail(value_position, "epsilon must be a number >= 0")
                        given[key] = number
                    else:
                        if not (number.is_integer() and number >= 1):
                            self.fail(value_position, f"{key} must be a whole number >= 1")
                        given[key] = int(number)
                if not self.accept(","):
                    break
            self.take(")")
        return tuple((key, given[key]) for key in defaults if key in given and given[key] != defaults[key])

    # route := name ['(' integer ')'], after '@'
    def route(self, kernel: KernelExpression, *, loss: bool = False) -> tuple[str, int | None]:
        route_position = self.position()
        route = self.take(kind="name").lower()
        if route not in ROUTE_SIZES:
            self.fail(route_position, f"unknown route {route!r} (use {', '.join(ROUTE_SIZES)})")
        size = ROUTE_SIZES[route]
        if self.accept("("):
            size_position = self.position()
            if size is None:
                self.fail(size_position, f"the {route} route takes no size")
            number = self.number()
            if not (number.is_integer() and number >= 1):
                self.fail(size_position, f"the {route} route's size must be a whole number >= 1")
            size = int(number)
            self.take(")")
        self.check_route(kernel, route, size, route_position, loss=loss)
        return route, size

    def check_route(
        self, kernel: KernelExpression, route: str, size: int | None, position: int, *, loss: bool
    ) -> None:
        """The route exists for the kernel, checked on a placeholder built without data.

        A loss's random-feature gradients must also have finite variance.
        """
        placeholder = kernel.build(None)
        try:
            select_route(placeholder, "biased", route)
            if route == "rff":
                random_features.check_enough_features(placeholder, size)
                if loss:
                    random_features.check_gradients_have_finite_variance(placeholder)
        except ValueError as error:
            self.fail(position, str(error).replace(repr(placeholder), str(kernel)).rstrip("."))

    # kernel_sum := kernel_product ('+' kernel_product)*   (only inside parentheses)
    def kernel_sum(self) -> KernelExpression:
        parts = [self.kernel_product()]
        while self.accept("+"):
            parts.append(self.kernel_product())
        return parts[0] if len(parts) == 1 else KernelCombination("+", tuple(parts))

    # kernel_product := (number | kernel_operand) ('*' (number | kernel_operand))*
    def kernel_product(self) -> KernelExpression:
        factor, parts = None, []
        while True:
            token = self.peek()
            if token is not None and (token[0] == "number" or token[1] == "-"):
                position = self.position()
                number = self.number()
                if not (math.isfinite(number) and number > 0):
                    self.fail(position, "a kernel's factor must be a positive number")
                factor = number if factor is None else factor * number
            else:
                parts.append(self.kernel_operand())
            if not self.accept("*"):
                break
        if not parts:
            self.fail(self.position(), "expected a kernel after the factor")
        product = parts[0] if len(parts) == 1 else KernelCombination("*", tuple(parts))
        return product if factor is None else KernelScaling(factor, product)

    # kernel_operand := '(' kernel_sum ')' | name ['(' key '=' value (',' key '=' value)* ')']
    def kernel_operand(self) -> KernelExpression:
        position = self.position()
        if self.accept("("):
            self.depth += 1
            if self.depth > MAX_NESTING:
                self.fail(position, f"parentheses nested more than {MAX_NESTING} deep")
            inner = self.kernel_sum()
            self.take(")")
            self.depth -= 1
            return inner
        position = self.position()
        name = self.take(kind="name").lower()
        name = {"polynomial": "poly", "rbf": "gaussian"}.get(name, name)
        self.kernels += 1
        if self.kernels > MAX_KERNELS:
            self.fail(position, f"more than {MAX_KERNELS} kernels in one spec")
        if name not in KERNEL_PARAMETERS:
            self.fail(position, f"unknown kernel {name!r} (use {', '.join(KERNEL_PARAMETERS)})")
        parameters: dict[str, float | str] = {}
        if self.accept("("):
            while True:
                key_position = self.position()
                key = self.take(kind="name").lower()
                if key not in KERNEL_PARAMETERS[name]:
                    allowed = ", ".join(KERNEL_PARAMETERS[name]) or "no parameters"
                    self.fail(key_position, f"{name} takes {allowed}, not {key!r}")
                self.take("=")
                value_position = self.position()
                if key == "sigma":
                    value = self.bandwidths()
                else:
                    value = self.number()
                    positive = key in ("scale", "degree")
                    if not math.isfinite(value) or value < 0 or (positive and value == 0):
                        self.fail(value_position, f"{key} must be {'> 0' if positive else '>= 0'}")
                    if key == "degree" and not value.is_integer():
                        self.fail(value_position, "the degree must be a whole number")
                parameters[key] = value
                if not self.accept(","):
                    break
            self.take(")")
        order = KERNEL_PARAMETERS[name]
        return KernelAtom(name, tuple((key, parameters[key]) for key in order if key in parameters))

    # bandwidths := number | [number '*'] rule ['*' (number | numbers)] | numbers;  rule := median | mean
    def bandwidths(self) -> float | Bandwidths:
        position = self.position()
        factor, rule, values = 1.0, None, None
        token = self.peek()
        if token is not None and token[1] == "(":
            values = self.numbers()
        else:
            if token is not None and token[0] != "name":
                factor = self.positive_number()
                if not self.accept("*"):
                    return factor
            token = self.peek()
            if token is None or token[0] != "name" or token[1].lower() not in DATA_BANDWIDTHS:
                self.fail(
                    self.position(), "sigma must be a number or median or mean, or several: median*(0.5,1,2)"
                )
            rule = self.take().lower()
            if self.accept("*"):
                token = self.peek()
                values = (
                    self.numbers() if token is not None and token[1] == "(" else (self.positive_number(),)
                )
            values = tuple(factor * value for value in (values or (1.0,)))
        if len(set(values)) != len(values):
            self.fail(position, "the bandwidths must differ from each other")
        return Bandwidths(rule, values)

    def positive_number(self) -> float:
        position = self.position()
        value = self.number()
        if not (math.isfinite(value) and value > 0):
            self.fail(position, "sigma must be > 0")
        return value

    # numbers := '(' number (',' number)* ')'
    def numbers(self) -> tuple[float, ...]:
        self.take("(")
        values = [self.positive_number()]
        while self.accept(","):
            values.append(self.positive_number())
        self.take(")")
        return tuple(values)


def parse_style_spec(text: str) -> StyleSpec:
    """Parse a style-loss spec (see the module docstring); raise :class:`SpecError` with a pointer."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError("the loss spec is empty: use e.g. gram, mmd:poly2, mmd:gaussian(sigma=median) or bn.")
    return _Parser(text).spec()


def parse_kernel_spec(text: str) -> KernelExpression | RoutedKernel:
    """Parse a kernel alone, as after ``mmd:`` (sums need no parentheses here): ``gaussian(sigma=median)``.

    ``.build(samples)`` gives the kernel, a data-driven bandwidth computed from ``samples``. A
    route may follow, ``gaussian(sigma=median)@rff(1024)``: then a :class:`RoutedKernel`, and
    :func:`mmd2_options` gives the route's arguments of :func:`mmdstyle.mmd2`.
    """
    if not isinstance(text, str) or not text.strip():
        raise SpecError("the kernel spec is empty: use e.g. linear, poly2, gaussian(sigma=median).")
    if text.strip().lower().startswith("mmd:"):
        kernel = text.strip()[4:]
        raise SpecError(f"{text!r} is a loss spec; a kernel spec is what follows 'mmd:', here {kernel!r}.")
    return _Parser(text, "kernel spec").kernel_spec()


def parse_measure_spec(text: str) -> KernelExpression | RoutedKernel | StyleSpec:
    """What a comparison measures its results with: a kernel spec, or ``sw``, ``w2`` or ``cmd``.

    A kernel spec (:func:`parse_kernel_spec`) measures MMD^2 under that kernel; a loss beyond MMD,
    with its parameters (``sw(directions=64)``), measures that loss itself, a :class:`StyleSpec`
    of one term.
    """
    name = re.match(r"\s*([A-Za-z_]\w*)", text) if isinstance(text, str) else None
    if name is None or name.group(1).lower() not in LOSS_PARAMETERS:
        return parse_kernel_spec(text)
    spec = parse_style_spec(text)
    if len(spec.terms) != 1 or spec.terms[0][0] != 1.0:
        raise SpecError(f"a measure is one loss, not a sum: got {text!r}; list them apart, e.g. sw,w2.")
    return spec


def split_specs(text: str) -> tuple[str, ...]:
    """Split a comma-separated list of specs at the commas outside parentheses.

    ``"gram,mmd:poly(degree=3, c=1),bn"`` -> ``("gram", "mmd:poly(degree=3, c=1)", "bn")``.
    """
    parts, depth, start = [], 0, 0
    for position, character in enumerate(text):
        depth += {"(": 1, ")": -1}.get(character, 0)
        if character == "," and depth == 0:
            parts.append(text[start:position])
            start = position + 1
    parts.append(text[start:])
    return tuple(part.strip() for part in parts if part.strip())
