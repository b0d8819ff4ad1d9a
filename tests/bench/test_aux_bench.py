"""The aux protocols' wiring on the real datasets (skipped without them): what each split holds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from defectkit.bench.aux import SPLIT, SPLIT_SEED, load_aux_dataset
from defectkit.bench.grid import fold_splits
from defectkit.data.io import load_sample


def test_neu_det_is_one_seeded_80_20_split_with_coarse_masks_from_boxes(
    real_data: Callable[[str], Path],
) -> None:
    real_data("neu-det")
    dataset = load_aux_dataset("neu-det", "cpu", [])
    assert len(dataset.samples) == 1800 and len(dataset.info.class_names) == 6
    [(train, val, test)] = fold_splits(dataset, SPLIT, SPLIT_SEED)
    assert val is None  # validation is taken from training by the config's data.val_fraction
    assert (len(train), len(test)) == (1440, 360) and not set(train) & set(test)
    assert fold_splits(dataset, SPLIT, SPLIT_SEED)[0][2] == test  # seeded: the same test images
    for sample in dataset.samples[::100]:
        loaded = load_sample(sample)
        assert loaded.boxes is not None and len(loaded.boxes) > 0 and loaded.mask is not None
        # The coarse mask is the boxes filled: every box's centre pixel is marked.
        for x0, y0, x1, y1 in loaded.boxes:
            assert loaded.mask[int((y0 + y1) / 2), int((x0 + x1) / 2)] > 0


def test_ksdd_folds_test_every_image_once_and_never_split_a_commutator(
    real_data: Callable[[str], Path],
) -> None:
    real_data("kolektorsdd")
    dataset = load_aux_dataset("ksdd", "cpu", [])
    assert len(dataset.samples) == 399
    folds = fold_splits(dataset, SPLIT, SPLIT_SEED)
    assert len(folds) == 3
    tested = np.concatenate([test for _, _, test in folds])
    assert sorted(tested.tolist()) == list(range(399))
    for train, _, test in folds:
        commutators = [{dataset.samples[i].part for i in indices} for indices in (train, test)]
        assert not commutators[0] & commutators[1]
        assert any(dataset.samples[i].label == 1 for i in test)


def test_a_scoring_or_decoder_set_shares_the_profile_work_folder(tmp_path: Path) -> None:
    # Scoring options re-score models trained under other ones (siblings in one work folder), and
    # -V and --set of one option make one row; any other --set trains in a folder of its own.
    from defectkit.bench.aux import NAMED_BY_FIELDS
    from defectkit.bench.protocols import BenchRequest

    def folder(*overrides: str) -> Path:
        request = BenchRequest("cpu", "full", "t", tmp_path, tmp_path, overrides=list(overrides))
        return request.work_folder("aux-ksdd-cpu", exclude=NAMED_BY_FIELDS)

    assert folder("model.image_score=mask_peak", "model.segmentation_decoder=unet") == folder()
    assert folder("model.aspect_ratios=auto") != folder()
