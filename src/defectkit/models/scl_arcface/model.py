"""Embedding networks for defect-type recognition from few images (paper 003).

:class:`EmbeddingNet` is a timm backbone with global average pooling and a two-layer MLP
projection to a 128-d embedding (SimCLR's projection head, Fig. 1). The losses that train it (a
self-contrastive NT-Xent over three views and ArcFace) live in the recipe; what is saved and served
is this network plus a reference database of class embeddings (:class:`ReferenceClassifier`):
an image goes to the class whose k reference embeddings it is, on average, most similar to
(cosine), as the paper's test phase does. Adding a class is adding references, no retraining.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ProjectionHead(nn.Module):
    """Linear -> ReLU -> Linear, as SimCLR's head (the paper: "a linear projection head MLP")."""

    def __init__(self, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_features)
        )

    def forward(self, features: Tensor) -> Tensor:
        out: Tensor = self.layers(features)
        return out


# What references and queries can be compared by (EmbeddingNet.reference_features), the paper's first.
REFERENCE_FEATURES = ("projection", "backbone")


class EmbeddingNet(nn.Module):
    """Backbone -> global average pool -> projection: ``forward(images) -> B x embedding_dim``.

    ``backbone`` is any timm name; ImageNet weights are loaded into ``self.backbone`` (built with
    its 1000-class head, removed after loading) by the method, not here.

    ``reference_features`` chooses what references and queries are compared by (:meth:`embed`):
    ``projection`` (the paper: the 128-d embedding the losses shape) or ``backbone`` (the pooled
    features under the projection head, which self-supervised learning often finds to transfer
    better to classes never trained on). Training is the same either way.

    ``tta`` chooses how :meth:`embed` sees an image: ``none`` (the paper) or ``dihedral``, the
    direction of the mean of the unit embeddings of its eight rotations by 90 degrees and their
    mirror images. Set it before the reference database and the unknown threshold are made (at
    ``train``): references embedded one way and queries the other do not compare. Training
    already draws those eight orientations as augmentations (the paper's rotations and flips), and
    steel surface textures have no upright; averaging over them makes an embedding exactly
    invariant to them and less noisy when only a few references per class exist. It costs eight
    times the compute per image, in two batched passes (the orientations of the input's shape, then
    the transposed ones), each four times the batch: callers size batches for that. Training is the
    same either way.
    """

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        in_channels: int = 3,
        embedding_dim: int = 128,
        projection_hidden: int | None = None,
        drop_rate: float = 0.0,
        reference_features: str = "projection",
        tta: str = "none",
    ) -> None:
        super().__init__()
        if reference_features not in REFERENCE_FEATURES:
            raise ValueError(f"reference_features={reference_features!r}: use projection or backbone")
        if tta not in ("none", "dihedral"):
            raise ValueError(f"tta={tta!r}: use none or dihedral")
        self.reference_features = reference_features
        self.tta = tta
        self.backbone: nn.Module = timm.create_model(
            backbone, pretrained=False, in_chans=in_channels, drop_rate=drop_rate
        )
        # Pooled width: some families (MobileNetV3) add a layer after pooling, hence head_hidden_size.
        features = int(getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features)  # type: ignore[arg-type]
        self.projection = ProjectionHead(features, projection_hidden or features, embedding_dim)
        self.embedding_dim = embedding_dim
        self.reference_dim = features if reference_features == "backbone" else embedding_dim

    def drop_imagenet_head(self) -> None:
        """After loading ImageNet weights: the backbone then returns pooled features."""
        self.backbone.reset_classifier(0)  # type: ignore[operator]

    def features(self, images: Tensor) -> Tensor:
        """Pooled backbone features (what a linear probe reads)."""
        # pre_logits: pooled features whether or not the ImageNet head is still attached.
        features = self.backbone.forward_features(images)  # type: ignore[operator]
        out: Tensor = self.backbone.forward_head(features, pre_logits=True)  # type: ignore[operator]
        return out

    def forward(self, images: Tensor) -> Tensor:
        out: Tensor = self.projection(self.features(images))
        return out

    def embed(self, images: Tensor) -> Tensor:
        """Unit-length reference embeddings (``reference_features``, each view of ``tta``): cosine
        similarity is then a dot product."""
        if self.tta == "none":
            return F.normalize(self._reference_output(images), dim=1)
        views = dihedral_views(images)
        # Views of one shape share a pass: an even number of quarter turns keeps H x W, an odd one
        # gives W x H. Grouped by turn count, not by comparing sizes, so an export keeps H and W free.
        # One pass per view would trace eight copies of the backbone into an exported graph.
        unit = [
            F.normalize(self._reference_output(torch.cat(group)), dim=1)
            for group in (views[0::2], views[1::2])
        ]
        return F.normalize(torch.cat(unit).unflatten(0, (len(views), -1)).sum(0), dim=1)

    def _reference_output(self, images: Tensor) -> Tensor:
        return self.features(images) if self.reference_features == "backbone" else self(images)


def dihedral_views(images: Tensor) -> list[Tensor]:
    """The eight orientations of B x C x H x W ``images``: four quarter turns, each as is and mirrored."""
    turns = [torch.rot90(images, k, dims=(2, 3)) for k in range(4)]
    return turns + [torch.flip(turn, dims=(3,)) for turn in turns]


class ReferenceClassifier(nn.Module):
    """An :class:`EmbeddingNet` plus a reference database: mean cosine similarity to each class.

    The database (``references`` R x D unit rows, ``reference_labels`` R class indices in
    ``[0, n_classes)``) is not in the state dict: it lives in ``references.safetensors`` beside the
    weights, so enrolling a class rewrites that file only. ``inspect(images)`` returns B x C mean
    similarities in [-1, 1] (a class without references scores -inf, so it is never chosen) and
    no heat map; exported, the database travels inside the ONNX graph as constants.
    """

    def __init__(self, n_classes: int, **embedding_options: Any) -> None:
        super().__init__()
        self.network = EmbeddingNet(**embedding_options)
        self.network.drop_imagenet_head()
        self.n_classes = n_classes
        self.references: Tensor
        self.reference_labels: Tensor
        dim = self.network.reference_dim
        self.register_buffer("references", torch.zeros(0, dim), persistent=False)
        self.register_buffer("reference_labels", torch.zeros(0, dtype=torch.long), persistent=False)

    def set_references(self, embeddings: Tensor, labels: Tensor) -> None:
        if len(embeddings) != len(labels) or (len(labels) and int(labels.max()) >= self.n_classes):
            raise ValueError(
                f"{len(embeddings)} references with {len(labels)} labels for {self.n_classes} classes"
            )
        device = self.references.device
        self.references = F.normalize(embeddings.float(), dim=1).to(device)
        self.reference_labels = labels.long().to(device)

    def forward(self, images: Tensor) -> Tensor:
        return class_similarities(
            self.network.embed(images), self.references, self.reference_labels, self.n_classes
        )

    def inspect(self, images: Tensor) -> tuple[Tensor, None]:
        return self(images), None


def class_similarities(embeddings: Tensor, references: Tensor, labels: Tensor, n_classes: int) -> Tensor:
    """B x C mean cosine similarity of unit ``embeddings`` to each class's unit ``references``."""
    similarity = embeddings @ references.T  # B x R
    one_hot = F.one_hot(labels, n_classes).to(similarity.dtype)  # R x C
    counts = one_hot.sum(0)
    means = similarity @ one_hot / counts.clamp(min=1)
    return torch.where(counts > 0, means, torch.full_like(means, float("-inf")))
