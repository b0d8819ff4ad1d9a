"""What every image-level recipe shares: validation AP and decision loss, and model selection."""

from __future__ import annotations

from typing import cast

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from defectkit.data.sample import Batch
from defectkit.metrics import average_precision


class DecisionRecipe(L.LightningModule):
    """Base LightningModule of recipes whose model gives one defect logit per image.

    Subclasses implement :meth:`decision_logits`; validation logs ``val/ap``, ``val/dec_loss`` and
    ``val/selection`` (what ``trainer.restore_best`` ranks epochs by), gathered over DDP ranks.
    """

    def __init__(self) -> None:
        super().__init__()
        self._val_scores: list[Tensor] = []
        self._val_labels: list[Tensor] = []

    def decision_logits(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    def validation_step(self, batch: Batch, batch_index: int) -> None:
        logits = self.decision_logits(batch.images)
        self._val_scores.append(logits.detach().float())  # bf16-mixed: numpy takes floats
        self._val_labels.append(batch.label.detach())

    def on_validation_epoch_end(self) -> None:
        if not self._val_scores:
            return
        logits = torch.cat(self._val_scores)
        labels = torch.cat(self._val_labels)
        self._val_scores.clear()
        self._val_labels.clear()
        if self.trainer.world_size > 1:
            logits = cast(Tensor, self.all_gather(logits)).reshape(-1)
            labels = cast(Tensor, self.all_gather(labels)).reshape(-1)
        known = labels >= 0
        logits, labels = logits[known], labels[known]
        ap = float(np.nan_to_num(average_precision(labels.cpu().numpy(), logits.cpu().numpy()), nan=0.0))
        loss = float(F.binary_cross_entropy_with_logits(logits, labels.float()))
        self.log("val/ap", ap, prog_bar=True, rank_zero_only=True)
        self.log("val/dec_loss", loss, rank_zero_only=True)
        # Model selection: AP saturates at 1.0 on small validation sets, so ties are broken by the
        # lower decision loss (a better-separated model) instead of keeping the earliest epoch.
        self.log("val/selection", ap - 1e-3 * min(loss, 100.0), rank_zero_only=True)
