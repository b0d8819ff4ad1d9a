"""scl_arcface (paper 003): the losses train, references classify, the protocol's draws are clean."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from defectkit.bench.neu_cls import per_class_draw, prototype_scores
from defectkit.models.scl_arcface import EmbeddingNet, ReferenceClassifier, class_similarities
from defectkit.models.scl_arcface.model import dihedral_views
from defectkit.training.scl_arcface import InputNorm, SclArcFaceRecipe, ViewsDataset, fit

TINY = {"backbone": "mobilenetv3_small_050", "in_channels": 3, "embedding_dim": 16}
HALF: InputNorm = {"mean": (0.5,), "std": (0.5,)}  # the EfficientNet-Lite weights' normalisation


def stripes(label: int, seed: int, size: int = 40) -> np.ndarray:
    """Class 0: a grid of dots; class 1: plain; class 2: a blob. Plus noise (all rotation-invariant)."""
    rng = np.random.default_rng(seed)
    image = rng.normal(120, 10, (size, size))
    if label == 0:
        image[::6, ::6] += 120
    elif label == 2:
        image[12:28, 12:28] += 80
    return np.clip(image, 0, 255).astype(np.uint8)


def test_class_similarities_average_each_class_and_skip_empty_ones() -> None:
    references = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=1)
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[1.0, 0.0]])
    scores = class_similarities(query, references, labels, n_classes=3)
    assert torch.allclose(scores[0, :2], torch.tensor([1.0, (0.0 + 2**-0.5) / 2]))
    assert scores[0, 2] == float("-inf")  # no references: never predicted


def test_per_class_draw_is_disjoint_balanced_and_seeded() -> None:
    labels = np.repeat(np.arange(3), 10)
    train, test = per_class_draw(labels, 4, seed=7, classes=[0, 1, 2])
    assert len(set(train) & set(test)) == 0 and len(train) + len(test) == 30
    assert np.bincount(labels[train]).tolist() == [4, 4, 4]
    again, _ = per_class_draw(labels, 4, seed=7, classes=[0, 1, 2])
    assert np.array_equal(train, again)
    assert not np.array_equal(train, per_class_draw(labels, 4, seed=8, classes=[0, 1, 2])[0])


def test_training_separates_classes_and_references_classify(one_thread: None) -> None:
    labels = [i % 3 for i in range(24)]
    images = torch.from_numpy(np.stack([stripes(y, i) for i, y in enumerate(labels)]))[:, None].expand(
        -1, 3, -1, -1
    )
    torch.manual_seed(0)
    classifier = ReferenceClassifier(n_classes=3, **TINY)
    network = classifier.network
    recipe = SclArcFaceRecipe(network, n_classes=3, lr=2e-3)
    dataset = ViewsDataset(images.contiguous(), labels, size=32, crop_scale=(0.6, 1.0), n_views=2, **HALF)
    original, view_i, view_j, label = dataset[0]
    assert original.shape == view_i.shape == view_j.shape == (3, 32, 32) and int(label) == 0
    whole = next(iter(torch.utils.data.DataLoader(dataset, batch_size=24)))  # one fixed set of views
    network.eval()
    with torch.no_grad():
        before = float(recipe.losses(whole)["loss"])
    fit(recipe, dataset, epochs=15, batch_size=12, seed=0, progress=False)
    network.eval()
    with torch.no_grad():
        after = float(recipe.losses(whole)["loss"])
    assert after < before

    network.eval()
    queries = torch.from_numpy(np.stack([stripes(y, 100 + y) for y in range(3)]))[:, None].expand(
        -1, 3, -1, -1
    )
    with torch.no_grad():
        references = network.embed(
            torch.nn.functional.interpolate(dataset.images.float(), size=32) / 127.5 - 1
        )
        classifier.set_references(references, torch.tensor(labels))
        classifier.eval()
        scores = classifier(torch.nn.functional.interpolate(queries.float(), size=32) / 127.5 - 1)
    assert scores.shape == (3, 3) and scores.argmax(1).tolist() == [0, 1, 2]
    numpy_scores = prototype_scores(
        torch.nn.functional.normalize(
            network(torch.nn.functional.interpolate(queries.float(), size=32) / 127.5 - 1), dim=1
        )
        .detach()
        .numpy(),
        references.numpy(),
        np.asarray(labels),
        [0, 1, 2],
    )
    assert np.allclose(numpy_scores, scores.numpy(), atol=1e-5)


@pytest.mark.realdata
def test_neu_cls_loads_all_classes(real_data) -> None:  # type: ignore[no-untyped-def]
    real_data("neu-cls")
    from defectkit.bench.neu_cls import load_neu_cls

    data = load_neu_cls()
    assert data.images.shape == (1800, 200, 200) and np.bincount(data.labels).tolist() == [300] * 6


def test_backbone_reference_features_compare_pooled_features() -> None:
    import torch

    torch.manual_seed(0)
    classifier = ReferenceClassifier(
        2, backbone="mobilenetv3_small_050", embedding_dim=8, reference_features="backbone"
    ).eval()
    network = classifier.network
    assert network.reference_dim != network.embedding_dim
    images = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        pooled = torch.nn.functional.normalize(network.features(images), dim=1)
        assert torch.allclose(network.embed(images), pooled)
        classifier.set_references(network.embed(images), torch.tensor([0, 0, 1, 1]))
        similarities = classifier(images)
    assert similarities.shape == (4, 2) and bool((similarities.argmax(1) == torch.tensor([0, 0, 1, 1])).all())


def test_dihedral_tta_embeddings_ignore_orientation() -> None:
    torch.manual_seed(0)
    network = EmbeddingNet(backbone="mobilenetv3_small_050", embedding_dim=8, tta="dihedral").eval()
    images = torch.rand(2, 3, 32, 48)  # not square: a quarter turn changes the shape
    with torch.no_grad():
        upright = network.embed(images)
        for turned in (torch.rot90(images, 1, dims=(2, 3)), torch.flip(images, dims=(2,))):
            assert torch.allclose(network.embed(turned), upright, atol=1e-5)
        # The batched passes give the mean of the eight views, each embedded on its own.
        one_by_one = torch.stack([F.normalize(network(view), dim=1) for view in dihedral_views(images)])
        assert torch.allclose(upright, F.normalize(one_by_one.sum(0), dim=1), atol=1e-6)
        network.tta = "none"
        plain, turned_plain = network.embed(images), network.embed(torch.rot90(images, 1, dims=(2, 3)))
    assert torch.allclose(upright.norm(dim=1), torch.ones(2))
    assert not torch.allclose(plain, turned_plain, atol=1e-3)
    with pytest.raises(ValueError, match="tta"):
        EmbeddingNet(backbone="mobilenetv3_small_050", tta="d8")


def test_fit_takes_the_trainer_precision(one_thread: None) -> None:
    labels = [i % 3 for i in range(12)]
    images = torch.from_numpy(np.stack([stripes(y, i) for i, y in enumerate(labels)]))[:, None]
    network = EmbeddingNet(**TINY)
    recipe = SclArcFaceRecipe(network, n_classes=3, lr=2e-3)
    dataset = ViewsDataset(images.expand(-1, 3, -1, -1).contiguous(), labels, 32, (0.6, 1.0), 2, **HALF)
    seen: list[torch.dtype] = []
    network.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    fit(recipe, dataset, epochs=1, batch_size=6, seed=0, progress=False, precision="bf16-mixed")
    assert seen and set(seen) == {torch.bfloat16}  # the steps ran under bfloat16 autocast
    assert all(p.dtype == torch.float32 for p in network.parameters())  # the weights stayed float32


def test_the_paper_departures_are_options_whose_defaults_keep_the_committed_rows(one_thread: None) -> None:
    """``drop_last`` (default: drop a partial last batch) and ``arc_init_std`` (default: the library's
    N(0, 1) class centres); see the module docstring."""
    labels = [i % 3 for i in range(10)]
    images = torch.from_numpy(np.stack([stripes(y, i) for i, y in enumerate(labels)]))[:, None]
    dataset = ViewsDataset(images.expand(-1, 3, -1, -1).contiguous(), labels, 32, (0.6, 1.0), 2, **HALF)
    steps = {}
    for drop_last in (True, False):
        network = EmbeddingNet(**TINY)
        batches: list[int] = []
        network.register_forward_hook(lambda module, inputs, output, into=batches: into.append(len(output)))
        recipe = SclArcFaceRecipe(network, n_classes=3, lr=2e-3)
        fit(recipe, dataset, epochs=1, batch_size=4, seed=0, progress=False, drop_last=drop_last)
        steps[drop_last] = [size // 3 for size in batches]  # x_n, x_i, x_j of each image in one pass
    assert steps == {True: [4, 4], False: [4, 4, 2]}

    default = SclArcFaceRecipe(EmbeddingNet(**TINY), n_classes=3).arcface.W
    small = SclArcFaceRecipe(EmbeddingNet(**TINY), n_classes=3, arc_init_std=0.01).arcface.W
    assert 0.5 < float(default.std()) < 1.5 and 0.005 < float(small.std()) < 0.015
