"""DAGM-style procedural surface-defect generator: every label level, any amount, no download.

DAGM 2007 is itself procedurally generated; this module builds an equivalent whose surfaces,
defects and splits are all known, so tests, the demo and zero-shot experiments get many surfaces
with image labels, defect classes, boxes and pixel masks at once.

Surfaces
    :data:`SURFACE_FAMILIES` lists twelve procedural textures (grain noise, oriented stripes, weave,
    cells, marble, brushed metal, speckle, blotches under uneven light, a dot lattice, wood, pebbles,
    cross-hatching). Surface ``s`` (named ``Class{s + 1}``) uses family ``s % families`` (``families``
    12 by default); surfaces past the first ``families`` are *variants* of a family: the same texture
    with another orientation, scale, mean brightness and contrast, drawn from ``(seed, s)``. Fewer
    families (``families=5``: paper 002's Table 1 has five texture words for DAGM's ten classes) give
    every texture to two surfaces, so an unseen surface's texture has been seen on another surface
    unless both surfaces of its family are unseen.
    Every image of a surface differs: its texture phase, a small orientation / scale jitter,
    illumination gradient, vignetting and sensor noise are drawn per image.

Defects
    :data:`DEFECT_TYPES`: scratch, crack (random-walk polyline), spot, stain (soft ellipse), pits
    (cluster of small holes), missing texture (a patch where the texture is washed out), inclusion
    (irregular elongated blob) and dent (a shaded disk, one side bright, one dark). Defects change the
    texture in units of its own contrast, so they blend into it instead of being black blobs.

Modes
    ``"dagm"``: one defect type per surface (surface ``s`` gets ``DEFECT_TYPES[s % defect_types]``,
    ``defect_types`` 8 by default), one defect per defective image; ``class_names`` are the defect
    types used, in :data:`DEFECT_TYPES` order. Fewer types (e.g. 5) give each type to
    several surfaces of different textures, so no defect attribute belongs to one surface alone:
    zero-shot learning needs every attribute of an unseen surface to vary among the seen ones.
    ``"multiclass"`` (Severstal-like): four classes :data:`MULTICLASS_TYPES` (pits, inclusion,
    scratch, stain, after Severstal's pitting / inclusion / scratches / patches), one to four of them
    per defective image; ``Sample.classes`` lists every class present. The mask is an HxW class-id
    map; defects are painted in increasing class id, so where two overlap the *higher id wins* and a
    class wholly covered by another is not listed.

    ``defect_fraction`` (default 0.25, DAGM itself has about 1/8) of each surface's images are
    defective, exactly ``round(per_surface * defect_fraction)``; ``test_fraction`` (default 0.5, as
    DAGM's Train/Test halves) of the good and of the defective images of each surface form the test
    split. Both choices depend only on ``(seed, surface, per_surface)``.

Attribute vector (class embedding for zero-shot learning, after paper 002's Table 1)
    One vector per surface, in :func:`surface_attributes` and ``attributes.json``
    (``{"attribute_names": [...], "surfaces": {name: [floats]}}``). Dimensions, in order:

    ========================  ===================================================================
    ``mean_intensity``        mean grey level of the surface / 255
    ``contrast``              texture standard deviation in grey levels / 64
    ``texture_<family>``      one-hot texture family (12 dims, :data:`SURFACE_FAMILIES` order)
    ``orientation_cos``       ``anisotropy * cos(2 theta)``; theta the texture orientation (the
    ``orientation_sin``       doubled angle because orientation is pi-periodic; 0 when isotropic)
    ``anisotropy``            0 isotropic .. 1 strongly oriented
    ``periodicity``           0 random .. 1 strictly periodic
    ``scale``                 log2(characteristic wavelength in pixels) / 8
    ``illumination``          strength of uneven lighting, 0 .. 1
    ``defect_<type>``         defect type one-hot (8 dims, :data:`DEFECT_TYPES` order); multi-hot
                              over the four classes in multiclass mode
    ``defect_area``           sqrt(typical defect area / image area): linear size of a defect
    ``defect_elongation``     1 - 1/aspect ratio: 0 round .. 1 line-like
    ``defect_polarity``       -1 darker than the surface, +1 brighter, 0 both (dents)
    ``defect_contrast``       defect strength in units of the texture contrast / 2
    ``defect_distribution``   0 one compact region .. 1 a scattered cluster of small parts
    ========================  ===================================================================

    Defect attributes average over the surface's types in multiclass mode. None depend on the image
    size, so surfaces keep their embedding across sizes.

Determinism
    Each image uses its own generator seeded by ``SeedSequence([seed, surface, index, stream])``,
    so output does not depend on order or worker count; PNGs are written by Pillow with fixed
    settings and no metadata; JSON has no timestamps. Same arguments give byte-identical files.

Layouts written by :func:`generate`
    ``"dagm"``: the DAGM 2007 layout (``ClassN/Train/NNNN.PNG``,
    ``ClassN/Train/Label/NNNN_label.PNG``, ``ClassN/Train/Label/Labels.txt``, same for ``Test/``)
    plus ``dagm.json`` (class names and generator settings) and ``attributes.json`` at the root; read
    it back with :mod:`defectkit.data.formats.dagm`. ``Labels.txt`` is as in DAGM: a first line with
    the class number, then one tab-separated row per image ``index, isDefective, image file, 0, label
    file`` (``0`` for the label file of a good image). Label images are 0/255 in dagm mode, class ids
    in multiclass mode. ``"manifest"``: ``images/ClassN/NNNN.png`` and ``masks/ClassN/NNNN.png``
    (class ids; every image has a mask, all zero for good ones) with ``manifest.jsonl`` and
    ``dataset.json`` written by :func:`defectkit.data.formats.manifest.write_manifest`; rows carry
    extra ``split`` and ``family`` keys (the manifest reader puts them in ``meta``).

Speed: vectorised numpy / scipy only (no torch in the hot path); about 60 images/s at 256x256 on
one core, PNG writing included (1,000 images in ~16 s), about 4x slower at 512x512.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from defectkit.data.formats.manifest import write_manifest
from defectkit.data.masks import mask_to_boxes
from defectkit.data.sample import Dataset, DatasetInfo, Sample
from defectkit.files import write_atomic

Mode = Literal["dagm", "multiclass"]
Layout = Literal["dagm", "manifest"]

SURFACE_FAMILIES: tuple[str, ...] = (
    "grain",
    "stripes",
    "weave",
    "cells",
    "marble",
    "brushed",
    "speckle",
    "blotches",
    "dots",
    "wood",
    "pebble",
    "crosshatch",
)
DEFECT_TYPES: tuple[str, ...] = (
    "scratch",
    "crack",
    "spot",
    "stain",
    "pits",
    "missing_texture",
    "inclusion",
    "dent",
)
MULTICLASS_TYPES: tuple[str, ...] = ("pits", "inclusion", "scratch", "stain")
ATTRIBUTE_NAMES: tuple[str, ...] = (
    "mean_intensity",
    "contrast",
    *(f"texture_{name}" for name in SURFACE_FAMILIES),
    "orientation_cos",
    "orientation_sin",
    "anisotropy",
    "periodicity",
    "scale",
    "illumination",
    *(f"defect_{name}" for name in DEFECT_TYPES),
    "defect_area",
    "defect_elongation",
    "defect_polarity",
    "defect_contrast",
    "defect_distribution",
)
GENERATOR_NAME = "defectkit.data.synthetic"
DAGM_INFO_NAME = "dagm.json"
ATTRIBUTES_NAME = "attributes.json"

# Streams keep the surface-level and image-level random draws independent of each other.
_SURFACE_STREAM = 1
_PLAN_STREAM = 2
_IMAGE_STREAM = 3
# Fixed PNG settings: level 3 is ~3x faster than zlib's default for noisy textures, a few % larger.
_PNG_LEVEL = 3


@dataclass(frozen=True)
class _Family:
    mean: float  # grey level
    contrast: float  # texture std in grey levels
    orientation: float  # degrees
    wavelength: float  # characteristic feature size in pixels (the "scale" attribute)
    anisotropy: float
    periodicity: float
    illumination: float


_FAMILIES: dict[str, _Family] = {
    "grain": _Family(128, 18, 0, 3, 0.0, 0.0, 0.15),
    "stripes": _Family(110, 22, 20, 12, 0.9, 0.8, 0.15),
    "weave": _Family(140, 24, 0, 14, 0.5, 1.0, 0.15),
    "cells": _Family(150, 20, 0, 22, 0.0, 0.3, 0.15),
    "marble": _Family(170, 16, 60, 60, 0.6, 0.3, 0.2),
    "brushed": _Family(120, 14, 0, 2, 1.0, 0.0, 0.25),
    "speckle": _Family(100, 16, 0, 4, 0.0, 0.0, 0.1),
    "blotches": _Family(130, 20, 0, 40, 0.0, 0.0, 0.6),
    "dots": _Family(90, 22, 0, 18, 0.2, 1.0, 0.15),
    "wood": _Family(115, 20, 90, 20, 0.8, 0.5, 0.2),
    "pebble": _Family(135, 18, 0, 16, 0.0, 0.3, 0.2),
    "crosshatch": _Family(145, 18, 0, 10, 0.5, 0.9, 0.15),
}


@dataclass(frozen=True)
class _DefectKind:
    area: float  # sqrt(typical area fraction), measured roughly on generated images
    elongation: float
    polarity: float | None  # None: the surface draws it (dark or bright)
    distribution: float


_DEFECTS: dict[str, _DefectKind] = {
    "scratch": _DefectKind(0.05, 0.99, None, 0.0),
    "crack": _DefectKind(0.05, 0.95, -1.0, 0.3),
    "spot": _DefectKind(0.05, 0.2, None, 0.0),
    "stain": _DefectKind(0.2, 0.45, None, 0.0),
    "pits": _DefectKind(0.04, 0.1, -1.0, 1.0),
    "missing_texture": _DefectKind(0.17, 0.3, None, 0.0),
    "inclusion": _DefectKind(0.05, 0.6, None, 0.0),
    "dent": _DefectKind(0.08, 0.0, 0.0, 0.0),
}


# SynthConfig fields added after generated data, caches and results were first keyed, with the
# value everything made before them implies.
LATER_DEFAULTS: dict[str, int] = {"defect_types": len(DEFECT_TYPES), "families": len(SURFACE_FAMILIES)}


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Every field takes part in the output, so equal configs give equal files.

    ``surfaces`` surfaces (``Class1..ClassN``) of ``per_surface`` images each, ``size`` x ``size``
    pixels, 8-bit grey. ``mode``, ``defect_fraction`` and ``test_fraction``: see the module docstring.
    """

    surfaces: int = 10
    per_surface: int = 100
    size: int = 512
    seed: int = 0
    mode: Mode = "dagm"
    defect_fraction: float = 0.25
    test_fraction: float = 0.5
    defect_types: int = len(DEFECT_TYPES)
    families: int = len(SURFACE_FAMILIES)

    def later_settings(self) -> dict[str, Any]:
        """The fields added after data and caches were first keyed (:data:`LATER_DEFAULTS`), where
        they are off their defaults: what results variants name."""
        return {
            name: getattr(self, name)
            for name, default in LATER_DEFAULTS.items()
            if getattr(self, name) != default
        }

    def settings(self) -> dict[str, Any]:
        """Every field, less the later ones at their defaults: what cache keys hash, so data and
        caches made before those fields existed keep their keys."""
        fields = {name: value for name, value in self.__dict__.items() if name not in LATER_DEFAULTS}
        return {**fields, **self.later_settings()}

    def __post_init__(self) -> None:
        if self.surfaces < 1:
            raise ValueError(f"surfaces must be >= 1, got {self.surfaces}")
        if self.per_surface < 1:
            raise ValueError(f"per_surface must be >= 1, got {self.per_surface}")
        if self.size < 32:
            raise ValueError(f"size must be >= 32 pixels, got {self.size}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.mode not in ("dagm", "multiclass"):
            raise ValueError(f"mode must be 'dagm' or 'multiclass', got {self.mode!r}")
        if not 1 <= self.defect_types <= len(DEFECT_TYPES):
            raise ValueError(f"defect_types must be in 1..{len(DEFECT_TYPES)}, got {self.defect_types}")
        if not 1 <= self.families <= len(SURFACE_FAMILIES):
            raise ValueError(f"families must be in 1..{len(SURFACE_FAMILIES)}, got {self.families}")
        for name in ("defect_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")


@dataclass(frozen=True)
class SynthImage:
    """One generated image with all its labels (in memory).

    ``mask`` is an HxW uint8 class-id map (0 background); ``boxes`` Nx4 float32 xyxy from
    :func:`defectkit.data.masks.mask_to_boxes`; ``classes`` the sorted class ids present in ``mask``.
    """

    image: np.ndarray
    mask: np.ndarray
    label: int
    classes: list[int]
    boxes: np.ndarray
    box_classes: np.ndarray
    surface: str
    family: str
    split: str  # "train" | "test"
    surface_index: int
    index: int
    defect_types: tuple[str, ...] = field(default_factory=tuple)

    @property
    def stem(self) -> str:
        """File stem as DAGM numbers images: 1-based, four digits."""
        return f"{self.index + 1:04d}"

    @property
    def part(self) -> str:
        return f"{self.surface}-{self.split}-{self.stem}"

    def meta(self) -> dict[str, Any]:
        return {
            "source": "synthetic",
            "part": self.part,
            "split": self.split,
            "family": self.family,
            "index": self.index,
            "defect_types": list(self.defect_types),
        }


@dataclass(frozen=True)
class _Surface:
    name: str
    family: str
    variant: int
    mean: float
    contrast: float
    orientation: float  # radians
    scale: float
    illumination: float
    polarity: float
    strength: float
    defect_type: str | None  # dagm mode: the surface's only type


# ---------------------------------------------------------------------------------------------
# Names, plans and attributes (depend on (seed, surface) only)


def surface_name(surface: int) -> str:
    return f"Class{surface + 1}"


def surface_names(config: SynthConfig) -> list[str]:
    return [surface_name(s) for s in range(config.surfaces)]


def surface_family(surface: int, families: int = len(SURFACE_FAMILIES)) -> str:
    """The texture family of surface ``surface`` (0-based), cycling through the first ``families``
    of :data:`SURFACE_FAMILIES`."""
    return SURFACE_FAMILIES[surface % families]


def surface_defect_type(surface: int, defect_types: int = len(DEFECT_TYPES)) -> str:
    """The defect type of surface ``surface`` in dagm mode, cycling through the first
    ``defect_types`` of :data:`DEFECT_TYPES`."""
    return DEFECT_TYPES[surface % defect_types]


def class_names(config: SynthConfig) -> list[str]:
    """Defect class names; class id ``k`` is ``class_names[k - 1]``."""
    if config.mode == "multiclass":
        return list(MULTICLASS_TYPES)
    used = {surface_defect_type(s, config.defect_types) for s in range(config.surfaces)}
    return [name for name in DEFECT_TYPES if name in used]


def _rng(*entropy: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(entropy))))


@lru_cache(maxsize=256)
def _surface(
    seed: int,
    surface: int,
    mode: Mode,
    defect_types: int = len(DEFECT_TYPES),
    families: int = len(SURFACE_FAMILIES),
) -> _Surface:
    family = surface_family(surface, families)
    base = _FAMILIES[family]
    variant = surface // families
    rng = _rng(seed, surface, _SURFACE_STREAM)
    if variant == 0:
        mean = base.mean + rng.normal(0.0, 6.0)
        contrast = base.contrast * math.exp(rng.normal(0.0, 0.08))
        orientation = base.orientation + rng.uniform(-8.0, 8.0)
        scale = math.exp(rng.normal(0.0, 0.08))
    else:
        # A variant must look like its family yet be told apart: large, seed-given parameter moves.
        mean = base.mean + rng.uniform(-35.0, 35.0)
        contrast = base.contrast * math.exp(rng.uniform(-0.4, 0.4))
        orientation = rng.uniform(0.0, 180.0)
        scale = math.exp(rng.uniform(-0.45, 0.45))
    polarity = 1.0 if rng.random() < 0.5 else -1.0
    strength = rng.uniform(0.9, 1.3)
    defect_type = surface_defect_type(surface, defect_types) if mode == "dagm" else None
    fixed = None if defect_type is None else _DEFECTS[defect_type].polarity
    if fixed is not None:
        polarity = fixed
    return _Surface(
        name=surface_name(surface),
        family=family,
        variant=variant,
        mean=float(np.clip(mean, 60.0, 200.0)),
        contrast=float(contrast),
        orientation=math.radians(orientation),
        scale=float(scale),
        illumination=base.illumination,
        polarity=polarity,
        strength=float(strength),
        defect_type=defect_type,
    )


@lru_cache(maxsize=256)
def _plan(config: SynthConfig, surface: int) -> tuple[np.ndarray, np.ndarray]:
    """(defective, test) flags for the surface's images: exact counts, stratified split."""
    n = config.per_surface
    rng = _rng(config.seed, surface, _PLAN_STREAM)
    defective = np.zeros(n, dtype=bool)
    defective[rng.permutation(n)[: round(n * config.defect_fraction)]] = True
    test = np.zeros(n, dtype=bool)
    for group in (np.flatnonzero(defective), np.flatnonzero(~defective)):
        chosen = rng.permutation(group)[: round(len(group) * config.test_fraction)]
        test[chosen] = True
    defective.setflags(write=False)
    test.setflags(write=False)
    return defective, test


def surface_attributes(config: SynthConfig) -> tuple[list[str], dict[str, list[float]]]:
    """The attribute vector of every surface (see the module docstring for each dimension)."""
    names = list(ATTRIBUTE_NAMES)
    result: dict[str, list[float]] = {}
    for s in range(config.surfaces):
        surf = _surface(config.seed, s, config.mode, config.defect_types, config.families)
        base = _FAMILIES[surf.family]
        types = MULTICLASS_TYPES if config.mode == "multiclass" else (surf.defect_type or "",)
        kinds = [_DEFECTS[t] for t in types]
        polarities = [surf.polarity if k.polarity is None else k.polarity for k in kinds]
        vector = [
            surf.mean / 255.0,
            surf.contrast / 64.0,
            *(1.0 if f == surf.family else 0.0 for f in SURFACE_FAMILIES),
            base.anisotropy * math.cos(2.0 * surf.orientation),
            base.anisotropy * math.sin(2.0 * surf.orientation),
            base.anisotropy,
            base.periodicity,
            math.log2(base.wavelength * surf.scale) / 8.0,
            surf.illumination,
            *(1.0 if t in types else 0.0 for t in DEFECT_TYPES),
            float(np.mean([k.area for k in kinds])),
            float(np.mean([k.elongation for k in kinds])),
            float(np.mean(polarities)),
            surf.strength / 2.0,
            float(np.mean([k.distribution for k in kinds])),
        ]
        result[surf.name] = [round(float(v), 6) for v in vector]
    return names, result


# ---------------------------------------------------------------------------------------------
# Texture primitives


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates centred on the image (read-only; not random, so safe to share)."""
    axis = np.arange(size, dtype=np.float32) - (size - 1) / 2.0
    y, x = np.meshgrid(axis, axis, indexing="ij")
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@dataclass
class _Coords:
    x: np.ndarray  # pixels, image-aligned
    y: np.ndarray
    u: np.ndarray  # texture frame: rotated, scaled, shifted per image
    v: np.ndarray
    size: int


def _standardise(values: np.ndarray) -> np.ndarray:
    values = values - values.mean()
    return values / max(float(values.std()), 1e-6)


def _noise(
    rng: np.random.Generator, u: np.ndarray, v: np.ndarray, cell_u: float, cell_v: float = 0.0
) -> np.ndarray:
    """Smooth value noise with feature size ``cell_u`` x ``cell_v`` pixels along u / v, unit std.

    A random lattice sampled with cubic B-spline weights (``prefilter=False``: smoothing, not
    interpolation); no hand-written Perlin/simplex needed. Orientation comes from the (u, v) frame.
    """
    cell_v = cell_v or cell_u
    a = u / cell_u
    b = v / cell_v
    a0 = math.floor(float(a.min())) - 2
    b0 = math.floor(float(b.min())) - 2
    shape = (math.ceil(float(b.max())) - b0 + 3, math.ceil(float(a.max())) - a0 + 3)
    lattice = rng.standard_normal(shape, dtype=np.float32)
    coords = np.stack([b - b0, a - a0])
    out = ndimage.map_coordinates(
        lattice, coords, order=3, prefilter=False, mode="nearest", output=np.float32
    )
    return _standardise(out)


def _lowfreq(rng: np.random.Generator, size: int, cell: float) -> np.ndarray:
    """Cheap axis-aligned low-frequency field (illumination): a small lattice resized by Pillow."""
    n = max(2, math.ceil(size / cell)) + 2
    lattice = rng.standard_normal((n, n), dtype=np.float32)
    offset = rng.uniform(0.0, 1.0, size=2)
    box = (float(offset[0]), float(offset[1]), float(offset[0] + n - 2), float(offset[1] + n - 2))
    image = Image.fromarray(lattice).resize((size, size), Image.Resampling.BICUBIC, box=box)
    return _standardise(np.asarray(image, dtype=np.float32))


@dataclass
class _Worley:
    f1: np.ndarray  # squared distance to the nearest feature point, lattice units
    f2: np.ndarray  # squared distance to the second nearest
    value: np.ndarray  # random value of the nearest point's cell (unit normal)
    dx: np.ndarray  # vector from the pixel to the nearest point, lattice units
    dy: np.ndarray


def _worley(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, cell: float) -> _Worley:
    """Cellular (Worley) noise from one jittered point per lattice cell, searching the 3x3 cells."""
    a = u / cell
    b = v / cell
    ia = np.floor(a)
    ib = np.floor(b)
    fa = (a - ia).astype(np.float32)
    fb = (b - ib).astype(np.float32)
    a0 = int(ia.min()) - 1
    b0 = int(ib.min()) - 1
    rows = int(ib.max()) - b0 + 2
    cols = int(ia.max()) - a0 + 2
    jx = rng.random(rows * cols, dtype=np.float32)
    jy = rng.random(rows * cols, dtype=np.float32)
    val = rng.standard_normal(rows * cols, dtype=np.float32)
    base = ((ib - b0) * cols + (ia - a0)).astype(np.int64)
    f1 = np.full(a.shape, np.inf, dtype=np.float32)
    f2 = np.full(a.shape, np.inf, dtype=np.float32)
    value = np.zeros(a.shape, dtype=np.float32)
    best_dx = np.zeros(a.shape, dtype=np.float32)
    best_dy = np.zeros(a.shape, dtype=np.float32)
    for dj in (-1, 0, 1):
        for di in (-1, 0, 1):
            index = base + (dj * cols + di)
            dx = di + jx.take(index) - fa
            dy = dj + jy.take(index) - fb
            dist = dx * dx + dy * dy
            closer = dist < f1
            np.copyto(f2, np.where(closer, f1, np.minimum(f2, dist)))
            np.copyto(f1, dist, where=closer)
            np.copyto(value, val.take(index), where=closer)
            np.copyto(best_dx, dx, where=closer)
            np.copyto(best_dy, dy, where=closer)
    return _Worley(f1, f2, value, best_dx, best_dy)


TWO_PI = 2.0 * math.pi


def _tex_grain(rng: np.random.Generator, c: _Coords) -> np.ndarray:
    return _noise(rng, c.u, c.v, 1.6) + 0.35 * _noise(rng, c.u, c.v, 14.0)


def _tex_stripes(rng: np.random.Generator, c: _Coords) -> np.ndarray:
    warp = 0.9 * _noise(rng, c.u, c.v, 48.0)
    return np.sin(TWO_PI * c.u / 12.0 + warp) + 0.35 * _noise(rng, c.u, c.v, 1.5)


def _tex_weave(rng: np.random.Generator, c: _Coords) -> np.ndarray:
    period = 14.0
    pu = np.sin(math.pi * np.mod(c.u / period, 1.0))
    pv = np.sin(math.pi * np.mod(c.v / period, 1.0))
    # Over/under: threads alternate direction in a checkerboard of crossings.
    over = (np.floor(c.u / period) + np.floor(c.v / period)) % 2 == 0
    threads = np.where(over, pv * (0.55 + 0.45 * pu), pu * (0.55 + 0.45 * pv))
    return threads + 0.2 * _noise(rng, c.u, c.v, 1.3)


def _tex_cells(rng: np.random.Generator, c: _Coords) -> np.ndarray:
    cell = 22.0
    w = _worley(rng, c.u, c.v, cell)
    gap = (np.sqrt(w.f2) - np.sqrt(w.f1)) * cell  # ~ twice the distance to the cell border, pixels
    border = np.exp(-((gap / 2.0) ** 2))
    return 0.5 * w.value - 1.5 * border + 0.25 * _noise(rng, c.u, c.v, 1.5)


def _fbm(rng: np.random.Generator, c: _Coords, cell: float) -> np.ndarray:
    return (
        _noise(rng, c.u, c.v, cell)
        + 0.5 * _noise(rng, c.u, c.v, cell / 2)
        + 0.25 * _noise(rng, c.u, c.v, cell / 4)
    )


def _tex_marble(rng: np.random.Generator, c: _Coords) -> np.ndarray:
    turbulence = _fbm(rng, c, 64.0)
    wave = np.sin(TWO_PI * c.u / 60.0 + 2.5 * turbulence)
    veins = (1.0 - np.abs(wave)) ** 4  # thin dark veins where the wave crosses zero
    return -2.0 * veins + 0.3 * turbulence + 0.15 * _noise(rng, c.u, c.v, 1.5)


def _tex_brushed(rng: np.random.Generator, c: _Coords) -> np.ndarray:
    return (
        _noise(rng, c.u, c.v, 90.0, 0.9)
        + 0.6 * _noise(rng, c.u, c.v, 25.0, 2.5)
        + 0.4 * _noise(rng, c.u, c.v, 60.0)
    )


def _tex_speckle(rng: np.random.Generator, c: _Coords) -> np.ndarray:
    size = c.size
    count = int(size * size * 0.006)
    dots = np.zeros((size, size), dtype=np.float32)
    rows = rng.integers(0, size, count)
    cols = rng.integers(0, size, count)
    np.add.at(dots, (rows, cols), rng.choice(np.asarray([-1.0, 1.0, 1.0], dtype=np.float32), count))
    dots = ndimage.gaussian_filter(dots, 1.0)
    return _standardise(dots) + 0.4 * _noise(rng, c.u, c.v, 2.0)


def _tex_blotches(rng: np.random.Generator, c: _Coords) -> np.ndarray:
    return np.tanh(2.5 * _fbm(rng, c, 40.0) / 1.3) + 0.3 * _noise(rng, c.u, c.v, 1.5)


def _tex_dots(rng: np.random.Generator, c: _Coords) -> np.ndarray:
    k = TWO_PI / 18.0
    u = c.u + 1.5 * _noise(rng, c.u, c.v, 60.0)  # slight lattice wobble
    s3 = math.sqrt(3.0) / 2.0
    lattice = np.cos(k * u) + np.cos(k * (0.5 * u + s3 * c.v)) + np.cos(k * (0.5 * u - s3 * c.v))
    return np.exp(1.2 * (lattice - 3.0)) + 0.08 * _noise(rng, c.u, c.v, 1.5)


def _tex_wood(rng: np.random.Generator, c: _Coords) -> np.ndarray:
    period = 20.0
    warp = period * _noise(rng, c.u, c.v, 150.0, 40.0)  # rings bend around slow knots
    rings = np.mod((c.v + warp) / period, 1.0) ** 2.5
    return rings + 0.25 * _noise(rng, c.u, c.v, 40.0, 1.2)


def _tex_pebble(rng: np.random.Generator, c: _Coords) -> np.ndarray:
    w = _worley(rng, c.u, c.v, 16.0)
    # Lit rounded bumps: brightness follows the direction to the bump centre, fading with distance.
    shading = (0.8 * w.dx + 0.6 * w.dy) * np.exp(-2.0 * w.f1)
    return shading + 0.15 * w.value + 0.1 * _noise(rng, c.u, c.v, 1.5)


def _tex_crosshatch(rng: np.random.Generator, c: _Coords) -> np.ndarray:
    period = 10.0
    ca, sa = math.cos(math.radians(35.0)), math.sin(math.radians(35.0))
    a = np.sin(TWO_PI * (c.u * ca + c.v * sa) / period)
    b = np.sin(TWO_PI * (c.u * ca - c.v * sa) / period)
    return np.tanh(3.0 * a) + np.tanh(3.0 * b) + 0.3 * _noise(rng, c.u, c.v, 1.5)


_TEXTURES: dict[str, Callable[[np.random.Generator, _Coords], np.ndarray]] = {
    "grain": _tex_grain,
    "stripes": _tex_stripes,
    "weave": _tex_weave,
    "cells": _tex_cells,
    "marble": _tex_marble,
    "brushed": _tex_brushed,
    "speckle": _tex_speckle,
    "blotches": _tex_blotches,
    "dots": _tex_dots,
    "wood": _tex_wood,
    "pebble": _tex_pebble,
    "crosshatch": _tex_crosshatch,
}


# ---------------------------------------------------------------------------------------------
# Defects: each draws a hard shape (the mask) and changes the texture ``t`` (unit std) in place.


def _canvas(size: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("L", (size, size), 0)
    return image, ImageDraw.Draw(image)


def _hard(image: Image.Image) -> np.ndarray:
    return np.asarray(image) > 0


def _soften(hard: np.ndarray, sigma: float) -> np.ndarray:
    """Alpha: 1 on the shape, a Gaussian fall-off outside it (blurred only in its bounding window)."""
    alpha = hard.astype(np.float32)
    rows = np.flatnonzero(hard.any(axis=1))
    cols = np.flatnonzero(hard.any(axis=0))
    if rows.size == 0:
        return alpha
    margin = int(4 * sigma) + 1
    r0, r1 = max(int(rows[0]) - margin, 0), min(int(rows[-1]) + margin + 1, hard.shape[0])
    c0, c1 = max(int(cols[0]) - margin, 0), min(int(cols[-1]) + margin + 1, hard.shape[1])
    window = alpha[r0:r1, c0:c1]
    alpha[r0:r1, c0:c1] = np.maximum(window, ndimage.gaussian_filter(window, sigma))
    return alpha


def _ellipse(
    cx: float, cy: float, rx: float, ry: float, angle: float, jitter: np.ndarray | None = None
) -> list[tuple[float, float]]:
    steps = 32 if jitter is None else len(jitter)
    t = np.linspace(0.0, TWO_PI, steps, endpoint=False)
    radius = np.ones(steps) if jitter is None else 1.0 + jitter
    ex, ey = rx * radius * np.cos(t), ry * radius * np.sin(t)
    ca, sa = math.cos(angle), math.sin(angle)
    return [
        (float(cx + ca * px - sa * py), float(cy + sa * px + ca * py)) for px, py in zip(ex, ey, strict=True)
    ]


def _centre(rng: np.random.Generator, size: int, margin: float = 0.15) -> tuple[float, float]:
    low, high = margin * size, (1.0 - margin) * size
    return float(rng.uniform(low, high)), float(rng.uniform(low, high))


def _line_width(rng: np.random.Generator, size: int, low: float, high: float) -> int:
    return max(1, round(rng.uniform(low, high) * size / 256.0))


def _scratch(rng: np.random.Generator, t: np.ndarray, s: _Surface, size: int) -> np.ndarray:
    cx, cy = _centre(rng, size)
    length = rng.uniform(0.25, 0.6) * size
    angle = rng.uniform(0.0, math.pi)
    bend = rng.normal(0.0, 0.08) * length
    d = np.asarray([math.cos(angle), math.sin(angle)])
    n = np.asarray([-d[1], d[0]])
    points = []
    for q in np.linspace(-0.5, 0.5, 24):
        sag = bend * (1.0 - 4.0 * q * q)  # a gentle arc through both ends
        points.append(
            (float(cx + d[0] * length * q + n[0] * sag), float(cy + d[1] * length * q + n[1] * sag))
        )
    image, draw = _canvas(size)
    draw.line(points, fill=255, width=_line_width(rng, size, 1.0, 2.5), joint="curve")
    hard = _hard(image)
    alpha = _soften(hard, 0.8)
    t += alpha * (s.polarity * s.strength * 1.7 * rng.uniform(0.8, 1.2))
    return hard


def _crack(rng: np.random.Generator, t: np.ndarray, s: _Surface, size: int) -> np.ndarray:
    image, draw = _canvas(size)

    def walk(x: float, y: float, heading: float, steps: int) -> list[tuple[float, float]]:
        points = [(x, y)]
        step = 0.02 * size
        for _ in range(steps):
            heading += rng.normal(0.0, 0.45)
            x += step * math.cos(heading)
            y += step * math.sin(heading)
            points.append((x, y))
        return points

    cx, cy = _centre(rng, size, 0.25)
    heading = rng.uniform(0.0, TWO_PI)
    trunk = walk(cx, cy, heading, int(rng.integers(12, 26)))
    draw.line(trunk, fill=255, width=_line_width(rng, size, 1.0, 2.2), joint="curve")
    if rng.random() < 0.6:
        bx, by = trunk[len(trunk) // 2]
        branch = walk(
            bx, by, heading + rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.2), int(rng.integers(5, 12))
        )
        draw.line(branch, fill=255, width=1, joint="curve")
    hard = _hard(image)
    alpha = _soften(hard, 0.7)
    t -= alpha * (s.strength * 1.9 * rng.uniform(0.85, 1.15))
    return hard


def _spot(rng: np.random.Generator, t: np.ndarray, s: _Surface, size: int) -> np.ndarray:
    cx, cy = _centre(rng, size)
    r = rng.uniform(0.015, 0.04) * size
    aspect = rng.uniform(1.0, 1.5)
    image, draw = _canvas(size)
    draw.polygon(_ellipse(cx, cy, r * aspect, r, rng.uniform(0, math.pi)), fill=255)
    hard = _hard(image)
    alpha = _soften(hard, max(1.0, 0.3 * r))
    t += alpha * (s.polarity * s.strength * 1.3 * rng.uniform(0.85, 1.15))
    return hard


def _stain(rng: np.random.Generator, t: np.ndarray, s: _Surface, size: int) -> np.ndarray:
    cx, cy = _centre(rng, size, 0.2)
    r = rng.uniform(0.06, 0.14) * size
    aspect = rng.uniform(1.0, 2.5)
    image, draw = _canvas(size)
    jitter = 0.08 * _smooth_circle(rng, 48)
    draw.polygon(_ellipse(cx, cy, r * aspect, r, rng.uniform(0, math.pi), jitter), fill=255)
    hard = _hard(image)
    # Soft edge, and the stain flattens the texture a little: a film on the surface.
    alpha = ndimage.gaussian_filter(hard.astype(np.float32), 0.2 * r)
    alpha = np.clip(2.0 * alpha, 0.0, 1.0)
    t *= 1.0 - 0.4 * alpha
    t += alpha * (s.polarity * s.strength * 0.85 * rng.uniform(0.85, 1.15))
    return hard


def _smooth_circle(rng: np.random.Generator, steps: int) -> np.ndarray:
    """A smooth periodic radius perturbation (a few low harmonics) for irregular blobs."""
    t = np.linspace(0.0, TWO_PI, steps, endpoint=False)
    out = np.zeros(steps)
    for harmonic in (2, 3, 4, 5):
        out += rng.normal(0.0, 1.0 / harmonic) * np.cos(harmonic * t + rng.uniform(0, TWO_PI))
    return out


def _pits(rng: np.random.Generator, t: np.ndarray, s: _Surface, size: int) -> np.ndarray:
    cx, cy = _centre(rng, size)
    spread = rng.uniform(0.04, 0.1) * size
    count = int(rng.integers(6, 26))
    image, draw = _canvas(size)
    for _ in range(count):
        px, py = cx + rng.normal(0.0, spread / 2), cy + rng.normal(0.0, spread / 2)
        r = rng.uniform(0.8, 2.2) * size / 256.0
        draw.ellipse([px - r, py - r, px + r, py + r], fill=255)
    hard = _hard(image)
    alpha = _soften(hard, 0.8)
    t -= alpha * (s.strength * 1.8 * rng.uniform(0.85, 1.15))
    return hard


def _missing_texture(rng: np.random.Generator, t: np.ndarray, s: _Surface, size: int) -> np.ndarray:
    cx, cy = _centre(rng, size, 0.2)
    half = rng.uniform(0.05, 0.12) * size
    aspect = rng.uniform(1.0, 2.0)
    image, draw = _canvas(size)
    jitter = 0.15 * _smooth_circle(rng, 12)
    draw.polygon(_ellipse(cx, cy, half * aspect, half, rng.uniform(0, math.pi), jitter), fill=255)
    hard = _hard(image)
    alpha = _soften(hard, 2.0)
    washed = ndimage.gaussian_filter(t, 4.0)
    # Keep a quarter of the texture: a worn patch, not a painted-over disk.
    t *= 1.0 - 0.75 * alpha
    t += alpha * (0.4 * washed + s.polarity * 0.3 * s.strength)
    return hard


def _inclusion(rng: np.random.Generator, t: np.ndarray, s: _Surface, size: int) -> np.ndarray:
    cx, cy = _centre(rng, size)
    r = rng.uniform(0.012, 0.03) * size
    aspect = rng.uniform(1.5, 4.0)
    image, draw = _canvas(size)
    jitter = 0.3 * _smooth_circle(rng, 24)
    draw.polygon(_ellipse(cx, cy, r * aspect, r, rng.uniform(0, math.pi), jitter), fill=255)
    hard = _hard(image)
    alpha = _soften(hard, 1.0)
    t += alpha * (s.polarity * s.strength * 1.4 * rng.uniform(0.85, 1.15))
    return hard


def _dent(rng: np.random.Generator, t: np.ndarray, s: _Surface, size: int) -> np.ndarray:
    cx, cy = _centre(rng, size)
    r = rng.uniform(0.03, 0.07) * size
    image, draw = _canvas(size)
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    hard = _hard(image)
    alpha = _soften(hard, 0.25 * r)
    x, y = _grid(size)
    light = rng.uniform(0.0, TWO_PI)
    # A dish lit from one side: the wall facing the light is bright, the other dark.
    shade = np.clip(
        ((x + (size - 1) / 2 - cx) * math.cos(light) + (y + (size - 1) / 2 - cy) * math.sin(light)) / r, -1, 1
    )
    t += alpha * shade * (s.strength * 1.6)
    return hard


_DEFECT_PAINTERS: dict[str, Callable[[np.random.Generator, np.ndarray, _Surface, int], np.ndarray]] = {
    "scratch": _scratch,
    "crack": _crack,
    "spot": _spot,
    "stain": _stain,
    "pits": _pits,
    "missing_texture": _missing_texture,
    "inclusion": _inclusion,
    "dent": _dent,
}


# ---------------------------------------------------------------------------------------------
# One image


def _check_index(config: SynthConfig, surface: int, index: int) -> None:
    if not 0 <= surface < config.surfaces:
        raise ValueError(f"surface {surface} outside 0..{config.surfaces - 1}")
    if not 0 <= index < config.per_surface:
        raise ValueError(f"index {index} outside 0..{config.per_surface - 1}")


def synthesize(config: SynthConfig, surface: int, index: int) -> SynthImage:
    """Generate image ``index`` (0-based) of surface ``surface`` (0-based) in memory.

    The result depends only on ``config`` and ``(surface, index)``, never on what else was generated.
    """
    _check_index(config, surface, index)
    surf = _surface(config.seed, surface, config.mode, config.defect_types, config.families)
    defective, test = _plan(config, surface)
    # Separate streams for texture, defects and lighting: a defective image is exactly its good
    # twin (same surface, index and seed, defect_fraction 0) plus the defect.
    streams = np.random.SeedSequence([config.seed, surface, index, _IMAGE_STREAM]).spawn(3)
    texture_rng, defect_rng, light_rng = (np.random.Generator(np.random.PCG64(seq)) for seq in streams)
    size = config.size

    x, y = _grid(size)
    theta = surf.orientation + texture_rng.normal(0.0, math.radians(2.0))
    scale = surf.scale * math.exp(texture_rng.normal(0.0, 0.04))
    ct, st = math.cos(theta) / scale, math.sin(theta) / scale
    shift = texture_rng.uniform(0.0, 1000.0, size=2).astype(np.float32)
    coords = _Coords(x=x, y=y, u=x * ct + y * st + shift[0], v=y * ct - x * st + shift[1], size=size)
    texture = _standardise(_TEXTURES[surf.family](texture_rng, coords).astype(np.float32, copy=False))

    mask = np.zeros((size, size), dtype=np.uint8)
    names = class_names(config)
    types: list[str] = []
    if defective[index]:
        if config.mode == "dagm":
            assert surf.defect_type is not None
            types = [surf.defect_type]
        else:
            count = int(defect_rng.choice(4, p=[0.55, 0.27, 0.12, 0.06])) + 1
            types = [MULTICLASS_TYPES[i] for i in sorted(defect_rng.choice(4, size=count, replace=False))]
        # Painted in increasing class id: where two overlap, the later (higher id) wins the mask.
        for name in types:
            hard = _DEFECT_PAINTERS[name](defect_rng, texture, surf, size)
            mask[hard] = names.index(name) + 1

    # Lighting acts on the whole surface, defects included: gradient, vignetting, slow variation.
    direction = light_rng.uniform(0.0, TWO_PI)
    gradient = light_rng.uniform(0.3, 1.0) * surf.illumination
    gain = 1.0 + gradient * (x * math.cos(direction) + y * math.sin(direction)) / size
    gain += 0.15 * surf.illumination * _lowfreq(light_rng, size, size / 2.0)
    gain -= light_rng.uniform(0.0, 0.12) * (x * x + y * y) / (size * size / 2.0)
    mean = surf.mean + light_rng.normal(0.0, 4.0)
    contrast = surf.contrast * math.exp(light_rng.normal(0.0, 0.05))
    pixels = (mean + contrast * texture) * gain
    pixels += light_rng.standard_normal((size, size), dtype=np.float32) * 1.5
    image = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)

    boxes, box_classes = mask_to_boxes(mask)
    classes = sorted(int(c) for c in np.unique(mask) if c != 0)
    present = tuple(n for n in types if names.index(n) + 1 in classes)
    return SynthImage(
        image=image,
        mask=mask,
        label=int(bool(classes)),
        classes=classes,
        boxes=boxes,
        box_classes=box_classes,
        surface=surf.name,
        family=surf.family,
        split="test" if test[index] else "train",
        surface_index=surface,
        index=index,
        defect_types=present,
    )


# ---------------------------------------------------------------------------------------------
# Datasets: in memory and on disk


def _info(
    config: SynthConfig, name: str, format: str, root: str, extra: dict[str, Any] | None = None
) -> DatasetInfo:
    names, vectors = surface_attributes(config)
    settings = asdict(config)
    if config.families == len(SURFACE_FAMILIES):
        del settings["families"]  # files written before the option existed stay byte-identical
    return DatasetInfo(
        name=name,
        format=format,
        root=root,
        class_names=class_names(config),
        surface_names=surface_names(config),
        extra={
            "attributes": {"attribute_names": names, "surfaces": vectors},
            "generator": {"name": GENERATOR_NAME, **settings, **(extra or {})},
            "families": {surface_name(s): surface_family(s, config.families) for s in range(config.surfaces)},
        },
    )


def synthetic_dataset(config: SynthConfig) -> Dataset:
    """All images in memory (``image`` and ``mask`` arrays filled), for tests and the demo; no disk.

    Paths are ``synthetic://ClassN/<split>/NNNN.png`` (not files).
    """
    samples: list[Sample] = []
    for s in range(config.surfaces):
        for i in range(config.per_surface):
            item = synthesize(config, s, i)
            samples.append(
                Sample(
                    path=f"synthetic://{item.surface}/{item.split}/{item.stem}.png",
                    image=item.image,
                    label=item.label,
                    classes=item.classes,
                    mask=item.mask,
                    boxes=item.boxes,
                    box_classes=item.box_classes,
                    surface=item.surface,
                    meta=item.meta(),
                )
            )
    info = _info(config, f"synthetic-{config.mode}", "synthetic", "")
    return Dataset(samples, info)


def _write_png(path: Path, array: np.ndarray) -> None:
    """Write atomically (temporary name, then rename) with fixed settings: same array, same bytes."""
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(array).save(tmp, format="PNG", compress_level=_PNG_LEVEL)
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, text, durable=False)


def _write_json(path: Path, data: Any) -> None:
    _write_text(path, json.dumps(data, indent=2) + "\n")


def generate(
    out: str | Path,
    config: SynthConfig,
    layout: Layout = "dagm",
    progress: Callable[[int, int], None] | None = None,
) -> Dataset:
    """Write the dataset under ``out`` in ``layout`` and return it as index samples of the files.

    Existing files of the same names are replaced (each file atomically); nothing else is touched.
    ``progress(done, total)`` is called after each image. The returned samples carry boxes and
    ``meta["mask_path"]`` (defective images; in the manifest layout every image), or
    ``meta["mask_empty"] = True`` for good images of the DAGM layout, whose masks are known all-zero
    but have no file (as in DAGM).
    """
    if layout not in ("dagm", "manifest"):
        raise ValueError(f"layout must be 'dagm' or 'manifest', got {layout!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = class_names(config)
    total = config.surfaces * config.per_surface
    samples: list[Sample] = []
    image_classes: dict[str, list[int]] = {}
    done = 0
    for s in range(config.surfaces):
        name = surface_name(s)
        rows: dict[str, list[str]] = {"train": [], "test": []}
        if layout == "dagm":
            for split in ("Train", "Test"):
                (out / name / split / "Label").mkdir(parents=True, exist_ok=True)
        else:
            (out / "images" / name).mkdir(parents=True, exist_ok=True)
            (out / "masks" / name).mkdir(parents=True, exist_ok=True)
        for i in range(config.per_surface):
            item = synthesize(config, s, i)
            meta = item.meta()
            if layout == "dagm":
                folder = out / name / item.split.capitalize()
                image_path = folder / f"{item.stem}.PNG"
                _write_png(image_path, item.image)
                label_file = "0"
                if item.label:
                    label_file = f"{item.stem}_label.PNG"
                    # DAGM's label images are 0/255; class ids only where one image can hold several.
                    stored = (item.mask != 0).astype(np.uint8) * 255 if config.mode == "dagm" else item.mask
                    _write_png(folder / "Label" / label_file, stored)
                    meta["mask_path"] = str(folder / "Label" / label_file)
                    if len(item.classes) == 1:
                        meta["mask_class"] = item.classes[0]
                    if config.mode == "multiclass":
                        image_classes[f"{name}/{item.split.capitalize()}/{item.stem}.PNG"] = item.classes
                else:
                    meta["mask_empty"] = True
                rows[item.split].append(f"{i + 1}\t{item.label}\t{item.stem}.PNG\t0\t{label_file}")
            else:
                image_path = out / "images" / name / f"{item.stem}.png"
                mask_path = out / "masks" / name / f"{item.stem}.png"
                _write_png(image_path, item.image)
                _write_png(mask_path, item.mask)
                meta["mask_path"] = str(mask_path)
            samples.append(
                Sample(
                    path=str(image_path),
                    label=item.label,
                    classes=item.classes,
                    boxes=item.boxes,
                    box_classes=item.box_classes,
                    surface=item.surface,
                    meta=meta,
                )
            )
            done += 1
            if progress is not None:
                progress(done, total)
        if layout == "dagm":
            for split, lines in rows.items():
                # First line: the class number, as in DAGM 2007's Labels.txt.
                text = "\n".join([str(s + 1), *lines]) + "\n"
                _write_text(out / name / split.capitalize() / "Label" / "Labels.txt", text)

    # The name must not come from the folder: the same config gives the same bytes wherever written.
    info = _info(config, f"synthetic-{config.mode}", layout, str(out), {"layout": layout})
    attribute_names, vectors = surface_attributes(config)
    _write_json(out / ATTRIBUTES_NAME, {"attribute_names": attribute_names, "surfaces": vectors})
    dataset = Dataset(samples, info)
    if layout == "dagm":
        _write_json(
            out / DAGM_INFO_NAME,
            {
                "generator": info.extra["generator"],
                "mode": config.mode,
                "class_names": names,
                "surface_names": info.surface_names,
                "families": info.extra["families"],
                "surface_classes": (
                    {
                        surface_name(s): names.index(surface_defect_type(s, config.defect_types)) + 1
                        for s in range(config.surfaces)
                    }
                    if config.mode == "dagm"
                    else {}
                ),
                "image_classes": image_classes,
            },
        )
    else:
        write_manifest(dataset, out, meta_columns=("split", "family"))
    return dataset


__all__ = [
    "ATTRIBUTE_NAMES",
    "DEFECT_TYPES",
    "MULTICLASS_TYPES",
    "SURFACE_FAMILIES",
    "SynthConfig",
    "SynthImage",
    "class_names",
    "generate",
    "surface_attributes",
    "surface_defect_type",
    "surface_family",
    "surface_name",
    "surface_names",
    "synthesize",
    "synthetic_dataset",
]
