"""``mmdstyle verify``, ``compare`` and ``test``: arguments in; a table, JSON and a figure out.

Each command checks every input and output path before computing anything, exits 2 on bad input
with a message naming the problem, and writes its files atomically.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any

from mmdstyle._checks import ALL_PAIRS_ESTIMATORS, ESTIMATORS
from mmdstyle.analysis.comparison import (
    DEFAULT_KERNELS,
    check_comparison,
    check_specs,
    compare_losses,
    default_measures,
)
from mmdstyle.analysis.figures import plot_comparison, plot_identity, plot_layer_tests
from mmdstyle.analysis.folders import folder_two_sample_tests, image_files
from mmdstyle.analysis.layer_tests import image_two_sample_tests, permutation_test_options
from mmdstyle.analysis.verification import synthetic_vgg_layers, verify_gram_mmd_identity, verify_images
from mmdstyle.cli.command import Command, user_errors
from mmdstyle.cli.options import (
    KERNEL_HELP,
    LOSS_HELP,
    add_check_option,
    add_loss_options,
    add_network_options,
    add_optimiser_options,
    add_size_options,
    at_least,
    checks_passed,
    config_from,
    extractor_from,
    level,
    load_images,
    parse_names,
    parse_specs,
    positive_float,
    speaker,
)
from mmdstyle.cli.outputs import Interrupts, Writer, check_outputs
from mmdstyle.features.files import write_json
from mmdstyle.features.layers import resolve_layers
from mmdstyle.style.engine import with_default_init
from mmdstyle.style.images import save_image
from mmdstyle.style.specs import parse_kernel_spec

DEFAULT_PAIR = ("sample:chelsea", "sample:hubble")

EPILOG_VERIFY = """examples:
  mmdstyle verify                          the bundled images through the default extractor
  mmdstyle verify photo.jpg painting.jpg --extractor vgg19 --size 128 --json report.json --plot report.png
  mmdstyle verify --synthetic --size 128   VGG-19-shaped ReLU features, no network
  mmdstyle verify --estimator unbiased     a check that must fail: the identity is the biased estimator's

exit status: 0 when every float64 identity holds, 1 when one fails (usable as a CI guard), 2 on bad input."""

EPILOG_COMPARE = """examples:
  mmdstyle compare -o compare.png          the bundled images, losses gram, mmd:linear, mmd:gaussian, bn
  mmdstyle compare photo.jpg art.jpg -o compare.png --losses "gram,mmd:poly(degree=3, c=1),bn" --steps 200
  mmdstyle compare sample:gravel --synthesize -o textures.png --kernels "linear,gaussian(sigma=mean)"

Specs in --losses and --kernels are separated by commas outside parentheses."""

EPILOG_TEST = f"""examples:
  mmdstyle test sample:gravel sample:brick
  mmdstyle test texture.png synthesized.png --kernel "laplacian(sigma=median)" --permutations 4999
  mmdstyle test a.png b.png --json tests.json --plot tests.png
  mmdstyle test a.png b.png --size 512 --samples 100000 --kernel "gaussian(sigma=median)@rff(1024)"
  mmdstyle test sources/ syntheses/ --per-image 256 --kernel "gaussian(sigma=median)@rff(1024)"

Two folders: every file of each (sorted, not subfolders) is read, resized to cover --size x --size
and centre-cropped; --batch images at a time go through the network, split over all visible
devices, and --per-image random positions of each image are kept per layer (seeded per image).
The tests then run on those positions, split over the devices too. A file that is not a readable
image is skipped with its name on stderr (--unreadable stop: an error instead).

A route may follow the kernel spec after '@': rff(D) tests the MMD^2 of D random Fourier features,
drawn once per layer, in O(N D) per permutation instead of O(N^2 d): tens of thousands of positions
per layer; pairwise or feature test exactly (sliced is refused).

{KERNEL_HELP}

Exit status 0 whatever the verdict (2 on bad input): the verdicts are in the table and the JSON."""


def _load_pair(images: list[str], default: tuple[str, str], what: str):
    images = images or list(default)
    if len(images) != 2:
        raise ValueError(
            f"{what} takes two images (or none, for {' and '.join(default)}); got {len(images)}."
        )
    return load_images(images), images


def _add_report_outputs(parser: argparse.ArgumentParser, plot_help: str) -> None:
    """``--json``, ``--plot``, ``--check`` and the network options.

    The outputs are checked by :func:`~mmdstyle.cli.outputs.check_outputs` and written by
    :func:`_write`.
    """
    outputs = parser.add_argument_group("outputs")
    outputs.add_argument("--json", metavar="FILE", help="also write the report as JSON to FILE")
    outputs.add_argument("--plot", metavar="FILE", help=f"{plot_help} (.png, .pdf, .svg)")
    add_check_option(outputs, "images, settings, layers and outputs")
    add_network_options(parser)


def _write(arguments: argparse.Namespace, data: dict, figure: Any = None) -> None:
    """The report as JSON (``--json``) and its figure (``--plot``), if asked; says what it wrote."""
    write = Writer()
    if arguments.json:
        write(lambda path: write_json(path, data), arguments.json, "--json")
    if figure is not None and arguments.plot:
        write(lambda path: figure(path=path), arguments.plot, "--plot")
    if write.written:
        print(f"mmdstyle: wrote {write}", file=sys.stderr)


# ---------------------------------------------------------------- verify


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``verify``: two images or ``--synthetic``, the check's settings, the outputs."""
    parser.add_argument(
        "images", nargs="*", metavar="IMAGE", help="CONTENT STYLE (default: sample:chelsea sample:hubble)"
    )
    parser.add_argument(
        "--synthetic", action="store_true", help="VGG-19-shaped synthetic ReLU features instead of images"
    )
    parser.add_argument("--size", type=at_least(2), default=64, help="side of the square images (default 64)")
    parser.add_argument(
        "--layers", type=parse_names, metavar="L1,L2", help="default: the extractor's style layers"
    )
    parser.add_argument(
        "--estimator",
        choices=ALL_PAIRS_ESTIMATORS,
        default="biased",
        help="MMD estimator compared with the Gram loss (default biased; unbiased must fail)",
    )
    parser.add_argument(
        "--tolerance", type=positive_float, default=1e-10, help="float64 relative tolerance (default 1e-10)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic features (default 0)")
    _add_report_outputs(parser, "also draw the report: both sides per layer and every error")


def run_verify(arguments: argparse.Namespace) -> int:
    """``mmdstyle verify``: 0 when every float64 identity holds, 1 when one fails."""
    check_outputs(("--json", arguments.json, "json"), ("--plot", arguments.plot, "figure"))
    options = {"tolerance": arguments.tolerance, "estimator": arguments.estimator}
    if arguments.synthetic:
        if arguments.images or arguments.layers or arguments.extractor or arguments.weights:
            raise ValueError("--synthetic makes its own features: it takes no images, --layers or extractor.")
        if arguments.size < 16 or arguments.size % 16:
            raise ValueError(
                f"--synthetic needs --size a multiple of 16 (VGG-19 pools 4 times), got {arguments.size}."
            )
        if arguments.check:
            return checks_passed(f"synthetic features of a {arguments.size} px image")
        layers = synthetic_vgg_layers(arguments.size, arguments.seed)
        source = f"synthetic ReLU features with VGG-19 shapes, {arguments.size} x {arguments.size} image"
        report = verify_gram_mmd_identity(layers, source=source, **options)
    else:
        (content, style), names = _load_pair(arguments.images, DEFAULT_PAIR, "verify")
        extractor = extractor_from(arguments)
        if arguments.check:
            layers = resolve_layers(extractor, arguments.layers, role="style")
            return checks_passed(f"{' and '.join(names)}, layers {', '.join(layers)}")
        source = (
            f"{names[0]} against {names[1]}, {type(extractor).__name__}, {arguments.size} x {arguments.size}"
        )
        report = verify_images(
            content,
            style,
            extractor=extractor,
            size=arguments.size,
            layers=arguments.layers,
            source=source,
            **options,
        )
    print(report.format_table())
    _write(arguments, report.to_dict(), lambda path: plot_identity(report, path=path))
    return 0 if report.passed else 1


# ---------------------------------------------------------------- compare


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``compare``: the losses and the measurement, then the runs' option groups."""
    parser.add_argument(
        "images",
        nargs="*",
        metavar="IMAGE",
        help="CONTENT STYLE, or STYLE with --synthesize (default: the samples)",
    )
    parser.add_argument("-o", "--output", required=True, metavar="OUT.png", help="the comparison figure")
    parser.add_argument(
        "--losses",
        type=parse_specs,
        default=("gram", "mmd:linear", "mmd:gaussian(sigma=median)", "bn"),
        metavar="SPEC,SPEC",
        help="loss specs to compare (default: gram, mmd:linear, mmd:gaussian(sigma=median), bn)",
    )
    parser.add_argument("--synthesize", action="store_true", help="compare texture syntheses of one STYLE")
    parser.add_argument(
        "--no-balance",
        action="store_true",
        help="one beta for all losses (default: each loss's beta is scaled so that its style term at the "
        "starting image equals the first loss's)",
    )
    measure = parser.add_argument_group("measurement")
    measure.add_argument(
        "--kernels",
        type=parse_specs,
        default=None,
        metavar="SPEC,SPEC",
        help="kernels the results are measured with (MMD^2 under each), or sw, w2, cmd: those losses "
        f"themselves (default: {', '.join(DEFAULT_KERNELS)}, and each of sw, w2, cmd that --losses uses)",
    )
    measure.add_argument(
        "--measure-estimator",
        choices=ESTIMATORS,
        default="biased",
        help="MMD estimator of the measurement (default biased)",
    )
    measure.add_argument(
        "--max-samples",
        type=at_least(2),
        default=4096,
        help="positions per image and layer measured (default 4096)",
    )
    add_loss_options(parser, synthesis=False, one_loss=False)
    add_network_options(parser)
    add_size_options(parser, size=64)
    add_optimiser_options(parser, synthesis=False, steps=30, init=None, several_styles=False)
    outputs = parser.add_argument_group("outputs")
    outputs.add_argument("--json", metavar="FILE", help="also write the runs and the matrix as JSON to FILE")
    outputs.add_argument("--save-images", action="store_true", help="also save each result as OUT-<i>.png")
    outputs.add_argument("--quiet", action="store_true", help="no progress bars")
    add_check_option(outputs, "images, specs, settings, layers, outputs and memory")


def _result_image(output: Path, index: int) -> Path:
    """Where ``--save-images`` saves the result of the index-th loss (from 1): ``OUT-<index>.png``."""
    return output.with_name(f"{output.stem}-{index}.png")


def run_compare(arguments: argparse.Namespace) -> int:
    """``mmdstyle compare``: 0; 1 when a run stopped early; 130 or 143 after Ctrl-C or SIGTERM.

    Interrupted, the current run stops after its step, no further loss runs, and the runs so far
    are measured and written as usual.
    """
    output = Path(arguments.output)
    saves = arguments.save_images and output.name  # without a name, -o is refused as a folder
    images = [_result_image(output, index) for index in range(1, len(arguments.losses) + 1)] if saves else []
    check_outputs(
        ("-o", output, "figure"),
        ("--json", arguments.json, "json"),
        *((f"--save-images ({path.name})", path, "image") for path in images),
    )
    synthesis = arguments.synthesize
    if synthesis:
        names = arguments.images or ["sample:gravel"]
        if len(names) != 1:
            raise ValueError(f"compare --synthesize takes one STYLE image, got {len(names)}.")
        content, style = None, load_images(names)[0]
    else:
        (content, style), names = _load_pair(arguments.images, DEFAULT_PAIR, "compare")
    config = config_from(arguments, synthesis=synthesis)
    kernels = default_measures(arguments.losses) if arguments.kernels is None else arguments.kernels
    check_specs(arguments.losses, kernels)  # before the network is resolved (and announced)
    extractor = extractor_from(arguments)
    if arguments.check:
        options = {"extractor": extractor, "kernels": kernels, "layers": arguments.style_layers}
        config = with_default_init(config, content)
        check_comparison(content, style, arguments.losses, config, **options)
        ready = f"{len(arguments.losses)} losses, {config.steps} steps at {config.size} px"
        return checks_passed(ready, quiet=arguments.quiet)

    def on_run(index: int, run: Any) -> None:
        if not arguments.quiet:
            print(
                f"mmdstyle: {index + 1}/{len(arguments.losses)} {run.loss} (beta {run.style_weight:.3g}): "
                f"loss {run.final_loss:.4g}, "
                f"{run.seconds:.1f} s (+ {run.compile_seconds:.1f} s compiling)",
                file=sys.stderr,
            )

    say = speaker(arguments.quiet)
    with Interrupts(say) as interrupts:
        comparison = compare_losses(
            content,
            style,
            arguments.losses,
            config,
            extractor=extractor,
            kernels=kernels,
            layers=arguments.style_layers,
            estimator=arguments.measure_estimator,
            max_samples=arguments.max_samples,
            balance=not arguments.no_balance,
            progress=not arguments.quiet,
            on_run=on_run,
            stop=interrupts,
        )
    print(comparison.format_table())
    write = Writer()
    write(lambda path: plot_comparison(comparison, path=path), output, "-o")
    data = comparison.to_dict() | {"images": names}
    if arguments.save_images:
        data["result_images"] = []
        for path, run in zip(images, comparison.runs, strict=True):
            saved = write(functools.partial(save_image, image=run.image), path, "--save-images")
            data["result_images"].append(str(saved))
    if arguments.json:
        write(lambda path: write_json(path, data), arguments.json, "--json")
    if interrupts():
        done = len(comparison.runs)
        print(
            f"mmdstyle: interrupted in the run of {comparison.runs[-1].loss} ({done} of "
            f"{len(arguments.losses)}); wrote {write}, with the {done} run(s) so far.",
            file=sys.stderr,
        )
        return interrupts.exit_status
    say(f"mmdstyle: wrote {write}")
    stopped = [run.loss for run in comparison.runs if run.stopped_early]
    if stopped:
        print(f"mmdstyle: the run(s) of {', '.join(stopped)} stopped early (see the JSON).", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- test


def add_test_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``test``: two images, the kernel and the tests' settings, the outputs."""
    parser.add_argument(
        "images",
        nargs="*",
        metavar="IMAGE",
        help="IMAGE_A IMAGE_B, or two folders DIR_A DIR_B of images (default: sample:gravel sample:brick)",
    )
    parser.add_argument(
        "--kernel",
        default="gaussian(sigma=median)",
        metavar="SPEC",
        help="kernel spec, a route may follow: gaussian(sigma=median)@rff(1024) "
        "(default gaussian(sigma=median))",
    )
    parser.add_argument("--permutations", type=at_least(1), default=999, help="per layer (default 999)")
    parser.add_argument(
        "--samples",
        type=at_least(2),
        default=1024,
        help="random positions per image and layer (default 1024)",
    )
    parser.add_argument("--estimator", choices=ESTIMATORS, default="unbiased", help="default unbiased")
    parser.add_argument("--alpha", type=level, default=0.05, help="family-wise level (default 0.05)")
    parser.add_argument(
        "--size",
        type=at_least(16),
        default=128,
        help="longer side of each image; for folders, the side of the square crops (default 128)",
    )
    parser.add_argument(
        "--layers", type=parse_names, metavar="L1,L2", help="default: the extractor's style layers"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the subsets and permutations (default 0)"
    )
    folders = parser.add_argument_group("folders (DIR_A DIR_B)")
    folders.add_argument(
        "--per-image",
        type=at_least(1),
        default=128,
        metavar="N",
        help="random positions kept per image and layer (default 128; --samples does not apply)",
    )
    folders.add_argument(
        "--batch", type=at_least(1), default=8, metavar="B", help="images per run of the network (default 8)"
    )
    folders.add_argument(
        "--unreadable",
        choices=("skip", "stop"),
        default="skip",
        help="a file that is not a readable image: skip it, naming it on stderr (default), or stop",
    )
    _add_report_outputs(parser, "also draw each layer's null distribution and statistic")


def run_test(arguments: argparse.Namespace) -> int:
    """``mmdstyle test``: 0 whatever the verdict (the verdicts are in the table and the JSON)."""
    check_outputs(("--json", arguments.json, "json"), ("--plot", arguments.plot, "figure"))
    kernel = parse_kernel_spec(arguments.kernel)
    permutation_test_options(kernel, arguments.estimator)  # a route the test refuses, before any image
    if arguments.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {arguments.seed}.")
    if any(Path(name).is_dir() for name in arguments.images):
        return _run_folder_test(arguments, kernel)
    (a, b), names = _load_pair(arguments.images, ("sample:gravel", "sample:brick"), "test")
    extractor = extractor_from(arguments)
    if arguments.check:
        layers = resolve_layers(extractor, arguments.layers, role="style")
        return checks_passed(f"{' and '.join(names)}, layers {', '.join(layers)}, kernel {kernel}")
    report = image_two_sample_tests(
        a,
        b,
        extractor=extractor,
        size=arguments.size,
        layers=arguments.layers,
        kernel=kernel,
        num_permutations=arguments.permutations,
        estimator=arguments.estimator,
        max_samples=arguments.samples,
        alpha=arguments.alpha,
        seed=arguments.seed,
        source=f"{names[0]} vs {names[1]}",
    )
    print(report.format_table())
    _write(arguments, report.to_dict() | {"images": names}, lambda path: plot_layer_tests(report, path=path))
    return 0


def _run_folder_test(arguments: argparse.Namespace, kernel: Any) -> int:
    """``mmdstyle test DIR_A DIR_B``: every image of two folders, in batches, on all visible devices."""
    if len(arguments.images) != 2:
        raise ValueError(f"test takes two folders (or two images); got {len(arguments.images)}.")
    if not all(Path(name).is_dir() for name in arguments.images):
        raise ValueError(
            f"test takes two folders or two images, not a mix; got {' '.join(arguments.images)}."
        )
    extractor = extractor_from(arguments)
    if arguments.check:
        layers = resolve_layers(extractor, arguments.layers, role="style")
        for folder in arguments.images:
            image_files(folder)
        return checks_passed(
            f"folders {' and '.join(arguments.images)}, layers {', '.join(layers)}, kernel {kernel}"
        )
    report = folder_two_sample_tests(
        *arguments.images,
        extractor=extractor,
        size=arguments.size,
        layers=arguments.layers,
        positions_per_image=arguments.per_image,
        batch_size=arguments.batch,
        skip_unreadable=arguments.unreadable == "skip",
        on_skip=lambda path, reason: print(f"mmdstyle: skipped {reason}", file=sys.stderr),
        seed=arguments.seed,
        kernel=kernel,
        num_permutations=arguments.permutations,
        estimator=arguments.estimator,
        alpha=arguments.alpha,
    )
    print(report.format_table())
    data = report.to_dict() | {"folders": list(arguments.images)}
    _write(arguments, data, lambda path: plot_layer_tests(report, path=path))
    return 0


COMMANDS = (
    Command(
        name="verify",
        summary="check, layer by layer, that the Gram loss is biased poly2 MMD / (4 d^2) (values, gradients)",
        description=(
            "Check, layer by layer, in float64 (the proof) and float32, that Gatys' Gram loss equals the "
            "biased MMD^2 with k(a, b) = (a^T b)^2 divided by 4 d^2: values, gradients with respect to the "
            "image, the feature route against the pairwise route, and the unbiased estimator's gap against "
            "its closed form."
        ),
        add_arguments=add_verify_arguments,
        run=user_errors(run_verify),
        epilog=EPILOG_VERIFY,
    ),
    Command(
        name="compare",
        summary="run transfer with several losses and measure what each matches, per layer and kernel",
        description=(
            "Style transfer (or texture synthesis) once per loss spec, same seed and steps; then every "
            "result's MMD^2 against the style per layer under several kernels, as a table, JSON and a figure."
        ),
        add_arguments=add_compare_arguments,
        run=user_errors(run_compare),
        epilog="\n\n".join((EPILOG_COMPARE, LOSS_HELP, KERNEL_HELP)),
    ),
    Command(
        name="test",
        summary="per-layer MMD permutation tests: can two images' features be told apart?",
        description=(
            "A kernel two-sample (permutation) test on each layer's features of two images, with Holm's "
            "correction over the layers."
        ),
        add_arguments=add_test_arguments,
        run=user_errors(run_test),
        epilog=EPILOG_TEST,
    ),
)
