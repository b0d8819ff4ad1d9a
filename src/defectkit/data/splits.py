"""Deterministic splits that never leak: grouped by physical part and by image content.

Two samples belong to one group when they share ``meta["part"]`` or their pixels are byte-identical
(same content hash), transitively. Every split below moves whole groups, so the images of one
part, and duplicated images (KolektorSDD has 8 across two parts, NEU has a pair), always land on
the same side. Stratification uses each group's image label (1 if any image in it is defective).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from defectkit.data.masks import array_hash, content_hash
from defectkit.data.sample import Sample


def sample_hash(sample: Sample) -> str:
    """Content hash of a sample: ``meta["sha1"]`` if set, else of the file, else of the pixels."""
    if "sha1" in sample.meta:
        return str(sample.meta["sha1"])
    if sample.image is None or Path(sample.path).is_file():
        digest = content_hash(sample.path)
    else:
        digest = array_hash(np.asarray(sample.image))
    sample.meta["sha1"] = digest
    return digest


def group_ids(samples: Sequence[Sample], by_content: bool = True) -> np.ndarray:
    """One integer group per sample: connected components of "same part" and "same content"."""
    parent = list(range(len(samples)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_of: dict[tuple[str, str], int] = {}
    for index, sample in enumerate(samples):
        keys: list[tuple[str, str]] = [("part", sample.part)] if sample.part is not None else []
        if by_content:
            keys.append(("sha1", sample_hash(sample)))
        for key in keys:
            if key in first_of:
                parent[find(index)] = find(first_of[key])
            else:
                first_of[key] = index
    roots = [find(i) for i in range(len(samples))]
    _, ids = np.unique(roots, return_inverse=True)
    return ids.astype(np.int64)


def _group_labels(samples: Sequence[Sample], groups: np.ndarray) -> dict[int, int]:
    labels: dict[int, int] = defaultdict(lambda: -1)
    for sample, group in zip(samples, groups, strict=True):
        value = -1 if sample.label is None else int(sample.label)
        labels[int(group)] = max(labels[int(group)], value)
    return labels


def split_fractions(
    samples: Sequence[Sample],
    fractions: Sequence[float],
    seed: int = 0,
    stratify: bool = True,
) -> list[list[int]]:
    """Indices of ``len(fractions)`` disjoint subsets (e.g. ``(0.7, 0.15, 0.15)``), whole groups each.

    Within each stratum (group label), groups are shuffled with ``seed`` and dealt out until each
    subset holds its fraction of that stratum's images, so small classes keep their proportion.
    """
    if not fractions or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be non-negative and sum to 1, got {list(fractions)}")
    groups = group_ids(samples)
    labels = _group_labels(samples, groups) if stratify else defaultdict(int)
    members: dict[int, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[int(group)].append(index)
    strata: dict[int, list[int]] = defaultdict(list)
    for group in sorted(members):
        strata[labels[group] if stratify else 0].append(group)

    rng = np.random.default_rng(seed)
    subsets: list[list[int]] = [[] for _ in fractions]
    bounds = np.cumsum(fractions)
    for stratum in sorted(strata):
        order = [strata[stratum][i] for i in rng.permutation(len(strata[stratum]))]
        total = sum(len(members[g]) for g in order)
        placed = 0
        for group in order:
            # A group goes to the subset its middle image falls in, so big groups split fairly.
            position = (placed + len(members[group]) / 2) / total
            target = min(int(np.searchsorted(bounds, position, side="right")), len(fractions) - 1)
            subsets[target].extend(members[group])
            placed += len(members[group])
    return [sorted(s) for s in subsets]


def kfold(
    samples: Sequence[Sample], k: int, seed: int = 0, stratify: bool = True
) -> list[tuple[list[int], list[int]]]:
    """``k`` (train, test) index pairs; every group is tested exactly once, labels stratified."""
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    groups = group_ids(samples)
    if len(np.unique(groups)) < k:
        raise ValueError(f"{len(np.unique(groups))} groups (parts) cannot fill {k} folds")
    labels = np.asarray([-1 if s.label is None else int(s.label) for s in samples]) if stratify else None
    y = labels if labels is not None else np.zeros(len(samples), dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    index = np.arange(len(samples))
    return [
        (sorted(train.tolist()), sorted(test.tolist())) for train, test in splitter.split(index, y, groups)
    ]


def sample_class(sample: Sample) -> int | None:
    """The single class of a sample for few-shot draws: its defect class, or 0 for a good image."""
    if sample.classes:
        return sample.classes[0] if len(sample.classes) == 1 else None
    if sample.label == 0:
        return 0
    return None


def few_shot(
    samples: Sequence[Sample], n_per_class: int, seed: int = 0, classes: Sequence[int] | None = None
) -> tuple[list[int], list[int]]:
    """A support set of ``n_per_class`` images per class, drawn with ``seed``, and the rest.

    Classes come from :func:`sample_class` (multi-label images are left out of the support set).
    Whole groups are drawn (a duplicate of a support image never lands in the query set); a class
    with fewer than ``n_per_class`` images raises ``ValueError`` naming the class.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    groups = group_ids(samples)
    members: dict[int, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[int(group)].append(index)
    by_class: dict[int, list[int]] = defaultdict(list)
    for group in sorted(members):
        owner = sample_class(samples[members[group][0]])
        if owner is not None:
            by_class[owner].append(group)
    wanted = sorted(by_class) if classes is None else list(classes)
    rng = np.random.default_rng(seed)
    support: list[int] = []
    for class_id in wanted:
        pool = by_class.get(class_id, [])
        taken: list[int] = []
        for position in rng.permutation(len(pool)):
            group = members[pool[position]]
            if len(taken) + len(group) <= n_per_class:
                taken.extend(group)
            if len(taken) == n_per_class:
                break
        if len(taken) < n_per_class:
            raise ValueError(
                f"class {class_id}: only {len(taken)} images can be drawn, {n_per_class} requested"
            )
        support.extend(taken)
    chosen = set(support)
    return sorted(support), [i for i in range(len(samples)) if i not in chosen]


def stratified_split(
    labels: Sequence[int], fraction: float, seed: int, groups: Sequence[int] | np.ndarray | None = None
) -> tuple[list[int], list[int]]:
    """(train, validation) indices with about ``fraction`` of each class's images held out (at
    least one group of a class with two or more).

    Stratified by an arbitrary class (a defect type, a surface) rather than the OK/NG label of
    :func:`split_fractions`. ``groups`` (:func:`group_ids`: parts and duplicate images) moves whole
    groups, each with the class of its first image, so no part or duplicated image straddles the
    split; without it every image is a group of its own, and the split is the same as with
    singleton groups.
    """
    group_of = np.arange(len(labels)) if groups is None else np.asarray(groups)
    if len(group_of) != len(labels):
        raise ValueError(f"{len(labels)} labels but {len(group_of)} groups")
    members_of: dict[int, list[int]] = defaultdict(list)
    for index, group in enumerate(group_of.tolist()):
        members_of[group].append(index)
    rng = np.random.default_rng(seed)
    train: list[int] = []
    validation: list[int] = []
    for label in sorted(set(labels)):
        firsts = [i for i, y in enumerate(labels) if y == label and members_of[int(group_of[i])][0] == i]
        images = sum(len(members_of[int(group_of[i])]) for i in firsts)
        target = max(1, round(fraction * images)) if len(firsts) > 1 else 0
        held = 0
        for first in rng.permutation(firsts).tolist():
            members = members_of[int(group_of[first])]
            if held < target:
                validation.extend(members)
                held += len(members)
            else:
                train.extend(members)
    return sorted(train), sorted(validation)
