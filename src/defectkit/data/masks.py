"""Mask utilities: connected-component boxes, coarse masks from boxes, run-length coding, hashing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from scipy import ndimage


def connected_regions(layer: np.ndarray) -> Iterator[tuple[tuple[slice, slice], np.ndarray]]:
    """The 8-connected regions of boolean H x W ``layer``: each one's (rows, columns) slices and its
    own pixels within them (a boolean window: another region reaching into the box is not in it)."""
    labelled, _ = ndimage.label(layer, structure=np.ones((3, 3), dtype=bool))
    for index, region in enumerate(ndimage.find_objects(labelled), start=1):
        if region is not None:
            yield (region[0], region[1]), labelled[region] == index


def mask_to_boxes(mask: np.ndarray, min_area: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (Nx4 float xyxy, pixel-edge coordinates) and class ids of the connected regions of ``mask``.

    ``mask`` is an HxW class-id map (0 background) or a KxHxW boolean stack (channel ``k`` is class
    ``k + 1``). Components use 8-connectivity and are found per class, so touching regions of two
    classes give two boxes. Regions smaller than ``min_area`` pixels are dropped.
    """
    mask = np.asarray(mask)
    if mask.ndim == 3:
        layers = [(k + 1, mask[k].astype(bool)) for k in range(mask.shape[0])]
    elif mask.ndim == 2:
        layers = [(int(c), mask == c) for c in np.unique(mask) if c != 0]
    else:
        raise ValueError(f"mask must be HxW or KxHxW, got shape {mask.shape}")
    boxes: list[list[float]] = []
    classes: list[int] = []
    for class_id, layer in layers:
        for (rows, cols), pixels in connected_regions(layer):
            if pixels.sum() < min_area:
                continue
            boxes.append([cols.start, rows.start, cols.stop, rows.stop])
            classes.append(class_id)
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(classes, dtype=np.int64)


def boxes_to_mask(boxes: np.ndarray, box_classes: np.ndarray | None, height: int, width: int) -> np.ndarray:
    """A coarse HxW class-id mask with each box filled by its class (1 when classes are not given).

    Boxes are painted in order, so where boxes overlap the later one wins. Coordinates are clipped.
    """
    mask = np.zeros((height, width), dtype=np.uint8)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    ids = np.ones(len(boxes), dtype=np.int64) if box_classes is None else np.asarray(box_classes)
    for (x0, y0, x1, y1), class_id in zip(boxes, ids, strict=True):
        c0, r0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
        c1, r1 = min(int(np.ceil(x1)), width), min(int(np.ceil(y1)), height)
        if c1 > c0 and r1 > r0:
            mask[r0:r1, c0:c1] = class_id
    return mask


def rle_encode(mask: np.ndarray) -> str:
    """Run-length encode a binary HxW mask, Kaggle/Severstal style.

    Pixels are numbered from 1 in column-major order (down, then across); the string lists
    ``start length`` pairs. An empty mask encodes as ``""``.
    """
    flat = np.asarray(mask, dtype=bool).flatten(order="F")
    padded = np.concatenate([[False], flat, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1]) + 1
    starts, ends = edges[0::2], edges[1::2]
    return " ".join(f"{s} {e - s}" for s, e in zip(starts, ends, strict=True))


def rle_decode(rle: str, height: int, width: int) -> np.ndarray:
    """Inverse of :func:`rle_encode`: a bool HxW mask. Raises ``ValueError`` on malformed input."""
    flat = np.zeros(height * width, dtype=bool)
    tokens = rle.split()
    if len(tokens) % 2:
        raise ValueError(f"run-length string has an odd number of values ({len(tokens)})")
    try:
        numbers = np.asarray(tokens, dtype=np.int64).reshape(-1, 2)
    except ValueError as error:
        raise ValueError(f"run-length string holds non-integers: {error}") from None
    for start, length in numbers:
        if start < 1 or length < 0 or start - 1 + length > flat.size:
            raise ValueError(f"run {start} {length} falls outside a {height}x{width} image")
        flat[start - 1 : start - 1 + length] = True
    return flat.reshape((height, width), order="F")


def stack_to_ids(mask: np.ndarray) -> np.ndarray:
    """An HxW uint8 class-id map from an HxW map (unchanged) or a KxHxW multi-label stack.

    Where classes of a stack overlap in a pixel, the highest class id is kept.
    """
    mask = np.asarray(mask)
    if mask.ndim == 2:
        return mask.astype(np.uint8)
    ids = np.zeros(mask.shape[1:], dtype=np.uint8)
    for k in range(mask.shape[0]):
        ids[mask[k].astype(bool)] = k + 1
    return ids


def array_hash(array: np.ndarray) -> str:
    """SHA-1 of an array's bytes (C order), for in-memory images and masks."""
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


def content_hash(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """SHA-1 of a file's bytes: two files with the same hash are the same image."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
