"""The one pre-processor shared by the PyTorch and ONNX paths: raw pixels in, network input out.

:func:`to_network_layout` turns any decoded image (uint8 HxW or HxWxC) into a 1xCxHxW uint8
tensor with the model's channel count; :class:`Preprocess` (an ``nn.Module``, exported inside the
ONNX graph) resizes it to the model's input size, scales to [0, 1] and normalises. Both
back-ends call exactly these two, so their inputs cannot drift apart.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from defectkit.data.io import convert_channels, image_array
from defectkit.inference.saved_model import InputSpec


def to_network_layout(image: np.ndarray, channels: int) -> np.ndarray:
    """uint8 1xCxHxW array with ``channels`` channels from a decoded HxW or HxWxC image (RGB order,
    as files decode; :func:`~defectkit.data.io.image_array` says what is refused)."""
    array = image_array(image)
    array = convert_channels(array, channels)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    # A fresh, writable copy: decoded images can be read-only views, which torch warns about.
    return np.array(array[None], order="C", copy=True)


class Preprocess(nn.Module):
    """uint8 or float (0..255) Bx C x H x W of any size -> normalised float at ``spec.size``.

    Bilinear resizing with antialiasing off: it is what ONNX ``Resize`` computes identically, so
    both back-ends see the same pixels. Training configs set ``augment.antialias: false`` so the
    network is trained on the pixels it will be judged on (a test pins the two resizes together).
    """

    def __init__(self, spec: InputSpec) -> None:
        super().__init__()
        self.size = (int(spec.size[0]), int(spec.size[1]))
        channels = spec.channels
        mean = torch.tensor(list(spec.mean) * (channels if len(spec.mean) == 1 else 1)).view(1, -1, 1, 1)
        std = torch.tensor(list(spec.std) * (channels if len(spec.std) == 1 else 1)).view(1, -1, 1, 1)
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", mean.float(), persistent=False)
        self.register_buffer("std", std.float(), persistent=False)

    def forward(self, raw: Tensor) -> Tensor:
        images = raw.float() / 255.0
        images = F.interpolate(images, size=self.size, mode="bilinear", align_corners=False)
        return (images - self.mean) / self.std
