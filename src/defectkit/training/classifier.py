"""Training recipe for ``imagenet_classifier``: an ImageNet-initialised backbone fine-tuned on
image labels with BCE (paper 004's Table 6 baseline, "Pre-trained ResNet").

The paper gives no schedule for its baseline. Chosen here (each a config value): AdamW at
``trainer.lr`` with ``trainer.weight_decay``, class-balanced epochs (``AlternatingSampler``: every
image of the larger class once, the smaller class repeated), random flips, the weights' own
normalisation (mean = std = 0.5 for EfficientNet-Lite0). ``weights`` names the ImageNet file or
package; without it the backbone starts random and results say ``"init": "random"``.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Sampler

from defectkit.config import RunConfig
from defectkit.data.sample import Batch
from defectkit.data.samplers import AlternatingSampler
from defectkit.models.classifier import ImageClassifier
from defectkit.models.pretrained import load_by_position, read_state_dict, weights_file
from defectkit.registry import MethodSpec, register_method
from defectkit.training.recipe import DecisionRecipe


class ClassifierRecipe(DecisionRecipe):
    def __init__(self, model: ImageClassifier, lr: float, weight_decay: float) -> None:
        super().__init__()
        self.model = model
        self.lr, self.weight_decay = lr, weight_decay

    def training_step(self, batch: Batch, batch_index: int) -> Tensor:
        loss = F.binary_cross_entropy_with_logits(self.model(batch.images), batch.label.float())
        self.log("train/dec_loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def decision_logits(self, images: Tensor) -> Tensor:
        return cast(Tensor, self.model(images))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)


@register_method(
    "imagenet_classifier", supervision=("weak",), tasks=("decision",), paper="004 (Table 6 baseline)"
)
class ImageNetClassifier(MethodSpec):
    """ImageNet-initialised image classifier fine-tuned on OK/NG labels (no localisation)."""

    default_config = "configs/imagenet_classifier/kolektorsdd.yaml"
    model_name = "classifier"
    pretrained_encoder = True
    uses_masks = False

    @classmethod
    def build_model(cls, config: dict[str, Any]) -> ImageClassifier:
        model = cast(ImageClassifier, super().build_model(config))
        if config.get("weights"):
            path = weights_file(str(config["weights"]))
            load_by_position(model.backbone, read_state_dict(path), str(path), skip_last=2)
        return model

    @classmethod
    def train_sampler(cls, labels: list[int | None], config: RunConfig) -> Sampler[int] | None:
        return AlternatingSampler(labels, seed=config.seed)

    @classmethod
    def build_recipe(cls, model: Any, config: dict[str, Any]) -> ClassifierRecipe:
        trainer = config["trainer"]
        return ClassifierRecipe(model, trainer["lr"], trainer["weight_decay"])
