"""Contact sheets: a grid of images with their masks and boxes drawn on, for people to look at."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from defectkit.data.io import convert_channels, load_sample
from defectkit.data.masks import stack_to_ids
from defectkit.data.sample import Sample

# Distinct, colour-blind-friendly overlay colours (Okabe-Ito), cycled by class id.
CLASS_COLOURS = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
)
CAPTION_PX = 14


def render_tile(sample: Sample, tile: int, alpha: float = 0.45) -> Image.Image:
    """One loaded sample as an RGB tile: mask tinted by class, boxes outlined, aspect kept."""
    if sample.image is None:
        sample = load_sample(sample)
    rgb = convert_channels(np.asarray(sample.image), 3).astype(np.float32)
    if sample.mask is not None:
        ids = stack_to_ids(np.asarray(sample.mask))
        for class_id in np.unique(ids[ids > 0]):
            tint = np.asarray(CLASS_COLOURS[(int(class_id) - 1) % len(CLASS_COLOURS)], dtype=np.float32)
            region = ids == class_id
            rgb[region] = (1 - alpha) * rgb[region] + alpha * tint
    picture = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
    height, width = rgb.shape[:2]
    scale = tile / max(height, width)
    picture = picture.resize(
        (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BILINEAR
    )
    if sample.boxes is not None:
        draw = ImageDraw.Draw(picture)
        classes = (
            np.ones(len(sample.boxes), int) if sample.box_classes is None else np.asarray(sample.box_classes)
        )
        for box, class_id in zip(np.asarray(sample.boxes).reshape(-1, 4), classes, strict=True):
            colour = CLASS_COLOURS[(int(class_id) - 1) % len(CLASS_COLOURS)]
            draw.rectangle([float(v) * scale for v in box], outline=colour, width=1)
    return picture


def contact_sheet(
    samples: Sequence[Sample], captions: Sequence[str] | None = None, columns: int = 8, tile: int = 128
) -> Image.Image:
    """A grid of :func:`render_tile` tiles with an optional caption under each."""
    if not samples:
        raise ValueError("a contact sheet needs at least one sample")
    rows = -(-len(samples) // columns)
    cell_height = tile + (CAPTION_PX if captions else 0)
    sheet = Image.new("RGB", (columns * tile, rows * cell_height), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    for index, sample in enumerate(samples):
        row, column = divmod(index, columns)
        picture = render_tile(sample, tile)
        x, y = column * tile, row * cell_height
        sheet.paste(picture, (x + (tile - picture.width) // 2, y + (tile - picture.height) // 2))
        if captions:
            draw.text((x + 2, y + tile + 1), captions[index][: tile // 6], fill=(230, 230, 230))
    return sheet


def save_contact_sheet(
    samples: Sequence[Sample], path: str | Path, captions: Sequence[str] | None = None, **options: int
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(samples, captions, **options).save(path)
    return path
