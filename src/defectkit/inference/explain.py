"""Grad-CAM pictures of a defect-type classifier's call: which pixels made it choose the class.

For models that classify by references (``scl_arcface``) the target is the predicted class's mean
cosine similarity; the Grad-CAM layer is the backbone's last feature stage (timm's
``feature_info``). pytorch-grad-cam computes it; this module only wires the model in and returns a
heat map in [0, 1] at the image's size, which the overlay draws like any other heat map.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from defectkit.inference.preprocess import Preprocess, to_network_layout
from defectkit.inference.saved_model import ModelCard


class _Preprocessed(nn.Module):
    """Raw uint8 image in, class similarities out (Grad-CAM needs one differentiable module)."""

    def __init__(self, model: nn.Module, card: ModelCard) -> None:
        super().__init__()
        self.preprocess = Preprocess(card.input)
        self.model = model

    def forward(self, raw: Tensor) -> Tensor:
        out: Tensor = self.model(self.preprocess(raw))
        return out


def last_feature_layer(backbone: nn.Module) -> nn.Module:
    """The module producing the backbone's deepest feature map (timm models list it)."""
    info = getattr(backbone, "feature_info", None)
    if info:
        name = info[-1]["module"] if isinstance(info, list) else info.module_name(-1)
        return backbone.get_submodule(str(name))
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("no convolution to explain in this backbone")
    return convs[-1]


def explain_class(
    model: nn.Module, card: ModelCard, image: np.ndarray, class_index: int | None = None
) -> np.ndarray:
    """H x W Grad-CAM map in [0, 1] for ``class_index`` (default: the predicted class)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    network = cast(Any, model).network
    wrapper = _Preprocessed(model, card).eval()
    raw = torch.from_numpy(to_network_layout(image, card.input.channels)).float()
    if class_index is None:
        with torch.no_grad():
            class_index = int(wrapper(raw).argmax(1)[0])
    # Grad-CAM reads one image's pass through the target layer; dihedral TTA passes eight
    # orientations, so the map explains the upright view's evidence for the class the full model
    # chose.
    tta = getattr(network, "tta", None)
    if tta is not None:
        network.tta = "none"
    try:
        with GradCAM(model=wrapper, target_layers=[last_feature_layer(network.backbone)]) as cam:
            grayscale = cam(input_tensor=raw, targets=[ClassifierOutputTarget(class_index)])[0]
    finally:
        if tta is not None:
            network.tta = tta
    height, width = image.shape[:2]
    resized = F.interpolate(
        torch.from_numpy(grayscale)[None, None].float(), size=(height, width), mode="bilinear"
    )
    return np.clip(resized[0, 0].numpy(), 0.0, 1.0)
