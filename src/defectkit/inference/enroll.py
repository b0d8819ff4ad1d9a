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

Enrolments into one model take the folder's lock (:func:`defectkit.files.folder_lock`), so two at
once run one after the other instead of losing one's class (the lock covers enrolments only, not
an ``export`` or a retraining run at the same time). A new class name is stripped of outer
spaces, and one that differs from a known class only in letter case or spacing is refused:
a typo would otherwise become a class of its own that no command removes. An image whose
embedding equals a reference's (the same pixels, to float rounding) is skipped when it is already
a reference of the class, and refused when it is one of another class, since one image cannot
stand for two classes; repeats among the new images are kept once. Class scores are mean
similarities to a class's references, so a repeated reference would weigh twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save

from defectkit.data.io import read_image
from defectkit.files import folder_lock, write_atomic
from defectkit.inference.preprocess import Preprocess, to_network_layout
from defectkit.inference.saved_model import (
    CARD_NAME,
    ONNX_NAME,
    REFERENCES_NAME,
    SavedModelError,
    load_model,
    read_card,
)

# Cosine distance below which two embeddings are one image's: identical pixels give identical
# embeddings on one machine, and another machine's arithmetic moves them by about 1e-7.
SAME_IMAGE_DISTANCE = 1e-5


class ClassNameClash(ValueError):
    """A new class name that differs from a known class only in letter case or spacing."""


class ReferenceOfAnotherClass(ValueError):
    """An image that is already a reference of another class."""


@dataclass(frozen=True)
class EnrollReport:
    class_name: str
    new_class: bool
    added: int
    references_of_class: int
    classes: list[str]
    onnx_updated: bool
    already_enrolled: int = 0  # images skipped: the same image is a reference of the class already
    repeated: int = 0  # images skipped: the same image given twice in this enrolment


def class_name_clash(name: str, known: Sequence[str]) -> str | None:
    """The known class that ``name`` differs from only in letter case or spacing, if any."""

    def key(text: str) -> str:
        return " ".join(text.split()).casefold()

    return next((k for k in known if k != name and key(k) == key(name)), None)


def enroll(model_dir: str | Path, class_name: str, images: Sequence[str | Path]) -> EnrollReport:
    """Append the embeddings of ``images`` as references of ``class_name`` (created if new)."""
    model_dir = Path(model_dir)
    if not class_name.strip():
        raise ValueError("the class name is empty")
    if not images:
        raise ValueError("no images to enroll")
    read_card(model_dir)  # a folder that is no model is named as such, before any lock file is made
    with folder_lock(model_dir):
        return _enroll(model_dir, class_name, images)


def _enroll(model_dir: Path, class_name: str, images: Sequence[str | Path]) -> EnrollReport:
    model, card = load_model(model_dir)
    if not hasattr(model, "set_references"):
        raise SavedModelError(
            f"{model_dir}: model {card.model!r} has no reference database; enroll works with "
            "models that classify by references (scl_arcface)"
        )
    names = list(card.class_names)
    if class_name not in names:
        # A known name as given first (a class saved with spaces keeps them), else stripped.
        class_name = class_name.strip()
    clash = None if class_name in names else class_name_clash(class_name, names)
    if clash is not None:
        raise ClassNameClash(
            f"class {class_name!r} differs from the model's class {clash!r} only in letter case or "
            f"spacing; enroll as {clash!r}, or choose a name that differs"
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
    new_class = class_name not in names
    if new_class:
        names.append(class_name)
    index = names.index(class_name)
    kept, already = _new_references(embeddings, images, classifier, names, index)
    repeated = len(images) - len(kept) - already
    embeddings = embeddings[kept]
    if not len(embeddings):  # every image is a reference of the class already: nothing to write
        count = int((classifier.reference_labels == index).sum())
        return EnrollReport(class_name, False, 0, count, list(card.class_names), False, already, repeated)
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
        class_name,
        new_class,
        len(embeddings),
        int((labels == index).sum()),
        names,
        onnx_updated,
        already,
        repeated,
    )


def _new_references(
    embeddings: torch.Tensor, images: Sequence[str | Path], classifier: Any, names: list[str], index: int
) -> tuple[list[int], int]:
    """Positions of ``embeddings`` to append, and how many are skipped as references of class
    ``index`` already. Raises ``ValueError`` naming an image that is a reference of another class."""
    unit = F.normalize(embeddings.float(), dim=1)
    known = classifier.references  # unit rows (set_references normalises them)
    kept: list[int] = []
    already = 0
    for position, row in enumerate(unit):
        if len(known):
            similarity = known @ row
            nearest = int(similarity.argmax())
            if 1 - float(similarity[nearest]) < SAME_IMAGE_DISTANCE:
                owner = int(classifier.reference_labels[nearest])
                if owner != index:
                    raise ReferenceOfAnotherClass(
                        f"{images[position]}: this image is already a reference of class "
                        f"{names[owner]!r}; one image cannot stand for two classes"
                    )
                already += 1
                continue
        if any(1 - float(unit[k] @ row) < SAME_IMAGE_DISTANCE for k in kept):
            continue  # the same image given twice in this enrolment (a copy under another name)
        kept.append(position)
    return kept, already
