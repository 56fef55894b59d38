"""Feature extractors: VGG-19 in Flax NNX (pretrained or random) and weight-free random filters.

Every extractor maps an RGB image in [0, 1], ``(H, W, 3)`` or ``(N, H, W, 3)``, to a dict of
named feature maps ``(h, w, channels)``, which the losses read as ``h * w`` samples. See
:mod:`mmdstyle.features.registry` for the protocol and the registered names.
"""

from mmdstyle.features.checkpoint import CheckpointError, read_checkpoint
from mmdstyle.features.download import ChecksumError, DownloadError, download_file, sha256_of
from mmdstyle.features.layers import (
    ExtractorArgument,
    as_samples,
    cast_extractor,
    extract_samples,
    jitted_extractor,
    resolve_layers,
    subsample,
)
from mmdstyle.features.multiscale import USTYUZHANINOV_SIZES, MultiScaleRandom
from mmdstyle.features.preprocessing import PREPROCESSINGS, preprocess
from mmdstyle.features.pretrained import (
    SOURCES,
    WeightsNotFoundError,
    cache_directory,
    cached_weights_available,
    convert_to_features_safetensors,
    converted_weights_path,
    download_weights,
    load_vgg19,
    pretrained_vgg19,
    vgg19_parameters,
)
from mmdstyle.features.registry import (
    FeatureExtractor,
    available_extractors,
    default_extractor,
    extractor_or_default,
    get_extractor,
    register_extractor,
    registry_scope,
    resolve_extractor,
)
from mmdstyle.features.vgg import (
    GATYS_CONTENT_LAYERS,
    GATYS_STYLE_LAYERS,
    VGG19,
    VGG19_CONVOLUTIONS,
    VGG19_LAYERS,
    random_vgg19,
)

__all__ = [
    "GATYS_CONTENT_LAYERS",
    "GATYS_STYLE_LAYERS",
    "PREPROCESSINGS",
    "SOURCES",
    "USTYUZHANINOV_SIZES",
    "VGG19",
    "VGG19_CONVOLUTIONS",
    "VGG19_LAYERS",
    "CheckpointError",
    "ChecksumError",
    "DownloadError",
    "ExtractorArgument",
    "FeatureExtractor",
    "MultiScaleRandom",
    "WeightsNotFoundError",
    "as_samples",
    "available_extractors",
    "cache_directory",
    "cached_weights_available",
    "cast_extractor",
    "convert_to_features_safetensors",
    "converted_weights_path",
    "default_extractor",
    "download_file",
    "download_weights",
    "extract_samples",
    "extractor_or_default",
    "get_extractor",
    "jitted_extractor",
    "load_vgg19",
    "preprocess",
    "pretrained_vgg19",
    "random_vgg19",
    "read_checkpoint",
    "register_extractor",
    "registry_scope",
    "resolve_extractor",
    "resolve_layers",
    "sha256_of",
    "subsample",
    "vgg19_parameters",
]
