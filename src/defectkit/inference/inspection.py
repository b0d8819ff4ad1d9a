"""The result of inspecting one image (DESIGN.md, "Inspection"): a pydantic model, JSON out."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Verdict = Literal["ok", "defect", "unknown"]


class Region(BaseModel):
    """One connected defect region of the thresholded heat map, in original-image pixels."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_by_name=True)

    box: tuple[float, float, float, float] = Field(description="x0, y0, x1, y1 (pixel edges)")
    score: float = Field(description="highest heat-map value inside the region")
    class_: str | None = Field(None, alias="class", serialization_alias="class")
    area_px: int


class Inspection(BaseModel):
    """Verdict for one image. ``unknown`` goes to a person; it is never silently called ok."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    image: str
    model: str
    verdict: Verdict
    score: float = Field(description="probability-like defect score in [0, 1]")
    threshold: float = Field(description="the decision threshold the verdict was judged by")
    defect_class: str | None = None
    class_scores: dict[str, float] = Field(default_factory=dict)
    class_thresholds: dict[str, float] | None = Field(
        None,
        description="multi-label models with a threshold per class: class_scores[name] >= "
        "class_thresholds[name] -> that class present (score is then the rescaled best class score)",
    )
    surface: str | None = None
    surface_score: float | None = None
    regions: list[Region] = Field(default_factory=list)
    unseen_score: float | None = Field(
        None, description="surface router: how unlike every trained surface the image is"
    )
    unseen_threshold: float | None = Field(
        None, description="surface router: unseen_score >= this -> verdict 'unknown'"
    )
    attributes: list[str] = Field(
        default_factory=list,
        description="for an unknown: its strongest attributes in words, for the operator (surface router)",
    )
    attribute_vector: list[float] | None = Field(
        None,
        description="for an unknown: the router's reconstruction of its attribute vector, one value per "
        "attribute of the router's table (surface router)",
    )
    heatmap: str | None = None
    mask: str | None = None
    latency_ms: float

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)
