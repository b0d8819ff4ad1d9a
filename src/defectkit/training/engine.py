"""``train``: one run from a resolved config to a saved-model directory.

Lightning does the loop (device choice, DDP, checkpoints, early stopping, progress, CSV logs).
After fitting, the decision threshold is chosen on the validation split with the named rule
(best F1, ties -> higher; placed mid-gap by default, `trainer.threshold_placement`) by scoring it
through the same path deployment uses (Inspector), and
stored in the model; a validation split without defective images is an error, never a silent 0.
The pixel threshold (heat map -> defect regions) is chosen on the same validation images by
pooled pixel F1 where their masks show defects; a model that never sees a mask gets the highest
heat value of the good validation images instead (``trainer.pixel_quantile``), 0.5 when neither.
A multi-label model of several classes gets one best-F1 threshold per class instead
(:func:`class_thresholds`), its image score rescaled to put each at 0.5.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger

from defectkit.config import ConfigError, RunConfig
from defectkit.data.io import load_sample
from defectkit.data.sample import Sample
from defectkit.evaluation.multilabel import class_truth
from defectkit.inference.inspector import Inspector, TorchBackend, inference_device
from defectkit.inference.saved_model import InputSpec, ModelCard, Thresholds, git_commit, save_model
from defectkit.metrics import best_f1_threshold, image_metrics
from defectkit.metrics.thresholds import Placement
from defectkit.registry import get_method
from defectkit.training.data import InspectionDataModule, PreparedData, prepare_data
from defectkit.training.lightning_notes import fit_interruptibly, lightning_notes_hidden

MODEL_DIR = "model"


class ThresholdError(ValueError):
    """The validation data cannot support a threshold choice."""


NO_VALIDATION_DEFECT = (
    "the validation split has no defective images, so no {what} can be chosen; "
    "raise data.val_fraction or add defective images"
)


def data_fingerprint(samples: Sequence[Sample]) -> str:
    """A short hash of which images (by name and label) a model was trained and validated on."""
    digest = hashlib.sha1()
    for sample in sorted(samples, key=lambda s: s.path):
        digest.update(f"{Path(sample.path).name}\t{sample.label}\t{sample.has_mask}\n".encode())
    return digest.hexdigest()[:16]


def score_samples(inspector: Inspector, samples: Sequence[Sample], channels: int) -> list[float]:
    return [scored.score for scored in score_with_masks(inspector, samples, channels)]


class ValidationScore(NamedTuple):
    """One validation image as the threshold choices read it."""

    score: float
    heatmap: np.ndarray | None
    truth: np.ndarray | None  # the mask pooled to the heat map's cells, when both exist
    class_scores: np.ndarray | None


def score_with_masks(inspector: Inspector, samples: Sequence[Sample], channels: int) -> list[ValidationScore]:
    """Every sample scored once: its score, heat map, pooled truth and class scores."""
    results: list[ValidationScore] = []
    for sample in samples:
        loaded = load_sample(sample, channels)
        scored = inspector.score(np.asarray(loaded.image))
        pooled = None
        if scored.heatmap is not None and loaded.mask is not None:
            truth = torch.as_tensor(np.asarray(loaded.mask) > 0).float()
            truth = truth.amax(dim=0) if truth.ndim == 3 else truth
            height, width = scored.heatmap.shape
            # A heat-map cell is defective when any pixel it covers is (as the training targets).
            pooled = F.adaptive_max_pool2d(truth[None, None], (height, width))[0, 0].numpy() > 0
        results.append(ValidationScore(scored.score, scored.heatmap, pooled, scored.class_scores))
    return results


def choose_pixel_threshold(pairs: Sequence[tuple[np.ndarray, np.ndarray]], default: float = 0.5) -> float:
    """Best pixel-level F1 over the validation heat maps (pooled), ties -> higher; ``default``
    when no validation image has a defect pixel."""
    heat = np.concatenate([h.ravel() for h, _ in pairs]) if pairs else np.zeros(0)
    truth = np.concatenate([t.ravel() for _, t in pairs]) if pairs else np.zeros(0, bool)
    if not truth.any():
        return default
    candidates = np.unique(np.quantile(heat[truth], np.linspace(0.0, 1.0, 101)))
    best, best_f1 = default, -1.0
    for threshold in candidates:
        predicted = heat >= threshold
        tp = float(np.sum(predicted & truth))
        f1 = 2 * tp / (float(predicted.sum()) + float(truth.sum())) if tp else 0.0
        if f1 >= best_f1:
            best, best_f1 = float(threshold), f1
    return best


def good_image_pixel_threshold(heatmaps: Sequence[np.ndarray], quantile: float = 1.0) -> float:
    """Pixel threshold from image labels alone: the ``quantile`` of every heat value on the good
    validation images, nudged just above it, so (at 1.0) no good validation image shows a region.
    For validation without a defect mask (below full supervision), where pixel F1 cannot be
    computed."""
    values = np.concatenate([np.asarray(h, dtype=np.float64).ravel() for h in heatmaps])
    return float(np.nextafter(np.quantile(values, quantile), np.inf))


def pixel_threshold(
    scored: Sequence[ValidationScore], labels: Sequence[int], quantile: float
) -> tuple[float, str]:
    """(threshold, rule): pixel F1 where validation masks show defects, else the good-image rule."""
    pairs = [(v.heatmap, v.truth) for v in scored if v.heatmap is not None and v.truth is not None]
    if any(truth.any() for _, truth in pairs):
        return choose_pixel_threshold(pairs), "pixel_f1"
    good = [
        v.heatmap for v, label in zip(scored, labels, strict=True) if v.heatmap is not None and label == 0
    ]
    if good:
        return good_image_pixel_threshold(good, quantile), f"good_quantile:{quantile:g}"
    return 0.5, "default"


def choose_threshold(
    labels: Sequence[int], scores: Sequence[float], placement: Placement = "midpoint"
) -> float:
    if not any(label == 1 for label in labels):
        raise ThresholdError(NO_VALIDATION_DEFECT.format(what="decision threshold"))
    return best_f1_threshold(labels, scores, placement)


def class_thresholds(
    class_names: Sequence[str],
    samples: Sequence[Sample],
    scored: Sequence[ValidationScore],
    placement: Placement = "midpoint",
) -> Thresholds:
    """One threshold per class of a multi-label model: best F1 of that class's probability on
    the validation images whose classes are known (``scored``: :func:`score_with_masks` of
    ``samples``; the decision stays 0.5 on the rescaled image score,
    :func:`~defectkit.metrics.rescaled_to_half`). A class with no validation defect cannot
    define one and keeps 0.5; the rule names it (no validation defect at all is an error).
    Thresholds are kept inside [1e-6, 1 - 1e-6]. The pixel threshold stays 0.5."""
    names = list(class_names)
    probabilities, truth = [], []
    for sample, validation in zip(samples, scored, strict=True):
        known = class_truth(sample, len(names))
        if known is None:
            continue
        assert validation.class_scores is not None, "class thresholds need a model with class scores"
        probabilities.append(validation.class_scores[: len(names)])
        truth.append(known)
    if not truth:
        raise ThresholdError(
            "no validation image has known classes, so no class threshold can be chosen; "
            "raise data.val_fraction or label the classes of the validation images"
        )
    scores, labels = np.asarray(probabilities, dtype=np.float64), np.asarray(truth)
    if not labels.any():
        raise ThresholdError(NO_VALIDATION_DEFECT.format(what="class threshold"))
    per_class, unset = {}, []
    for k, name in enumerate(names):
        if labels[:, k].any():
            chosen = best_f1_threshold(labels[:, k], scores[:, k], placement)
            # A saturated probability can put the best threshold on 0 or 1, where no rescaling
            # keeps "above threshold" and "score >= 0.5" the same call.
            per_class[name] = float(np.clip(chosen, 1e-6, 1.0 - 1e-6))
        else:
            per_class[name] = 0.5
            unset.append(name)
    rule = f"best_f1/{placement} per class"
    if unset:
        rule += f"; 0.5 for {', '.join(unset)} (no defect of the class in validation)"
    return Thresholds(decision=0.5, per_class=per_class, rule=rule)


def _trainer(
    config: RunConfig, out: Path, progress: bool, devices: Any, strategy: str | None
) -> tuple[L.Trainer, ModelCheckpoint]:
    checkpoint = ModelCheckpoint(
        dirpath=out / "checkpoints",
        save_last=True,
        monitor="val/selection" if config.trainer.restore_best else None,
        mode="max",
        save_top_k=1 if config.trainer.restore_best else 0,
        filename="best",
        # A run into a used folder replaces its checkpoints: with the counter, Lightning would write
        # best-v1.ckpt beside a stale best.ckpt of another configuration.
        enable_version_counter=False,
    )
    callbacks: list[Callback] = [checkpoint]
    if progress:
        callbacks.append(RichProgressBar())
    if config.trainer.early_stopping_patience is not None:
        callbacks.append(
            EarlyStopping(
                monitor="val/selection", mode="max", patience=config.trainer.early_stopping_patience
            )
        )
    return L.Trainer(
        max_epochs=config.trainer.epochs,
        max_steps=config.trainer.max_steps,
        accelerator=config.trainer.accelerator,
        devices=devices if devices is not None else config.trainer.devices,
        strategy=strategy or config.trainer.strategy,
        precision=config.trainer.precision,
        gradient_clip_val=config.trainer.gradient_clip_val,
        check_val_every_n_epoch=config.trainer.val_every,
        num_sanity_val_steps=0,
        logger=CSVLogger(out, name="logs", version=""),
        callbacks=callbacks,
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=10,
        default_root_dir=out,
    ), checkpoint


def logged_rows(out: str | Path, when: str, keys: Sequence[str]) -> list[dict[str, float]]:
    """The rows of a training run's CSV log (``out/logs/metrics.csv``) that logged ``when``, each
    with those of ``keys`` it holds, in the order logged; none when there is no log."""
    path = Path(out) / "logs" / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [
            {key: float(row[key]) for key in keys if row.get(key)}
            for row in csv.DictReader(handle)
            if row.get(when)
        ]


def train(
    config: RunConfig,
    out: str | Path,
    *,
    devices: Any = None,
    strategy: str | None = None,
    progress: bool = True,
    data: PreparedData | None = None,
) -> Path | None:
    """Train ``config``; returns ``out/model`` (None on non-zero DDP ranks, which save nothing)."""
    out = Path(out)
    spec = get_method(config.method)
    spec.check_config(config)
    L.seed_everything(config.seed, workers=True, verbose=False)
    if spec.own_training:
        out.mkdir(parents=True, exist_ok=True)
        return spec.train(config, out, progress=progress)
    commit = git_commit()  # the code that trains: a commit made while it runs is not it
    data = data or prepare_data(config)
    if spec.fixed_thresholds(config) is None and not any(s.label == 1 for s in data.val):
        # Known before training: say so now, not after hours of fitting.
        raise ThresholdError(NO_VALIDATION_DEFECT.format(what="decision threshold"))
    config = spec.adapt_config(config, data)
    resolved = config.model_dump(mode="json")
    try:
        model = spec.build_model(resolved)
    except TypeError as error:  # a model option of the wrong type: `--set model.widths=8`
        raise ConfigError(
            f"model: the options do not fit model {spec.model_name or spec.name!r} ({error})"
        ) from None
    recipe = spec.build_recipe(model, resolved)
    out.mkdir(parents=True, exist_ok=True)  # only once the config, the data and the model are usable
    with lightning_notes_hidden():
        trainer, checkpoint = _trainer(config, out, progress, devices, strategy)
        fit_interruptibly(trainer, recipe, datamodule=InspectionDataModule(config, data))
    if not trainer.is_global_zero:
        return None
    best = checkpoint.best_model_path if config.trainer.restore_best else ""
    if best:
        # The weights of the best validation AP; ties keep the earliest such epoch.
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict(
            {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
        )

    card = ModelCard(
        method=config.method,
        model=spec.model_name or spec.name,
        model_options=spec.model_options(resolved),
        config=resolved,
        class_names=list(data.info.class_names),
        surface_names=list(data.info.surface_names),
        input=InputSpec(
            size=config.input.size,
            channels=config.input.channels,
            mean=config.input.mean,
            std=config.input.std,
        ),
        thresholds=Thresholds(decision=0.5),
        init=config.weights or "random",
        multilabel=spec.multilabel,
    )
    device = inference_device(config.trainer.accelerator)
    model = model.to(device).eval()
    backend = TorchBackend(model, card, device)
    inspector = Inspector(card, backend, MODEL_DIR)
    thresholds = spec.fixed_thresholds(config)
    labels = [int(s.label or 0) for s in data.val]
    scored = score_with_masks(inspector, data.val, config.input.channels)
    scores = [v.score for v in scored]
    if thresholds is None and spec.multilabel and len(card.class_names) > 1:
        thresholds = class_thresholds(card.class_names, data.val, scored, config.trainer.threshold_placement)
        # The validation metrics below judge the rescaled image score, as deployment will.
        judge = Inspector(card.model_copy(update={"thresholds": thresholds}), backend, MODEL_DIR)
        scores = [v.score if v.class_scores is None else judge.image_score(v.class_scores) for v in scored]
    if thresholds is None:
        threshold = choose_threshold(labels, scores, config.trainer.threshold_placement)
        pixel, pixel_rule = pixel_threshold(scored, labels, config.trainer.pixel_quantile)
        thresholds = Thresholds(
            decision=threshold,
            pixel=pixel,
            rule=f"best_f1/{config.trainer.threshold_placement}; pixel {pixel_rule}",
        )
    card = card.model_copy(
        update={
            "thresholds": thresholds,
            "validation_metrics": image_metrics(labels, scores, thresholds.decision),
            "commit": commit,
            "data_fingerprint": data_fingerprint([*data.train, *data.val]),
        }
    )
    return save_model(out / MODEL_DIR, model, card)  # it writes CPU copies of the weights
