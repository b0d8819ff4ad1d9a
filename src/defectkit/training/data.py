"""From a run config to training and validation samples, datasets and loaders.

Supervision levels are applied here, once, by removing what the model may not see: ``weak``
drops the masks and boxes of defective images (good images keep their known-empty ones),
``mixed`` keeps them for ``num_segmented`` defective training images drawn with the split seed,
``full`` keeps them all. Below ``full`` the validation positives lose theirs too: ``weak`` users
have only image labels, and ``mixed`` users spend their few masks on training. So the pixel
threshold then comes from the good validation images
(:func:`defectkit.training.engine.pixel_threshold`), not from pixel F1 on masks, and a recipe's
validation Dice (aux_net's, part of its model selection) sees only the good images' empty masks.
A method that learns from image labels alone (``MethodSpec.uses_masks`` false) gets no mask or
box at all, in training or validation, so no localisation label can reach it.
``train_positives`` keeps a seeded subset of the training positives (the paper-004 "number of
defect samples" studies).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset

from defectkit.config import RunConfig
from defectkit.data.formats import read_dataset
from defectkit.data.io import load_sample, with_box_masks
from defectkit.data.sample import MASK_KEYS, Batch, DatasetInfo, Sample, collate
from defectkit.data.splits import split_fractions
from defectkit.data.synthetic import SynthConfig, synthetic_dataset
from defectkit.data.transforms import AugmentConfig, SampleTransform, build_transform
from defectkit.registry import get_method


def image_label_only(sample: Sample) -> Sample:
    """``sample`` without its mask or boxes (known or still to be read): its image label alone."""
    meta = {k: v for k, v in sample.meta.items() if k not in MASK_KEYS}
    return sample.replace(mask=None, boxes=None, meta=meta)


def _unlocalised(sample: Sample) -> Sample:
    return image_label_only(sample) if sample.label == 1 else sample


def apply_supervision(samples: Sequence[Sample], config: RunConfig) -> list[Sample]:
    """Hide the masks and boxes the chosen supervision level does not allow (positives only)."""
    level = config.data.supervision
    if level == "full":
        return list(samples)
    positives = [i for i, s in enumerate(samples) if s.label == 1]
    keep: set[int] = set()
    if level == "mixed":
        count = min(int(config.data.num_segmented or 0), len(positives))
        rng = np.random.default_rng(config.data.split_seed)
        keep = {positives[i] for i in rng.choice(len(positives), size=count, replace=False)}
    return [_unlocalised(s) if i not in keep else s for i, s in enumerate(samples)]


def of_surfaces(samples: Sequence[Sample], config: RunConfig) -> list[Sample]:
    """The samples of ``data.surfaces`` (all when it is None); a listed surface without images is
    an error, as it would be a line stage that silently trained on nothing."""
    wanted = config.data.surfaces
    if wanted is None:
        return list(samples)
    kept = [s for s in samples if s.surface in wanted]
    empty = sorted(set(wanted) - {s.surface for s in kept})
    if empty:
        found = sorted({str(s.surface) for s in samples if s.surface})
        raise ValueError(f"data.surfaces: no images of {empty}; the data has {found}")
    return kept


@dataclass
class PreparedData:
    info: DatasetInfo
    train: list[Sample]
    val: list[Sample]


def load_samples(config: RunConfig) -> tuple[list[Sample], DatasetInfo]:
    """All samples of the configured dataset (read, or generated in memory)."""
    if config.data.synthetic is not None:
        dataset = synthetic_dataset(SynthConfig(**config.data.synthetic))
    else:
        root = config.data.resolved_root()
        assert root is not None
        dataset = read_dataset(root, config.data.format)
    usable = [s for s in dataset.samples if s.label is not None]
    if config.data.masks_from_boxes:
        usable = with_box_masks(usable)
    return usable, dataset.info


def prepare_data(config: RunConfig, samples: Sequence[Sample] | None = None) -> PreparedData:
    """Training and validation samples: the train split (if the data has one), then a grouped,
    stratified hold-out of ``val_fraction`` for validation and threshold choice; both with only
    the labels the supervision level allows (the module docstring)."""
    if samples is None:
        samples, info = load_samples(config)
    else:
        info = DatasetInfo(name="samples", format="memory", root="")
    samples = of_surfaces(samples, config)
    if config.data.surface is not None:
        samples = [s for s in samples if s.surface == config.data.surface]
        if not samples:
            raise ValueError(f"no images of surface {config.data.surface!r} in the training data")
    wanted = config.data.train_split
    if wanted is not None and any("split" in s.meta for s in samples):
        splits = sorted({str(s.meta["split"]) for s in samples if "split" in s.meta})
        samples = [s for s in samples if s.meta.get("split") == wanted]
        if not samples:
            raise ValueError(f"data.train_split={wanted!r}: no image is in it; the data's splits: {splits}")
    train_idx, val_idx = split_fractions(
        samples, (1.0 - config.data.val_fraction, config.data.val_fraction), seed=config.data.split_seed
    )
    train = limit_positives(limit_fraction([samples[i] for i in train_idx], config), config)
    val = [samples[i] for i in val_idx]
    if not get_method(config.method).uses_masks:
        return PreparedData(info, [image_label_only(s) for s in train], [image_label_only(s) for s in val])
    held_out = val if config.data.supervision == "full" else [_unlocalised(s) for s in val]
    return PreparedData(info, apply_supervision(train, config), held_out)


def limit_fraction(samples: Sequence[Sample], config: RunConfig) -> list[Sample]:
    """The ``data.train_fraction`` share of ``samples``: grouped by part and stratified by class,
    drawn with ``split_seed`` (so 10 % is a subset of the same seed's draw only by chance)."""
    fraction = config.data.train_fraction
    if fraction >= 1.0 or len(samples) < 2:
        return list(samples)
    kept, _ = split_fractions(samples, (fraction, 1.0 - fraction), seed=config.data.split_seed)
    return [samples[i] for i in sorted(kept)]


def limit_positives(samples: Sequence[Sample], config: RunConfig) -> list[Sample]:
    """At most ``data.train_positives`` defective images (seeded draw); every other image kept."""
    count = config.data.train_positives
    positives = [i for i, s in enumerate(samples) if s.label == 1]
    if count is None or count >= len(positives):
        return list(samples)
    rng = np.random.default_rng(config.data.split_seed)
    dropped = set(np.asarray(positives)[rng.permutation(len(positives))[count:]].tolist())
    return [s for i, s in enumerate(samples) if i not in dropped]


class SampleDataset(Dataset[Sample]):
    """Loads and transforms samples on access; images are read once and kept when ``cache``."""

    def __init__(
        self, samples: Sequence[Sample], transform: SampleTransform, channels: int, cache: bool
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.channels = channels
        self.cache: dict[int, Sample] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        if self.cache is not None and index in self.cache:
            loaded = self.cache[index]
        else:
            loaded = load_sample(self.samples[index], self.channels)
            if self.cache is not None:
                self.cache[index] = loaded
        return self.transform(loaded)


def augment_config(config: RunConfig, train: bool) -> AugmentConfig:
    """The input geometry always comes from ``input``; random augmentation only for training."""
    fields: dict[str, Any] = (
        dict(config.augment) if train else {"antialias": config.augment.get("antialias", True)}
    )
    fields.update(
        size=config.input.size, channels=config.input.channels, mean=config.input.mean, std=config.input.std
    )
    if len(config.input.mean) == 1 and config.input.channels > 1:
        fields.update(
            mean=config.input.mean * config.input.channels, std=config.input.std * config.input.channels
        )
    return AugmentConfig(**fields)


class InspectionDataModule(L.LightningDataModule):
    def __init__(self, config: RunConfig, data: PreparedData, cache: bool = True) -> None:
        super().__init__()
        self.config = config
        self.data = data
        channels = config.input.channels
        self.train_set = SampleDataset(
            data.train, build_transform(augment_config(config, True), True), channels, cache
        )
        self.val_set = SampleDataset(
            data.val, build_transform(augment_config(config, False), False), channels, cache
        )
        self.collate = functools.partial(collate, num_classes=len(data.info.class_names))

    def train_dataloader(self) -> DataLoader[Batch]:
        labels = [s.label for s in self.data.train]
        sampler = get_method(self.config.method).train_sampler(labels, self.config)
        return DataLoader(
            self.train_set,  # type: ignore[arg-type]
            batch_size=self.config.trainer.batch_size,
            sampler=sampler,
            shuffle=sampler is None,
            collate_fn=self.collate,
            num_workers=self.config.trainer.num_workers,
        )

    def val_dataloader(self) -> DataLoader[Batch]:
        return DataLoader(
            self.val_set,  # type: ignore[arg-type]
            batch_size=self.config.trainer.batch_size,
            shuffle=False,
            collate_fn=self.collate,
            num_workers=self.config.trainer.num_workers,
        )
