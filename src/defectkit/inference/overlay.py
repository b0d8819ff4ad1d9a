"""Overlay pictures of one inspection, for the person who checks the machine's call.

The image is shown in grey so that the colours all mean something: the heat map as a translucent
colour map (opacity grows with the defect probability, so clean areas stay readable), the outline
of the pixels at or above the model's pixel threshold, the boxes of the reported regions, and a
banner with the verdict, the score and the threshold it was judged by (green OK, red DEFECT,
amber UNKNOWN). Pillow and numpy only, plus a matplotlib colour map (no pyplot): this runs once
per image in ``defectkit predict`` and must stay cheap.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from defectkit.data.io import convert_channels, image_array
from defectkit.inference.inspection import Inspection

VERDICT_COLOURS: dict[str, tuple[int, int, int]] = {
    "ok": (0, 150, 60),
    "defect": (200, 30, 30),
    "unknown": (230, 150, 0),
}
CONTOUR_COLOUR = (0, 230, 255)
BOX_COLOUR = (255, 40, 40)
MIN_WIDTH = 320  # narrower images are enlarged (nearest neighbour) so the banner text fits
MAX_SIDE = 2048  # ... but never beyond this


def png_bytes(picture: Image.Image) -> bytes:
    """``picture`` as PNG bytes, favouring speed over size (one is written per inspected image)."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


COLOURMAP = "inferno"
# Per-class outlines of multi-label models: bright, mutually distinct, none of them the verdict's or
# the boxes' red; the first is the single-map contour colour.
CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 230, 255),
    (120, 255, 60),
    (255, 200, 0),
    (255, 80, 220),
    (80, 140, 255),
    (255, 255, 255),
    (160, 100, 255),
    (0, 200, 150),
)


@lru_cache(maxsize=4)
def _colour_table(name: str) -> np.ndarray:
    """256x3 float lookup table of a matplotlib colour map (indexing beats calling it per pixel)."""
    import matplotlib

    return np.asarray(matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0, np.float32)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (OSError, ImportError):  # Pillow built without FreeType: fixed bitmap font
        return ImageFont.load_default()


def class_colour(index: int) -> tuple[int, int, int]:
    """The contour / box colour of defect class ``index`` (0-based) in multi-label overlays."""
    return CLASS_COLOURS[index % len(CLASS_COLOURS)]


def heatmap_image(heatmap: np.ndarray) -> Image.Image:
    """The heat map in [0, 1] as an 8-bit grey PNG-ready image (255 = certainly defective); a
    K x H x W stack of per-class maps is saved as its pixel-wise maximum."""
    if heatmap.ndim == 3:
        heatmap = heatmap.max(axis=0)
    return Image.fromarray((np.clip(heatmap, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), mode="L")


def _display_scale(height: int, width: int) -> float:
    """Integer enlargement for small images (banner legible), never past :data:`MAX_SIDE`; for
    larger ones an integer reduction ``1 / n`` to within :data:`MAX_SIDE`: an overlay is for a
    person to look at, and at full size it would take some 60 bytes a pixel (gigabytes for a large
    line-scan image)."""
    longest = max(height, width)
    if longest > MAX_SIDE:
        return 1.0 / -(-longest // MAX_SIDE)
    wanted = -(-MIN_WIDTH // width)
    return max(1, min(wanted, MAX_SIDE // longest))


def _rescale(array: np.ndarray, scale: float, reduce: str = "mean") -> np.ndarray:
    """``array`` (H x W) at ``scale`` (:func:`_display_scale`): an enlargement repeats pixels (they
    stay pixels); a reduction takes each n x n block's ``reduce`` ("mean" for the image, "max" for
    heat and outlines, so a defect one pixel wide still shows; a partial edge block counts)."""
    if scale >= 1:
        factor = int(scale)
        return array if factor == 1 else np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)
    factor = round(1.0 / scale)
    height, width = array.shape
    rows, cols = -(-height // factor), -(-width // factor)
    padded = np.pad(array, ((0, rows * factor - height), (0, cols * factor - width)), mode="edge")
    blocks = padded.reshape(rows, factor, cols, factor)
    return blocks.max(axis=(1, 3)) if reduce == "max" else blocks.mean(axis=(1, 3), dtype=np.float32)


def render_overlay(
    image: np.ndarray,
    inspection: Inspection,
    heatmap: np.ndarray | None,
    pixel_threshold: float,
    alpha: float = 0.6,
    colourmap: str = COLOURMAP,
) -> Image.Image:
    """RGB picture of ``image`` (uint8 HxW or HxWxC) with ``heatmap`` (HxW in [0, 1]) and verdict.

    Small images are enlarged by an integer factor (nearest neighbour, so pixels stay pixels)
    before drawing, so that contours are one display pixel wide and the banner text fits.
    A K x H x W ``heatmap`` (a multi-label model's per-class maps, classes in the order of
    ``inspection.class_scores``) is shaded by its maximum and outlined class by class, each in its
    :func:`class_colour`, with a legend of the outlined classes under the picture.
    """
    per_class: np.ndarray | None = None
    if heatmap is not None and heatmap.ndim == 3:
        per_class, heatmap = heatmap, heatmap.max(axis=0)
    grey = convert_channels(image_array(image), 1)
    height, width = grey.shape
    scale = _display_scale(height, width)
    shown = _rescale(grey, scale).astype(np.float32)
    rgb = np.repeat(shown[..., None], 3, axis=2)
    if heatmap is not None:
        if heatmap.shape != (height, width):
            raise ValueError(f"heat map is {heatmap.shape} but the image is {(height, width)}")
        heat = _rescale(np.clip(np.nan_to_num(heatmap.astype(np.float32)), 0.0, 1.0), scale, "max")
        colours = _colour_table(colourmap)[(heat * 255.0 + 0.5).astype(np.uint8)]
        opacity = (alpha * heat)[..., None]
        rgb = (1.0 - opacity) * rgb + opacity * colours
        if per_class is None:
            _outline(rgb, heat >= pixel_threshold, CONTOUR_COLOUR)
        else:
            for k in range(per_class.shape[0]):
                _outline(rgb, _rescale(per_class[k] >= pixel_threshold, scale, "max"), class_colour(k))
    picture = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    line = max(1, picture.width // 300)
    names = list(inspection.class_scores)
    label_font = _font(max(10, min(18, picture.width // 40)))
    for region in inspection.regions:
        x0, y0, x1, y1 = (v * scale for v in region.box)
        colour = BOX_COLOUR
        if per_class is not None and region.class_ in names:
            colour = class_colour(names.index(region.class_))
            # Multi-class boxes say which class and how sure, at their top-left corner.
            draw.text((x0 + 2, y0 + 1), f"{region.class_} {region.score:.2f}", fill=colour, font=label_font)
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour, width=line)
    if per_class is not None:
        picture = _with_legend(picture, per_class, pixel_threshold, inspection)

    relation = ">=" if inspection.score >= inspection.threshold else "<"
    verdict = inspection.verdict.upper()
    if inspection.class_scores and inspection.defect_class:  # a defect-type classifier names the type
        verdict = f"{verdict}: {inspection.defect_class}"
    text = f"{verdict}  score {inspection.score:.3f} {relation} {inspection.threshold:.3f}"
    if inspection.verdict == "unknown" and inspection.unseen_score is not None:
        # A line's unknown: a surface unlike every trained one, or one the line has no detector for.
        if inspection.surface is None:
            text = f"UNKNOWN SURFACE  unseen {inspection.unseen_score:.3f}"
            if inspection.unseen_threshold is not None:
                text += f" >= {inspection.unseen_threshold:.3f}"
        else:
            text = f"UNKNOWN  no detector for surface {inspection.surface}"
    elif inspection.surface:
        text = f"{inspection.surface}: {text}"
    if inspection.regions:
        text += f"  ({len(inspection.regions)} region{'s' if len(inspection.regions) != 1 else ''})"
    font_size = max(10, min(48, picture.width // 22))
    font = _font(font_size)
    while font_size > 10 and font.getlength(text) > picture.width - font_size:
        font_size -= 1  # shrink to fit a narrow image rather than cut the threshold off
        font = _font(font_size)
    banner_height = int(font_size * 1.6)
    canvas = Image.new("RGB", (picture.width, picture.height + banner_height), (20, 20, 20))
    canvas.paste(picture, (0, banner_height))
    banner = ImageDraw.Draw(canvas)
    colour = VERDICT_COLOURS.get(inspection.verdict, VERDICT_COLOURS["unknown"])
    banner.rectangle([0, 0, canvas.width - 1, banner_height - 1], fill=colour)
    banner.text((font_size // 3, (banner_height - font_size) // 2), text, fill=(255, 255, 255), font=font)
    return _with_attributes(canvas, inspection.attributes) if inspection.attributes else canvas


def _with_attributes(picture: Image.Image, attributes: list[str]) -> Image.Image:
    """The router's strongest attributes of an unknown surface, one per line under the picture."""
    font_size = max(10, min(16, picture.width // 30))
    font = _font(font_size)
    row = int(font_size * 1.4)
    canvas = Image.new("RGB", (picture.width, picture.height + row * len(attributes) + 4), (20, 20, 20))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, words in enumerate(attributes):
        draw.text((4, picture.height + 2 + k * row), words, fill=(255, 255, 255), font=font)
    return canvas


def _outline(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> None:
    edge = mask & ~ndimage.binary_erosion(mask, border_value=0)
    rgb[edge] = colour


def _with_legend(
    picture: Image.Image, per_class: np.ndarray, pixel_threshold: float, inspection: Inspection
) -> Image.Image:
    """``picture`` with a strip below naming each class outlined in it, in its colour, with its
    probability (classes with no pixel at the threshold are left out)."""
    names = list(inspection.class_scores)
    shown = [k for k in range(per_class.shape[0]) if (per_class[k] >= pixel_threshold).any()]
    if not shown:
        return picture
    font_size = max(10, min(24, picture.width // 40))
    font = _font(font_size)
    strip = int(font_size * 1.6)
    canvas = Image.new("RGB", (picture.width, picture.height + strip), (20, 20, 20))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x = font_size // 3
    for k in shown:
        name = names[k] if k < len(names) else str(k + 1)
        text = f"{name} {inspection.class_scores.get(name, float('nan')):.2f}"
        top = picture.height + strip // 4
        draw.rectangle([x, top, x + font_size - 2, top + font_size - 2], fill=class_colour(k))
        draw.text(
            (x + font_size + 2, picture.height + (strip - font_size) // 2),
            text,
            fill=(255, 255, 255),
            font=font,
        )
        x += int(font_size * 1.5 + font.getlength(text) + font_size)
    return canvas
