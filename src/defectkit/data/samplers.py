"""Training samplers: class-balanced draws and strict positive/negative alternation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler, WeightedRandomSampler


def class_balanced_sampler(
    targets: Sequence[int | None], num_samples: int | None = None, seed: int = 0
) -> WeightedRandomSampler:
    """Draw with replacement so every class is equally likely (weights 1 / class count).

    ``targets`` are class ids (or image labels); one that is ``None`` is never drawn (as in the
    samplers below), and fewer than two known classes is an error: there is nothing to balance.
    ``num_samples`` defaults to the dataset size. The generator is made here, once: successive
    passes draw afresh, and the same ``seed`` repeats a run. It is not checkpointed, so a run
    resumed mid-way would draw differently from one never stopped.
    """
    known = [i for i, t in enumerate(targets) if t is not None]
    classes, inverse, counts = np.unique([targets[i] for i in known], return_inverse=True, return_counts=True)
    if len(classes) < 2:
        raise ValueError(
            "class-balanced sampling needs at least two classes among the known targets; got "
            f"{dict(zip(classes.tolist(), counts.tolist(), strict=True))} "
            f"({len(targets) - len(known)} unknown)"
        )
    weights = np.zeros(len(targets))
    weights[known] = 1.0 / counts[inverse]
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(
        weights.tolist(), num_samples or len(targets), replacement=True, generator=generator
    )


class AlternatingSampler(Sampler[int]):
    """Indices alternating strictly positive, negative, positive, ... (positive first).

    Each epoch has ``2 * max(n_pos, n_neg)`` indices unless ``epoch_size`` is given: the larger class
    is seen once in a shuffled order, the smaller one is reshuffled and repeated as often as needed.
    Samples with an unknown label (``None`` / -1) are never drawn. Call :meth:`set_epoch` (Lightning
    does for distributed samplers; recipes call it themselves) for a fresh, reproducible order.
    """

    def __init__(self, labels: Sequence[int | None], seed: int = 0, epoch_size: int | None = None) -> None:
        values = [-1 if v is None else int(v) for v in labels]
        self.positives = [i for i, v in enumerate(values) if v == 1]
        self.negatives = [i for i, v in enumerate(values) if v == 0]
        if not self.positives or not self.negatives:
            raise ValueError(
                f"alternating sampling needs both classes; got {len(self.positives)} positive "
                f"and {len(self.negatives)} negative images"
            )
        self.seed = seed
        self.epoch = 0
        default = 2 * max(len(self.positives), len(self.negatives))
        self.epoch_size = default if epoch_size is None else epoch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.epoch_size

    def _stream(self, pool: list[int], rng: np.random.Generator) -> Iterator[int]:
        while True:
            for position in rng.permutation(len(pool)):
                yield pool[position]

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        positives, negatives = self._stream(self.positives, rng), self._stream(self.negatives, rng)
        for step in range(self.epoch_size):
            yield next(positives) if step % 2 == 0 else next(negatives)


class FrequencyNegativeSampler(Sampler[int]):
    """Bozic et al.'s sampling for segdec: each epoch every positive once and as many negatives,
    the negatives seen least often so far first (ties broken by a seeded shuffle), in a shuffled order.

    Over several epochs this walks through all negatives while keeping classes balanced. The
    counts live in the sampler, so one sampler must serve the whole fit (Lightning keeps it).
    Samples with unknown labels are never drawn. ``by_frequency=False`` is the reference's sampling
    with frequency sampling off: the same balanced epoch, its negatives a fresh random draw.
    """

    def __init__(self, labels: Sequence[int | None], seed: int = 0, by_frequency: bool = True) -> None:
        values = [-1 if v is None else int(v) for v in labels]
        self.positives = [i for i, v in enumerate(values) if v == 1]
        self.negatives = [i for i, v in enumerate(values) if v == 0]
        if not self.positives or not self.negatives:
            raise ValueError(
                f"segdec's balanced sampling needs both classes; got {len(self.positives)} positive "
                f"and {len(self.negatives)} negative images"
            )
        self.seen = np.zeros(len(self.negatives), dtype=np.int64)
        self.seed = seed
        self.by_frequency = by_frequency
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 2 * len(self.positives)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        count = min(len(self.positives), len(self.negatives))
        seen = self.seen if self.by_frequency else np.zeros_like(self.seen)
        order = np.lexsort((rng.random(len(self.negatives)), seen))[:count]
        self.seen[order] += 1
        chosen = self.positives + [self.negatives[i] for i in order]
        if count < len(self.positives):
            # Fewer negatives than positives: every one is drawn, and random ones again to balance.
            extra = rng.choice(self.negatives, len(self.positives) - count)
            chosen += [int(i) for i in extra]
        self.epoch += 1
        yield from (chosen[i] for i in rng.permutation(len(chosen)))
