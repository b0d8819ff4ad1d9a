"""The saved-model directory (DESIGN.md, "Saved model"): ``model.yaml`` + ``weights.safetensors``.

Weights are safetensors, never pickle: loading a model runs no code. The model is rebuilt from
the registered model family named in ``model.yaml`` and the resolved config stored beside it.
A directory is written under a temporary name and renamed, so an interrupted save leaves
either the old model or the new one, never half of one.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from defectkit import __version__
from defectkit.config import load_yaml, validation_problems, yaml_problem
from defectkit.files import sync_directory, sync_folder, temporary_name
from defectkit.models import create_model

CARD_NAME = "model.yaml"
WEIGHTS_NAME = "weights.safetensors"
REFERENCES_NAME = "references.safetensors"  # few-shot reference database (embeddings + labels)
ONNX_NAME = "model.onnx"
LINE_FILE = "line.yaml"  # a line directory (defectkit.inference.line): router, detectors, classifier


def utc_timestamp() -> str:
    """Now, in UTC, as written in model cards, reports and results files."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SavedModelError(ValueError):
    """A model directory that cannot be loaded; the message names the file and the reason."""


class InputSpec(BaseModel):
    """What the network expects: ``size`` (height, width), channels, and normalisation."""

    model_config = ConfigDict(extra="forbid")

    size: tuple[int, int]
    channels: int = 1
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)


class Thresholds(BaseModel):
    """Chosen on validation data by ``rule``; nothing downstream re-chooses them on reported data."""

    model_config = ConfigDict(extra="forbid")

    decision: float = Field(description="image score >= decision -> verdict 'defect'")
    pixel: float = Field(0.5, description="heat-map value >= pixel -> defect pixel (regions, masks)")
    unknown: float | None = Field(None, description="out-of-distribution score >= unknown -> 'unknown'")
    box: float | None = Field(None, description="detection score >= box -> a reported region (detectors)")
    per_class: dict[str, float] | None = Field(
        None,
        description="multi-label models: class probability >= per_class[name] -> that class present; "
        "the image score is then the best probability rescaled so each class's threshold maps to "
        "decision (0.5), see metrics.rescaled_to_half; classes not named use decision",
    )
    rule: str = "best_f1"

    @field_validator("decision", "pixel", "unknown", "box")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        # "score >= NaN" is false for every score: a NaN threshold would pass every part as ok.
        if value is not None and not math.isfinite(value):
            raise ValueError(f"a threshold must be a finite number, not {value}")
        return value

    @model_validator(mode="after")
    def _per_class_judged_at_half(self) -> Thresholds:
        # The rescaled image score puts every class threshold at 0.5: any other decision
        # threshold would judge the image by a different rule than its classes.
        if self.per_class is not None and self.decision != 0.5:
            raise ValueError(f"per-class thresholds are judged at decision 0.5, not {self.decision}")
        # Inside (0, 1) the rescaled score and "probability >= threshold" always agree.
        outside = {name: t for name, t in (self.per_class or {}).items() if not 0.0 < t < 1.0}
        if outside:
            raise ValueError(f"per-class thresholds must lie strictly between 0 and 1: {outside}")
        return self


class ModelCard(BaseModel):
    """Contents of ``model.yaml``."""

    model_config = ConfigDict(extra="forbid")

    method: str
    model: str = Field(description="registered model family (defectkit.models)")
    model_options: dict[str, Any] = Field(default_factory=dict)
    defectkit_version: str = __version__
    commit: str | None = None
    created: str = Field(default_factory=lambda: utc_timestamp())
    config: dict[str, Any] = Field(default_factory=dict, description="resolved training config")
    class_names: list[str] = Field(default_factory=list)
    surface_names: list[str] = Field(default_factory=list)
    input: InputSpec
    thresholds: Thresholds
    validation_metrics: dict[str, Any] = Field(default_factory=dict)
    data_fingerprint: str | None = None
    init: str = "random"
    multilabel: bool = Field(
        False,
        description="scores are K independent class probabilities with per-class heat maps (not "
        "similarities to a reference database); defect when any class reaches its threshold "
        "(thresholds.per_class, else the decision threshold)",
    )


OUTPUT_PATHSPECS = (":(top,exclude)benchmarks", ":(top,exclude)BENCHMARKS.md")


def git_commit(root: str | Path | None = None) -> str | None:
    """Short commit of the working tree (with ``+dirty`` when it has changes), or None outside git.

    ``DEFECTKIT_COMMIT``, when set, names it instead, whatever ``root`` is: a tree copied to another
    machine may lack ``.git`` or carry a stale one. Set it on the source checkout from this function
    itself, so that ``+dirty`` survives (README.md shows how).
    """
    if named := os.environ.get("DEFECTKIT_COMMIT"):
        return named
    cwd = Path(root) if root else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        # Changed results and benchmark pages do not shape a figure: only code and configs count.
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", *OUTPUT_PATHSPECS],
            cwd=cwd,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}+dirty" if dirty else commit


# An evaluation report of the weights a retraining replaced, as save_model keeps it.
PREVIOUS_REPORT_SUFFIX = ".previous-model"


def is_report_metrics(path: Path) -> bool:
    """Whether ``path`` is a ``metrics.json`` that an ``eval`` or ``line eval`` report wrote."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    # Line reports written before they carried the version hold their confusion and image count.
    return isinstance(payload, dict) and (
        "defectkit_version" in payload or {"confusion", "n_images"} <= set(payload)
    )


def _is_report(folder: Path) -> bool:
    return folder.is_dir() and is_report_metrics(folder / "metrics.json")


def save_model(
    directory: str | Path,
    model: nn.Module,
    card: ModelCard,
    references: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``card`` and ``model``'s weights (and a reference database) to ``directory`` atomically."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    # Per process and thread: two trainings saving into one folder never mix their files.
    staging = temporary_name(directory)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(staging / WEIGHTS_NAME))
        if references is not None:
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in references.items()},
                str(staging / REFERENCES_NAME),
            )
        payload = card.model_dump(mode="json")
        (staging / CARD_NAME).write_text(yaml.safe_dump(payload, sort_keys=False))
        for tensors in (WEIGHTS_NAME, REFERENCES_NAME):
            if (staging / tensors).exists():
                # safetensors creates its files owner-only (0600) whatever the umask: a service
                # account or a colleague who can read the card could not load the weights.
                shutil.copymode(staging / CARD_NAME, staging / tensors)
        sync_folder(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not directory.exists():
        staging.rename(directory)
        sync_directory(directory.parent)
        return directory
    # The old model is moved aside, not deleted, before the new one takes its name, and comes
    # back if that fails: a crash or a full disk never leaves neither.
    retired = temporary_name(directory, "old")
    directory.rename(retired)
    try:
        staging.rename(directory)
    except OSError:
        retired.rename(directory)
        raise
    # Keep files that belong with the model but are not rewritten here; an old export is dropped
    # with the old weights it was made from. An evaluation report describes the old weights, so it
    # is kept under a name that says so (one generation: the one before it is dropped).
    for extra in retired.iterdir():
        if extra.name in (CARD_NAME, WEIGHTS_NAME, ONNX_NAME, REFERENCES_NAME):
            continue
        report = _is_report(extra)
        if report and extra.name.endswith(PREVIOUS_REPORT_SUFFIX):
            continue
        shutil.move(str(extra), directory / (extra.name + (PREVIOUS_REPORT_SUFFIX if report else "")))
    shutil.rmtree(retired)
    sync_directory(directory.parent)
    return directory


def read_card(directory: str | Path) -> ModelCard:
    path = Path(directory) / CARD_NAME
    if not path.is_file():
        raise SavedModelError(f"{path}: not found ({directory} is not a saved defectkit model)")
    try:
        return ModelCard.model_validate(load_yaml(path.read_text(encoding="utf-8")))
    except yaml.YAMLError as error:
        raise SavedModelError(f"{path}: invalid model card (not YAML: {yaml_problem(error)})") from None
    except ValidationError as error:
        raise SavedModelError(f"{path}: invalid model card ({validation_problems(error)})") from None
    except ValueError as error:  # UnicodeDecodeError among them
        raise SavedModelError(f"{path}: invalid model card ({error})") from None


GRAPH_SOURCE_KEY = "defectkit.graph_source"  # model.onnx metadata: what the graph was exported from


def graph_source(directory: str | Path) -> str:
    """SHA-256 of what ``model.onnx`` is made from: the weights, the reference database, and the
    card's model family, options and input spec (thresholds are judged outside the graph).

    ``export`` stores it in the graph's metadata (:data:`GRAPH_SOURCE_KEY`); the onnx back-end
    refuses a graph whose source differs, such as weights copied in by hand after the export, which
    would otherwise be judged by the old network under the new card.
    """
    directory = Path(directory)
    card = read_card(directory)
    spec = {
        "model": card.model,
        "model_options": card.model_options,
        "input": card.input.model_dump(mode="json"),
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode("utf-8"))
    for name in (WEIGHTS_NAME, REFERENCES_NAME):
        if (directory / name).is_file():
            digest.update(b"\0" + name.encode("utf-8") + b"\0" + (directory / name).read_bytes())
    return digest.hexdigest()


def model_identity(directory: str | Path, components: Sequence[str] = ()) -> str:
    """``NAME@DIGEST``, what inspections and service records name a model (or a line) by.

    Training writes every model to ``<out>/model``, so the folder's name alone would name them all
    alike, and a service could take another model's records for its own. The digest (12 hex
    digits) covers the folder's own files that decide a verdict (card, weights, references;
    ``line.yaml`` for a line) and the names of a line's ``components`` (its models, wherever they
    live). A retrained model, a changed threshold and an enrolment each change the name; a copy
    keeps it, and other files in the folder (notes, reports) do not count. ``model.onnx`` is made
    from the others. The weights are read once more at load (a SHA-256 of some megabytes).
    """
    directory = Path(directory).resolve()
    digest = hashlib.sha256()
    for name in (CARD_NAME, WEIGHTS_NAME, REFERENCES_NAME, LINE_FILE):
        if (directory / name).is_file():
            digest.update(name.encode("utf-8") + b"\0" + (directory / name).read_bytes())
    for component in components:
        digest.update(b"\0" + component.encode("utf-8"))
    return f"{directory.name}@{digest.hexdigest()[:12]}"


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelCard]:
    """Rebuild the network named in ``model.yaml`` and load its weights (eval mode)."""
    card = read_card(directory)
    weights = Path(directory) / WEIGHTS_NAME
    if not weights.is_file():
        raise SavedModelError(f"{weights}: not found")
    try:
        model = create_model(card.model, **card.model_options)
    except (KeyError, ValueError, TypeError) as error:  # TypeError: an option of the wrong type
        message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        raise SavedModelError(f"{Path(directory) / CARD_NAME}: {message}") from None
    try:
        model.load_state_dict(load_file(str(weights), device=str(device)))
    except (RuntimeError, OSError) as error:
        raise SavedModelError(f"{weights}: does not fit model {card.model!r} ({error})") from None
    except SafetensorError as error:  # a truncated or overwritten file
        raise SavedModelError(f"{weights}: not a readable weights file ({error})") from None
    references = Path(directory) / REFERENCES_NAME
    if hasattr(model, "set_references"):
        if not references.is_file():
            raise SavedModelError(
                f"{references}: not found (model {card.model!r} needs its reference database)"
            )
        try:
            stored = load_file(str(references))
            cast(Any, model).set_references(stored["embeddings"], stored["labels"])
        except (SafetensorError, KeyError, RuntimeError, ValueError) as error:
            raise SavedModelError(f"{references}: not a readable reference database ({error})") from None
    return model.to(device).eval(), card
