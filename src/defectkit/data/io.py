"""Reading pixels: images and masks from disk, and filling index samples with them."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from defectkit.data.masks import boxes_to_mask, rle_decode
from defectkit.data.sample import MASK_REFERENCE_KEYS, Sample

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"})


class ImageReadError(ValueError):
    """An image or mask that cannot be decoded: ``path`` names the file, ``reason`` says why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def error_reason(error: Exception, path: str | Path) -> str:
    """What went wrong with ``path``, for a report that names ``path`` already: the bare reason
    when the error is about that file, else the whole message (it names the other file, e.g. a mask)."""
    if isinstance(error, ImageReadError) and error.path == str(path):
        return error.reason
    return str(error)


def printable_path(path: str | Path) -> str:
    """``path`` as text that can be written as UTF-8: a file name whose bytes are not UTF-8 (from
    a Latin-1 share, say) keeps them as ``\\xe9`` escapes instead of failing every JSON and CSV
    writer that meets it."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def image_files(folder: str | Path) -> list[Path]:
    """The image files anywhere below ``folder``, sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and is_image_file(p))


def read_image(path: str | Path, channels: int | None = None) -> np.ndarray:
    """Decode ``path`` fully to uint8 HxW (1 channel) or HxWx3.

    ``channels=None`` keeps the file's own layout, except that an RGB file whose three channels are
    equal (NEU's JPEGs) is returned as grayscale. Truncated files raise :class:`ImageReadError`:
    Pillow's lazy ``open`` would otherwise accept them.
    """
    try:
        with Image.open(path) as handle:
            array = _decode(handle, channels)
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageReadError(path, f"cannot decode image ({error})") from None
    except MemoryError:
        raise
    except Exception as error:  # as in decode_image: damaged files make decoders raise EOFError, ...
        raise ImageReadError(path, f"cannot decode image ({type(error).__name__}: {error})") from None
    return convert_channels(array, channels)


@dataclass(frozen=True)
class DecodedImage:
    """Pixels decoded from bytes, with the container format Pillow recognised (``"png"``, ...)."""

    pixels: np.ndarray
    format: str


class ImageTooLargeError(ImageReadError):
    """An image whose header declares more pixels than allowed (a decompression bomb, or a mistake)."""


def decode_image(data: bytes, name: str = "<bytes>", max_pixels: int | None = None) -> DecodedImage:
    """:func:`read_image` for bytes received from elsewhere (an upload), refusing before decoding.

    The header is read first: an image declaring more than ``max_pixels`` pixels is refused
    without allocating its pixels, so a small file cannot make the reader decode gigabytes.
    """
    if not data:
        raise ImageReadError(name, "empty file")
    try:
        with Image.open(io.BytesIO(data)) as handle:
            width, height = handle.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLargeError(
                    name,
                    f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}",
                )
            image_format = (handle.format or "unknown").lower()
            array = _decode(handle, None)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(name, "not an image in a format Pillow reads") from None
    except Image.DecompressionBombError as error:  # Pillow's own limit, met before ours can be checked
        raise ImageTooLargeError(name, str(error)) from None
    except MemoryError:
        raise
    except Exception as error:  # decoders of crafted files raise EOFError, struct.error, IndexError...
        raise ImageReadError(name, f"cannot decode image ({type(error).__name__}: {error})") from None
    return DecodedImage(convert_channels(array, None), image_format)


def _decode(handle: Image.Image, channels: int | None) -> np.ndarray:
    handle.load()
    image: Image.Image = handle
    if image.mode in ("P", "PA"):
        # A palette may hold colours: RGB unless grey is asked for (an all-grey palette comes out
        # grey again from convert_channels(None)).
        image = image.convert("L" if channels == 1 else "RGB")
    if image.mode == "F":
        # Pillow would truncate floats to integers: values in [0, 1] come out a black image.
        raise ValueError("32-bit float pixels have no fixed scale to 8 bits; save the image as 8- or 16-bit")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # A fixed 16-bit to 8-bit scale, so brightness means the same in every image.
        return (np.clip(np.asarray(image, dtype=np.float64), 0, 65535) / 257.0 + 0.5).astype(np.uint8)
    if image.mode not in ("L", "RGB"):
        return np.asarray(image.convert("RGB"))
    return np.asarray(image)


def image_array(image: object) -> np.ndarray:
    """``image`` as the pixel array every model and overlay takes: uint8, HxW (grey) or HxWxC with
    C 1, 3 or 4 in RGB(A) order, channels last (a PIL image is decoded as a file is). Anything else
    is refused with what was expected:
    floats in [0, 1] would otherwise become a black image, a channels-first array a C-pixel-high
    image of W channels, a path or bytes an array of one string."""
    if isinstance(image, Image.Image):
        return image_array(pil_pixels(image))
    if isinstance(image, str | bytes | os.PathLike) or not hasattr(image, "__array__"):
        raise TypeError(
            f"expected a numpy uint8 image array, got {type(image).__name__} (Inspector.inspect also "
            "takes a path; decode bytes with defectkit.data.io.decode_image(data).pixels)"
        )
    array = np.asarray(image)
    # Before any conversion: colour to grey casts to uint8, which would turn floats in [0, 1]
    # into a black image instead of an error.
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {array.dtype}")
    layout_ok = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))
    if not layout_ok or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(
            f"expected an image array of shape HxW (grey) or HxWxC with C 1, 3 or 4 (channels last), "
            f"got shape {array.shape}"
        )
    return array


def pil_pixels(image: Image.Image) -> np.ndarray:
    """A PIL image's pixels as :func:`read_image` decodes a file: palette, CMYK, YCbCr and 16-bit
    images converted, not read as raw channel values."""
    return convert_channels(_decode(image, None), None)


def convert_channels(array: np.ndarray, channels: int | None) -> np.ndarray:
    """uint8 HxW or HxWx3 with the requested channel count (None: grayscale when channels are equal)."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if channels is None:
        if array.ndim == 3 and _channels_equal(array):
            return np.ascontiguousarray(array[..., 0])
        return array
    if channels == 1:
        if array.ndim == 2:
            return array
        weights = np.asarray([0.299, 0.587, 0.114])
        return np.clip(array[..., :3] @ weights + 0.5, 0, 255).astype(np.uint8)
    if channels == 3:
        return np.repeat(array[..., None], 3, axis=2) if array.ndim == 2 else array[..., :3]
    raise ValueError(f"channels must be 1, 3 or None, got {channels}")


def _channels_equal(array: np.ndarray) -> bool:
    return bool(np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 1], array[..., 2]))


def read_mask(path: str | Path) -> np.ndarray:
    """A label image as an HxW uint8 class-id map.

    Values are kept as class ids, except that a mask whose only non-zero value is 255 (the usual
    binary 0/255 file) becomes 0/1. Readers of binary formats also set ``meta["mask_binary"]`` or
    ``meta["mask_class"]`` so that :func:`load_mask` maps every non-zero pixel to one class.
    """
    try:
        with Image.open(path) as handle:
            handle.load()
            array = np.asarray(handle if handle.mode in ("P", "L") else handle.convert("L"))
    except FileNotFoundError:
        raise ImageReadError(path, "mask file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageReadError(path, f"cannot decode mask ({error})") from None
    nonzero = np.unique(array[array != 0])
    if len(nonzero) == 1 and nonzero[0] == 255:
        return (array != 0).astype(np.uint8)
    return array.astype(np.uint8)


def load_mask(sample: Sample, height: int, width: int) -> np.ndarray | None:
    """The sample's mask as an array (HxW ids or KxHxW bool), reading a reference if needed."""
    if sample.mask is not None:
        return np.asarray(sample.mask)
    if "mask_path" in sample.meta:
        mask = read_mask(sample.meta["mask_path"])
        # Formats whose mask files are binary but whose defects have a type (MVTec, the folder
        # layout) name the class in meta so the loaded map carries the class id, not just 1.
        if "mask_class" in sample.meta:
            return (mask != 0).astype(np.uint8) * np.uint8(sample.meta["mask_class"])
        return (mask != 0).astype(np.uint8) if sample.meta.get("mask_binary", False) else mask
    if sample.meta.get("mask_empty"):
        return np.zeros((height, width), dtype=np.uint8)
    if "mask_rle" in sample.meta:
        # {class_id: rle} -> KxHxW bool (multi-label; classes may overlap in one pixel).
        depth = int(sample.meta.get("mask_depth", max(sample.meta["mask_rle"], default=0)))
        stack = np.zeros((depth, height, width), dtype=bool)
        for class_id, rle in sample.meta["mask_rle"].items():
            stack[int(class_id) - 1] |= rle_decode(rle, height, width)
        return stack
    if sample.meta.get("mask_from_boxes") and sample.boxes is not None:
        classes = None if sample.box_classes is None else np.asarray(sample.box_classes)
        return boxes_to_mask(np.asarray(sample.boxes), classes, height, width)
    return None


def with_box_masks(samples: Sequence[Sample]) -> list[Sample]:
    """Samples with boxes but no mask marked to get a coarse mask of their filled boxes
    (:func:`load_mask`); good images with known-empty boxes get an empty mask."""
    return [
        s.replace(meta={**s.meta, "mask_from_boxes": True}) if s.boxes is not None and not s.has_mask else s
        for s in samples
    ]


def load_sample(sample: Sample, channels: int | None = None) -> Sample:
    """A copy of ``sample`` with ``image`` (uint8) and any known ``mask`` read from disk."""
    image = sample.image if sample.image is not None else read_image(sample.path, channels)
    image = np.asarray(image)
    if channels is not None and sample.image is not None:
        image = convert_channels(image, channels)
    height, width = image.shape[:2]
    mask = load_mask(sample, height, width)
    if mask is not None and tuple(mask.shape[-2:]) != (height, width):
        source = sample.meta.get("mask_path", sample.path)
        raise ImageReadError(
            source, f"mask is {mask.shape[-1]}x{mask.shape[-2]} but image {sample.path} is {width}x{height}"
        )
    meta = {k: v for k, v in sample.meta.items() if k not in MASK_REFERENCE_KEYS}
    if "mask_path" in sample.meta:
        meta["mask_source"] = sample.meta["mask_path"]
    return sample.replace(image=image, mask=mask, meta=meta)
