"""Class embeddings for zero-shot surface routing (paper 002's Table 1): 29 attributes per surface.

Paper 002 names the 29 attributes of its DAGM_MIX class embedding (Table 1) but prints no values,
no value type and no meaning for "defect reason 1-8". :func:`table1_attributes` writes them for
the generator's surfaces (:mod:`defectkit.data.synthetic`), derived from each surface's own
generator attributes, so they say what the images show. Values lie in [0, 1]:

=====  ===========================  ==========================================================
slot   Table 1 attribute            value for a generated surface
=====  ===========================  ==========================================================
1-2    defect colour white / black  ``(1 + p) / 2`` and ``(1 - p) / 2``, p the defect polarity
                                    (dents, both bright and dark: 0.5 each)
3-4    background white / black     mean grey level / 255, and one minus it
5-9    texture grainy / smooth /    :data:`FAMILY_TEXTURE`: each texture family's Table 1
       regular pattern / irregular  texture words (a family may have two, e.g. brushed metal is
       pattern / strip              smooth and strip)
10-12  defect area large / medium   one-hot on the linear defect size ``sqrt(area fraction)``:
       / small                      small < 0.06 <= medium < 0.12 <= large (:data:`AREA_BINS`)
13-19  defect shape                 :data:`DEFECT_SHAPE`: one per generator defect type
20-21  distribution concentration   ``1 - scatter`` and the defect's elongation (a line is
       / continuity                 continuous)
22-29  defect reason 1-8            one-hot of the generator's eight defect types, in
                                    :data:`~defectkit.data.synthetic.DEFECT_TYPES` order: the
                                    process fault behind each kind (the paper's "reason k")
=====  ===========================  ==========================================================

The 10 x 29 matrix of the DAGM_MIX surfaces is written out in ``docs/dagm-mix-attributes.md``.

Users describe their own surfaces in YAML (:func:`read_attributes`): ``attribute_names`` (any
number, any names) and ``surfaces: {name: [values]}``; :func:`describe` turns a vector (e.g. the
one a router reconstructs for an unseen surface) into its strongest attributes in words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from defectkit.data.synthetic import DEFECT_TYPES, SURFACE_FAMILIES, SynthConfig, surface_attributes

TABLE1_NAMES: tuple[str, ...] = (
    "defect colour: white",
    "defect colour: black",
    "background colour: white",
    "background colour: black",
    "surface texture: grainy",
    "surface texture: smooth",
    "surface texture: regular pattern",
    "surface texture: irregular pattern",
    "surface texture: strip",
    "defect area: large",
    "defect area: medium",
    "defect area: small",
    "defect shape: irregular slender strip",
    "defect shape: regular straight slender strip",
    "defect shape: irregular long strip",
    "defect shape: irregular small bump",
    "defect shape: irregular sparse dots",
    "defect shape: small dot",
    "defect shape: irregular ellipse stain",
    "defect distribution: concentration",
    "defect distribution: continuity",
    *(f"defect reason: {kind.replace('_', ' ')}" for kind in DEFECT_TYPES),
)
TEXTURES = ("grainy", "smooth", "regular pattern", "irregular pattern", "strip")
FAMILY_TEXTURE: dict[str, tuple[str, ...]] = {
    "grain": ("grainy",),
    "stripes": ("strip", "regular pattern"),
    "weave": ("regular pattern",),
    "cells": ("irregular pattern",),
    "marble": ("smooth", "irregular pattern"),
    "brushed": ("smooth", "strip"),
    "speckle": ("grainy",),
    "blotches": ("smooth", "irregular pattern"),
    "dots": ("regular pattern",),
    "wood": ("strip", "irregular pattern"),
    "pebble": ("irregular pattern", "grainy"),
    "crosshatch": ("regular pattern", "strip"),
}
SHAPES = TABLE1_NAMES[12:19]
DEFECT_SHAPE: dict[str, str] = {
    "scratch": "defect shape: regular straight slender strip",
    "crack": "defect shape: irregular slender strip",
    "spot": "defect shape: small dot",
    "stain": "defect shape: irregular ellipse stain",
    "pits": "defect shape: irregular sparse dots",
    "missing_texture": "defect shape: irregular ellipse stain",
    "inclusion": "defect shape: irregular long strip",
    "dent": "defect shape: irregular small bump",
}
AREA_BINS = (0.06, 0.12)


@dataclass(frozen=True)
class Attributes:
    """One vector per surface, all of the same length as ``names``."""

    names: list[str]
    surfaces: dict[str, list[float]]

    def matrix(self, surfaces: Sequence[str]) -> np.ndarray:
        missing = [s for s in surfaces if s not in self.surfaces]
        if missing:
            raise KeyError(f"no attribute vector for surface(s) {missing}; known: {sorted(self.surfaces)}")
        return np.asarray([self.surfaces[s] for s in surfaces], dtype=np.float32)


def markdown_table(attributes: Attributes, surfaces: Sequence[str]) -> str:
    """The attribute matrix as a Markdown table: one row per attribute, one column per surface."""
    lines = [
        "| attribute | " + " | ".join(surfaces) + " |",
        "|---" * (len(surfaces) + 1) + "|",
    ]
    matrix = attributes.matrix(surfaces)
    for k, name in enumerate(attributes.names):
        values = (f"{v:.2f}".rstrip("0").rstrip(".") for v in matrix[:, k])
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def table1_attributes(config: SynthConfig) -> Attributes:
    """The 29 Table 1 attributes of every generated surface (the mapping in the module docstring)."""
    if config.mode != "dagm":
        raise ValueError("Table 1 attributes describe one defect type per surface: use mode 'dagm'")
    names, raw = surface_attributes(config)
    index = {name: i for i, name in enumerate(names)}
    surfaces: dict[str, list[float]] = {}
    for surface, values in raw.items():

        def get(name: str, values: Sequence[float] = values) -> float:
            return float(values[index[name]])

        family = next(f for f in SURFACE_FAMILIES if get(f"texture_{f}") > 0.5)
        kind = next(t for t in DEFECT_TYPES if get(f"defect_{t}") > 0.5)
        polarity, size = get("defect_polarity"), get("defect_area")
        area = "small" if size < AREA_BINS[0] else ("medium" if size < AREA_BINS[1] else "large")
        vector = [
            (1.0 + polarity) / 2.0,
            (1.0 - polarity) / 2.0,
            get("mean_intensity"),
            1.0 - get("mean_intensity"),
            *(float(t in FAMILY_TEXTURE[family]) for t in TEXTURES),
            *(float(area == a) for a in ("large", "medium", "small")),
            *(float(DEFECT_SHAPE[kind] == s) for s in SHAPES),
            1.0 - get("defect_distribution"),
            get("defect_elongation"),
            *(float(kind == t) for t in DEFECT_TYPES),
        ]
        surfaces[surface] = [round(v, 4) for v in vector]
    return Attributes(list(TABLE1_NAMES), surfaces)


def read_attributes(path: str | Path) -> Attributes:
    """A user's attribute table: YAML or JSON with ``attribute_names`` and ``surfaces``."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read the attribute table ({error})") from None
    if not isinstance(data, Mapping) or "attribute_names" not in data or "surfaces" not in data:
        raise ValueError(f"{path}: needs `attribute_names: [...]` and `surfaces: {{name: [values]}}`")
    if not isinstance(data["attribute_names"], list) or not isinstance(data["surfaces"], Mapping):
        raise ValueError(f"{path}: `attribute_names` must be a list and `surfaces` a mapping name -> list")
    names = [str(n) for n in data["attribute_names"]]
    surfaces: dict[str, list[float]] = {}
    for surface, values in data["surfaces"].items():
        try:
            surfaces[str(surface)] = [float(x) for x in values]
        except (TypeError, ValueError):
            raise ValueError(
                f"{path}: surface {surface!r}: expected a list of numbers, got {values!r}"
            ) from None
    wrong = {k: len(v) for k, v in surfaces.items() if len(v) != len(names)}
    if wrong:
        raise ValueError(f"{path}: {len(names)} attribute names but vectors of length {wrong}")
    return Attributes(names, surfaces)


def describe(vector: Sequence[float], names: Sequence[str], top: int = 3) -> list[str]:
    """The ``top`` strongest attributes of ``vector`` in words, strongest first."""
    values = np.asarray(vector, dtype=np.float64)
    order = np.argsort(-values, kind="stable")[:top]
    return [f"{names[i]} ({values[i]:.2f})" for i in order]
