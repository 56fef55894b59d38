"""Image files in and out: float32 RGB arrays (H, W, 3) with values in [0, 1].

Reading accepts what cameras and the web produce: EXIF-rotated JPEGs are turned upright,
grey images are repeated over three channels, transparent ones are laid over white, palette,
CMYK and 16-bit images are converted with their full range. Writing goes through a temporary
file, so an interrupted run never leaves a half-written image under the final name.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mmdstyle._checks import check_integer
from mmdstyle.features.files import atomic_path

#: Formats :func:`save_image` writes, by file extension.
SAVE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}


def load_image(path: str | os.PathLike, *, size: int | None = None) -> np.ndarray:
    """Read an image file as a float32 RGB array (H, W, 3) in [0, 1].

    Args:
        path: any format Pillow reads (PNG, JPEG, TIFF, WebP, BMP, GIF, ...).
        size: if given, the image is resized (Lanczos) so that its longer side has ``size`` pixels,
            keeping its aspect ratio (jcjohnson/neural-style's ``-image_size``).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not an image Pillow can decode, or ``size`` is not a positive integer.
    """
    path = Path(path)
    if size is not None:
        check_integer("size", size, hint=" (pixels)")
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {str(path)!r}.")
    try:
        opened = Image.open(path)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(
            f"{path}: not an image mmdstyle can read ({error}). Use PNG, JPEG, TIFF, WebP or BMP."
        ) from error
    with opened:
        try:
            opened.load()
            image = ImageOps.exif_transpose(opened)
        except (OSError, SyntaxError, ValueError) as error:  # the format is known; its data are not whole
            raise ValueError(
                f"{path}: a damaged {opened.format} file ({error}); export it again or use another copy."
            ) from error
    array = _to_rgb_float(image)
    if size is not None:
        array = resize(array, fit_within(array.shape[:2], size))
    return array


def _to_rgb_float(image: Image.Image) -> np.ndarray:
    """Any Pillow mode as float32 RGB in [0, 1], with the full range of 16- and 32-bit images."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        grey = np.asarray(image, dtype=np.float32) / 65535.0
        return np.repeat(grey[..., None], 3, axis=-1)
    if image.mode in ("I", "F"):
        grey = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode == "I" and grey.max(initial=0) > 255 else 255.0
        grey = np.clip(grey / (1.0 if image.mode == "F" and grey.max(initial=0) <= 1 else top), 0, 1)
        return np.repeat(grey.astype(np.float32)[..., None], 3, axis=-1)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def fit_within(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """(height, width) scaled so that the longer side is ``size``, the aspect ratio kept."""
    height, width = shape
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a float image (H, W, C) to ``shape`` = (height, width), Lanczos, channel by channel."""
    height, width = shape
    if image.shape[:2] == (height, width):
        return image.astype(np.float32)
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., c], np.float32), mode="F").resize(
                (width, height), Image.Resampling.LANCZOS
            )
        )
        for c in range(image.shape[-1])
    ]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)


def resize_cover(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Crop the centre of ``image`` to the aspect ratio of ``shape``, then resize it to ``shape``.

    Nothing is stretched: the parts outside the largest centred window of that aspect are dropped.
    """
    height, width = image.shape[:2]
    target_height, target_width = shape
    if height * target_width > width * target_height:  # too tall: keep the middle rows
        rows = max(1, round(width * target_height / target_width))
        top = (height - rows) // 2
        image = image[top : top + rows]
    else:
        columns = max(1, round(height * target_width / target_height))
        left = (width - columns) // 2
        image = image[:, left : left + columns]
    return resize(image, shape)


def image_format(path: str | os.PathLike) -> str:
    """The Pillow format :func:`save_image` writes for ``path``'s extension; ValueError if none."""
    file_format = SAVE_FORMATS.get(Path(path).suffix.lower())
    if file_format is None:
        raise ValueError(
            f"cannot tell the image format of {str(path)!r}: use one of the extensions "
            f"{', '.join(SAVE_FORMATS)}."
        )
    return file_format


def save_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a float image (H, W, 3) in [0, 1] (values outside are clipped) as 8-bit RGB, atomically.

    The format follows the extension (.png, .jpg, .tif, .webp). Raises ValueError for another
    extension or an array that is not an RGB image, before anything is written.
    """
    path = Path(path)
    file_format = image_format(path)
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"an image to save must have shape (height, width, 3), got {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"the image for {path} contains NaN or infinite values; nothing was written.")
    pixels = np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    with atomic_path(path, suffix=path.suffix) as temporary:
        Image.fromarray(pixels, mode="RGB").save(temporary, format=file_format)
    return path


# ITU-R BT.601 YIQ, as in Gatys et al.'s colour-preservation note
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def luminance_transfer(styled: np.ndarray, content: np.ndarray) -> np.ndarray:
    """The styled image's luminance with the content's colour (I and Q channels of YIQ)."""
    styled_yiq = styled.astype(np.float64) @ _RGB_TO_YIQ.T
    content_yiq = content.astype(np.float64) @ _RGB_TO_YIQ.T
    combined = np.concatenate([styled_yiq[..., :1], content_yiq[..., 1:]], axis=-1)
    return np.clip(combined @ np.linalg.inv(_RGB_TO_YIQ).T, 0.0, 1.0).astype(np.float32)
