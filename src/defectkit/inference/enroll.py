"""Enrolment: add a defect class (or more references to one) to a model's reference database.

For models with a reference database (``scl_arcface``): the images are embedded by the saved
network through the same pre-processing as inspection, and appended to
``references.safetensors``; a new class name is appended to the model card. No retraining:
the next ``predict`` uses the class; a running service loads its model once, so it knows the class
after a restart. The card is written before the references, so
an interruption leaves a loadable model (a class with no references is never predicted). An
existing ``model.onnx`` carries the old database as constants: it is removed before anything is
written and exported again at the end, so no graph that disagrees with the card is ever left
behind (a failed export leaves the model without one: the torch backend serves it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import yaml
from safetensors.torch import save

from defectkit.data.io import read_image
from defectkit.files import write_atomic
from defectkit.inference.preprocess import Preprocess, to_network_layout
from defectkit.inference.saved_model import (
    CARD_NAME,
    ONNX_NAME,
    REFERENCES_NAME,
    SavedModelError,
    load_model,
)


@dataclass(frozen=True)
class EnrollReport:
    class_name: str
    new_class: bool
    added: int
    references_of_class: int
    classes: list[str]
    onnx_updated: bool


def enroll(model_dir: str | Path, class_name: str, images: Sequence[str | Path]) -> EnrollReport:
    """Append the embeddings of ``images`` as references of ``class_name`` (created if new)."""
    model_dir = Path(model_dir)
    if not class_name.strip():
        raise ValueError("the class name is empty")
    if not images:
        raise ValueError("no images to enroll")
    model, card = load_model(model_dir)
    if not hasattr(model, "set_references"):
        raise SavedModelError(
            f"{model_dir}: model {card.model!r} has no reference database; enroll works with "
            "models that classify by references (scl_arcface)"
        )
    classifier = cast(Any, model)
    preprocess = Preprocess(card.input)
    with torch.inference_mode():
        embeddings = torch.cat(
            [
                classifier.network.embed(
                    preprocess(torch.from_numpy(to_network_layout(read_image(path), card.input.channels)))
                )
                for path in images
            ]
        )
    names = list(card.class_names)
    new_class = class_name not in names
    if new_class:
        names.append(class_name)
    index = names.index(class_name)
    references = torch.cat([classifier.references, embeddings])
    labels = torch.cat([classifier.reference_labels, torch.full((len(embeddings),), index, dtype=torch.long)])
    updated = card.model_copy(
        update={"class_names": names, "model_options": {**card.model_options, "n_classes": len(names)}}
    )
    exported = model_dir / ONNX_NAME
    onnx_updated = exported.is_file()
    exported.unlink(missing_ok=True)
    try:
        write_atomic(model_dir / CARD_NAME, yaml.safe_dump(updated.model_dump(mode="json"), sort_keys=False))
        write_atomic(
            model_dir / REFERENCES_NAME,
            save({"embeddings": references.contiguous(), "labels": labels.contiguous()}),
        )
    except OSError as error:
        if not onnx_updated:
            raise
        removed = (
            f"{error.strerror or error}; {ONNX_NAME} was removed first (`defectkit export` makes it again)"
        )
        raise OSError(error.errno, removed, error.filename) from error
    if onnx_updated:
        from defectkit.inference.export import ExportError, export_onnx

        try:
            export_onnx(model_dir)
        except ExportError as error:
            raise ExportError(
                f"{error}. The images were enrolled; the old {ONNX_NAME}, which did not know them, was "
                "removed, so the torch backend serves the model until `defectkit export` succeeds"
            ) from error
    return EnrollReport(
        class_name, new_class, len(embeddings), int((labels == index).sum()), names, onnx_updated
    )
