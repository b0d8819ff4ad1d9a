from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from defectkit.data.sample import Sample
from defectkit.data.samplers import AlternatingSampler, class_balanced_sampler
from defectkit.data.splits import few_shot, group_ids, kfold, split_fractions, stratified_split


def _samples(n_parts: int = 30, per_part: int = 4) -> list[Sample]:
    samples = []
    for part in range(n_parts):
        for index in range(per_part):
            label = int(part % 5 == 0 and index == 0)
            samples.append(
                Sample(
                    f"p{part}_{index}",
                    label=label,
                    classes=[1 + part % 3] if label else [],
                    meta={"part": f"part{part}", "sha1": f"h{part}_{index}"},
                )
            )
    # Two byte-identical images in different parts: parts 1 and 2 must travel together.
    samples[4].meta["sha1"] = samples[8].meta["sha1"] = "same"
    return samples


def _side(indices: list[int], samples: list[Sample]) -> set[str]:
    return {samples[i].part or "" for i in indices}


def test_groups_join_parts_and_duplicates() -> None:
    samples = _samples()
    groups = group_ids(samples)
    assert groups[0] == groups[3]  # same part
    assert groups[4] == groups[8]  # duplicate content across parts 1 and 2
    assert groups[4] == groups[11]  # ... which pulls the whole of part 2 in
    assert len(np.unique(groups)) == 29


def test_split_fractions_is_deterministic_disjoint_and_grouped() -> None:
    samples = _samples()
    first = split_fractions(samples, (0.6, 0.2, 0.2), seed=4)
    assert first == split_fractions(samples, (0.6, 0.2, 0.2), seed=4)
    assert first != split_fractions(samples, (0.6, 0.2, 0.2), seed=5)
    assert sorted(i for s in first for i in s) == list(range(len(samples)))
    parts = [_side(s, samples) for s in first]
    assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
    assert any(4 in s and 8 in s for s in first)
    assert all(any(samples[i].label == 1 for i in s) for s in first)  # stratified: positives everywhere
    with pytest.raises(ValueError, match="sum to 1"):
        split_fractions(samples, (0.5, 0.2))


def test_stratified_split_keeps_parts_and_duplicates_whole() -> None:
    samples = _samples()
    surfaces = [int(s.part[4:]) % 3 for s in samples if s.part]  # three "surfaces", one per part
    groups = group_ids(samples)
    for seed in range(5):
        train, validation = stratified_split(surfaces, 0.25, seed, groups)
        assert sorted(train + validation) == list(range(len(samples)))
        assert not _side(train, samples) & _side(validation, samples)  # no part on both sides
        held = [sum(surfaces[i] == k for i in validation) for k in range(3)]
        # About a quarter of each surface's 40 images; the duplicate ties a part of surface 2 to one
        # of surface 1, and that group of 8 goes where its first image's surface sends it.
        assert all(8 <= n <= 16 for n in held) and 32 <= sum(held) <= 40
    # Without groups every image is its own group: one class's images shuffled and cut.
    train, validation = stratified_split([0] * 8 + [1] * 4, 0.25, 3)
    assert (train, validation) == ([0, 1, 2, 3, 4, 5, 8, 10, 11], [6, 7, 9])  # as before groups existed
    assert stratified_split([0] * 8 + [1] * 4, 0.25, 3, np.arange(12)) == (train, validation)


def test_kfold_tests_every_group_once() -> None:
    samples = _samples()
    folds = kfold(samples, 3, seed=0)
    tested = sorted(i for _, test in folds for i in test)
    assert tested == list(range(len(samples)))
    for train, test in folds:
        assert not _side(train, samples) & _side(test, samples)
        assert any(samples[i].label == 1 for i in test)
    assert folds == kfold(samples, 3, seed=0)
    with pytest.raises(ValueError, match="folds"):
        kfold(samples[:8], 3)


def test_few_shot_draws_n_per_class_with_a_seed() -> None:
    samples = [
        Sample(f"c{c}_{i}", label=1, classes=[c], meta={"sha1": f"{c}-{i}"})
        for c in (1, 2, 3)
        for i in range(20)
    ]
    samples.append(Sample("dup", label=1, classes=[1], meta={"sha1": "1-0"}))  # duplicate of c1_0
    support, rest = few_shot(samples, 5, seed=1)
    assert len(support) == 15 and len(rest) == len(samples) - 15
    assert sorted(samples[i].classes[0] for i in support) == [1] * 5 + [2] * 5 + [3] * 5  # type: ignore[index]
    assert few_shot(samples, 5, seed=1) == (support, rest)
    assert few_shot(samples, 5, seed=2)[0] != support
    # c1_0 and its duplicate are on one side.
    assert (0 in support) == (len(samples) - 1 in support)
    with pytest.raises(ValueError, match=r"only 2[01] images can be drawn, 25 requested"):
        few_shot(samples, 25, seed=0)


def test_class_balanced_sampler_evens_out_classes() -> None:
    targets = [0] * 90 + [1] * 10
    sampler = class_balanced_sampler(targets, num_samples=4000, seed=0)
    drawn = np.asarray(targets)[list(sampler)]
    assert 0.45 < drawn.mean() < 0.55
    assert list(class_balanced_sampler(targets, seed=3)) == list(class_balanced_sampler(targets, seed=3))
    unknown: list[int | None] = [None] * 50 + [0] * 45 + [1] * 5
    assert all(unknown[i] is not None for i in class_balanced_sampler(unknown, seed=0))
    with pytest.raises(ValueError, match="two classes"):
        class_balanced_sampler([None, 1, 1])


def test_alternating_sampler() -> None:
    labels = [1, 0, 0, 0, None, 0, 1, 0]
    sampler = AlternatingSampler(labels, seed=0)
    order = list(sampler)
    assert len(order) == len(sampler) == 10
    assert [labels[i] for i in order] == [1, 0] * 5
    assert 4 not in order
    assert {order[i] for i in range(1, 10, 2)} == {1, 2, 3, 5, 7}  # each negative once per epoch
    sampler.set_epoch(1)
    assert list(sampler) != order
    with pytest.raises(ValueError, match="both classes"):
        AlternatingSampler([0, 0, None])


def test_frequency_sampler_balances_and_visits_rare_negatives_first() -> None:
    from defectkit.data.samplers import FrequencyNegativeSampler

    labels = [1, 1, 0, 0, 0, 0, 0, 0, None]
    sampler = FrequencyNegativeSampler(labels, seed=0)
    seen: list[int] = []
    for _ in range(3):
        epoch = list(sampler)
        assert len(epoch) == len(sampler) == 4
        assert sorted(labels[i] for i in epoch) == [0, 0, 1, 1]  # type: ignore[type-var]
        seen += [i for i in epoch if labels[i] == 0]
    assert sorted(seen) == [2, 3, 4, 5, 6, 7]  # three epochs of two negatives: each negative once
    assert 8 not in seen


def test_without_frequency_the_segdec_epoch_stays_balanced_with_random_negatives() -> None:
    """Frequency sampling off (the reference's ablation) changes which negatives an epoch draws, not
    how many: still every positive and as many negatives, not a shuffle of every image."""
    from defectkit.config import load_config
    from defectkit.registry import get_method

    labels: list[int | None] = [1] * 5 + [0] * 30
    config = load_config(
        Path(__file__).parents[2] / "configs/segdec/kolektorsdd.yaml",
        "cpu",
        ["method_options.frequency_sampling=false"],
    )
    sampler = get_method("segdec").train_sampler(labels, config)
    assert sampler is not None
    negatives: list[int] = []
    for _ in range(6):
        epoch = list(sampler)
        assert len(epoch) == 10 and sum(labels[i] == 1 for i in epoch) == 5
        negatives += [i for i in epoch if labels[i] == 0]
    # Six draws of five from thirty at random: some negative repeats (frequency sampling would not).
    assert len(set(negatives)) < len(negatives)
