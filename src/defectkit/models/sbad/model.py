"""SBAD (paper 002): the networks of the surface router, all small MLPs on backbone features.

Features ``x`` are a frozen backbone's pooled features min-max scaled to [0, 1] (the paper's BCE
reconstruction needs that; the scaling is fitted on the seen training features and stored).
Attribute vectors ``a`` are the class embeddings (29 Table 1 attributes by default).

* :class:`CEVAE` (stage A, the "Learned CE" VAE): ``x -> (mu, logvar)`` with a latent the size of
  ``a``, ``z -> x``; its latents are pulled towards each class's real CE, and each seen class's
  mean ``mu`` becomes its learned CE.
* Stage B, the VAEGAN (TF-VAEGAN's layout, Narayan et al. 2020, without its feedback module):
  :class:`ConditionalEncoder` (Encoder-1, ``(x, a) -> z``), :class:`FeatureGenerator` (the decoder,
  ``(z, a) -> x``, sigmoid output), :class:`Critic` (WGAN critic conditioned on ``a``) and
  :class:`AttributeRegressor` (Encoder-2, ``x -> a``; with the generator, the paper's "R-AE").
* :class:`SurfaceRouter`: what inference keeps: the feature scaling, a linear classifier over seen
  and unseen surfaces (trained on real seen and generated unseen features; it reads the features,
  or with ``classifier_input="semantic"`` TF-VAEGAN's ``[x, Enc2(x), Enc2's hidden layer]``),
  Encoder-2 and the class embeddings. Its unseen score (``unseen_score``) is the paper's
  ``attributes``: the distance between Encoder-2's reconstruction and the class embedding of the
  best *seen* surface; or ``nearest_seen``, ours: one minus the cosine similarity of the image's
  (unscaled) features to the nearest of a memory of seen training images' features (a kNN
  novelty score, k = 1). The second needs no attribute to transfer from the seen surfaces, which
  is what fails on real products (BENCHMARKS.md, products/line).

One hidden layer of ``hidden`` units with LeakyReLU(0.2) everywhere (TF-VAEGAN: 4096 units, and
two layers in its Encoder-1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from defectkit.models import register_model
from defectkit.models.pretrained import load_by_position, read_state_dict, weights_file

POOLINGS = ("final", "stages")


class FeatureBackbone(nn.Module):
    """A timm network's features of whole images, one vector per image.

    ``pooling="final"``: the globally pooled last layer (before the classifier), the paper's.
    ``"stages"``: the mean and standard deviation over space of every feature stage timm names
    (``feature_info``; for EfficientNet-Lite0 five, 16 to 320 channels, 1,024 values in all).
    Surface attributes (grainy, striped, regular, dark) are texture statistics at several scales,
    which the last layer, pooled after the deepest stage, keeps only mixed with object-level
    features; first and second moments per stage are the classic texture descriptor.

    ``weights``: a packaged name (``efficientnet-lite0``) or a file of the full ImageNet classifier,
    loaded by position; ``None`` keeps the random initialisation (record it as such).
    """

    def __init__(
        self,
        name: str = "tf_efficientnet_lite0",
        weights: str | None = "efficientnet-lite0",
        pooling: str = "final",
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
        network: Any = timm.create_model(name, pretrained=False, num_classes=1000)
        self.network = network
        self.pooling = pooling
        if pooling == "final":
            self.dim = int(network.num_features)
        else:
            self.dim = 2 * sum(int(stage["num_chs"]) for stage in network.feature_info)
        if weights is not None:
            path = weights_file(weights)
            load_by_position(self.network, read_state_dict(path), str(path))

    def forward(self, images: Tensor) -> Tensor:
        if self.pooling == "final":
            pooled: Tensor = self.network.forward_head(self.network.forward_features(images), pre_logits=True)
            return pooled
        stages = self.network.forward_intermediates(images, intermediates_only=True)
        return torch.cat([torch.cat([s.mean((2, 3)), s.std((2, 3))], 1) for s in stages], 1)


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, outputs))


class GaussianEncoder(nn.Module):
    """``inputs -> (mu, logvar)`` of a diagonal Gaussian latent."""

    def __init__(self, inputs: int, hidden: int, latent: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(inputs, hidden), nn.LeakyReLU(0.2))
        self.mu = nn.Linear(hidden, latent)
        self.logvar = nn.Linear(hidden, latent)

    def forward(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        hidden = self.body(inputs)
        return self.mu(hidden), self.logvar(hidden)


def reparameterise(mu: Tensor, logvar: Tensor) -> Tensor:
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


class CEVAE(nn.Module):
    """Stage A: a VAE whose latent has one unit per attribute."""

    def __init__(self, feature_dim: int, attribute_dim: int, hidden: int = 1024) -> None:
        super().__init__()
        self.encoder = GaussianEncoder(feature_dim, hidden, attribute_dim)
        self.decoder = nn.Sequential(_mlp(attribute_dim, hidden, feature_dim), nn.Sigmoid())

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mu, logvar = self.encoder(features)
        return self.decoder(reparameterise(mu, logvar)), mu, logvar


class ConditionalEncoder(nn.Module):
    """Encoder-1: ``(x, a) -> (mu, logvar)`` of the noise latent."""

    def __init__(self, feature_dim: int, attribute_dim: int, latent_dim: int, hidden: int) -> None:
        super().__init__()
        self.encoder = GaussianEncoder(feature_dim + attribute_dim, hidden, latent_dim)

    def forward(self, features: Tensor, attributes: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.encoder(torch.cat([features, attributes], dim=1))
        return mu, logvar


class FeatureGenerator(nn.Module):
    """The decoder / generator: ``(z, a) -> x`` in [0, 1]."""

    def __init__(self, feature_dim: int, attribute_dim: int, latent_dim: int, hidden: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.body = nn.Sequential(_mlp(latent_dim + attribute_dim, hidden, feature_dim), nn.Sigmoid())

    def forward(self, noise: Tensor, attributes: Tensor) -> Tensor:
        generated: Tensor = self.body(torch.cat([noise, attributes], dim=1))
        return generated

    def sample(self, attributes: Tensor) -> Tensor:
        """Features for each attribute row, from the prior."""
        return self(torch.randn(len(attributes), self.latent_dim, device=attributes.device), attributes)


class Critic(nn.Module):
    """WGAN critic conditioned on the attributes (TF-VAEGAN's discriminator)."""

    def __init__(self, feature_dim: int, attribute_dim: int, hidden: int) -> None:
        super().__init__()
        self.body = _mlp(feature_dim + attribute_dim, hidden, 1)

    def forward(self, features: Tensor, attributes: Tensor) -> Tensor:
        score: Tensor = self.body(torch.cat([features, attributes], dim=1)).squeeze(1)
        return score


class AttributeRegressor(nn.Module):
    """Encoder-2: the attribute vector a feature vector shows."""

    def __init__(self, feature_dim: int, attribute_dim: int, hidden: int) -> None:
        super().__init__()
        self.body = _mlp(feature_dim, hidden, attribute_dim)

    def forward(self, features: Tensor) -> Tensor:
        attributes: Tensor = self.body(features)
        return attributes

    def semantic(self, features: Tensor) -> Tensor:
        """``[attributes, hidden]``: the reconstruction and the hidden layer behind it (what
        TF-VAEGAN's classifier reads beside the features)."""
        hidden: Tensor = self.body[1](self.body[0](features))
        return torch.cat([self.body[2](hidden), hidden], dim=1)


@dataclass
class RouterOutput:
    logits: Tensor  # N x C over every known surface (seen, then unseen)
    attributes: Tensor  # N x A, Encoder-2's reconstruction
    seen_class: Tensor  # N, the best seen surface (an index into the seen ones)
    unseen_score: Tensor  # N, large for a surface never trained on (SurfaceRouter's unseen_score)


UNSEEN_SCORES = ("attributes", "nearest_seen")
# What the surface classifier reads: the scaled features, or TF-VAEGAN's "semantic" input, the
# features with Encoder-2's reconstruction and hidden layer beside them.
CLASSIFIER_INPUTS = ("features", "semantic")


def classifier_features(
    scaled: Tensor, attribute_regressor: AttributeRegressor, classifier_input: str
) -> Tensor:
    """The surface classifier's input for scaled features (see :data:`CLASSIFIER_INPUTS`)."""
    if classifier_input == "semantic":
        return torch.cat([scaled, attribute_regressor.semantic(scaled)], dim=1)
    return scaled


def classifier_width(feature_dim: int, attribute_dim: int, hidden: int, classifier_input: str) -> int:
    """The input width of the surface classifier for ``classifier_input`` (checked by the router)."""
    return feature_dim + (attribute_dim + hidden if classifier_input == "semantic" else 0)


class SurfaceRouter(nn.Module):
    """Inference: scaled features -> surface logits, reconstructed attributes and an unseen score.

    ``memory`` (M x D, unit rows) holds seen training features for ``unseen_score="nearest_seen"``;
    it is empty for the paper's ``attributes`` score. ``classifier_input``: see
    :data:`CLASSIFIER_INPUTS`.
    """

    feature_min: Tensor
    feature_span: Tensor
    embeddings: Tensor
    memory: Tensor

    def __init__(
        self,
        feature_min: Tensor,
        feature_max: Tensor,
        classifier: nn.Linear,
        attribute_regressor: AttributeRegressor,
        embeddings: Tensor,
        n_seen: int,
        unseen_score: str = "attributes",
        memory: Tensor | None = None,
        classifier_input: str = "features",
    ) -> None:
        super().__init__()
        if classifier_input not in CLASSIFIER_INPUTS:
            raise ValueError(f"classifier_input={classifier_input!r}: use one of {CLASSIFIER_INPUTS}")
        if unseen_score not in UNSEEN_SCORES:
            raise ValueError(f"unseen_score={unseen_score!r}: use one of {UNSEEN_SCORES}")
        if memory is None:
            memory = torch.zeros(0, feature_min.shape[0])
        if unseen_score == "nearest_seen" and len(memory) == 0:
            raise ValueError("unseen_score='nearest_seen' needs a memory of seen training features")
        self.register_buffer("feature_min", feature_min.clone())
        self.register_buffer("feature_span", (feature_max - feature_min).clamp_min(1e-6))
        self.register_buffer("embeddings", embeddings.clone())
        self.register_buffer("memory", F.normalize(memory, dim=1))
        self.classifier = classifier
        self.attribute_regressor = attribute_regressor
        self.n_seen = n_seen
        self.unseen_score = unseen_score
        self.classifier_input = classifier_input

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # Routers saved before the memory existed scored by attributes and carry no memory key.
        if self.unseen_score == "attributes" and prefix + "memory" not in state_dict:
            state_dict[prefix + "memory"] = self.memory
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def scale(self, features: Tensor) -> Tensor:
        return ((features - self.feature_min) / self.feature_span).clamp(0.0, 1.0)

    def classifier_features(self, scaled: Tensor) -> Tensor:
        """The surface classifier's input for scaled features."""
        return classifier_features(scaled, self.attribute_regressor, self.classifier_input)

    def forward(self, features: Tensor) -> RouterOutput:
        scaled = self.scale(features)
        logits = self.classifier(self.classifier_features(scaled))
        attributes = self.attribute_regressor(scaled)
        seen_class = logits[:, : self.n_seen].argmax(dim=1)
        if self.unseen_score == "nearest_seen":
            similarity = F.normalize(features, dim=1) @ self.memory.T
            distance = 1.0 - similarity.max(dim=1).values
        else:
            distance = (attributes - self.embeddings[seen_class]).pow(2).mean(dim=1)
        return RouterOutput(logits, attributes, seen_class, distance)


class SurfaceRouterNet(nn.Module):
    """The saved router: images -> backbone features -> :class:`SurfaceRouter`.

    Built empty from its model card (``model.yaml``) and filled from ``weights.safetensors``; the
    backbone's weights travel in the same file, so loading reads no ImageNet weights.
    ``surfaces`` are the class names in the router's order (seen, then unseen-known),
    ``attribute_names`` name the embedding's dimensions, for the operator's words, and
    ``memory_size`` is the number of seen features kept for ``unseen_score="nearest_seen"``;
    ``classifier_input`` is :class:`SurfaceRouter`'s, ``pooling`` :class:`FeatureBackbone`'s.
    """

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        attribute_names: list[str] | tuple[str, ...] = (),
        n_surfaces: int = 1,
        n_seen: int = 1,
        hidden: int = 1024,
        feature_dim: int | None = None,
        unseen_score: str = "attributes",
        memory_size: int = 0,
        classifier_input: str = "features",
        pooling: str = "final",
    ) -> None:
        super().__init__()
        self.backbone = FeatureBackbone(backbone, weights=None, pooling=pooling)
        dim = feature_dim or self.backbone.dim
        attribute_dim = len(attribute_names)
        if attribute_dim == 0:
            raise ValueError("a surface router needs attribute names (its class embedding's dimensions)")
        self.attribute_names = list(attribute_names)
        self.router = SurfaceRouter(
            torch.zeros(dim),
            torch.ones(dim),
            nn.Linear(classifier_width(dim, attribute_dim, hidden, classifier_input), n_surfaces),
            AttributeRegressor(dim, attribute_dim, hidden),
            torch.zeros(n_surfaces, attribute_dim),
            n_seen,
            unseen_score,
            torch.ones(memory_size, dim) if unseen_score == "nearest_seen" else None,
            classifier_input,
        )

    def forward(self, images: Tensor) -> RouterOutput:
        output: RouterOutput = self.router(self.backbone(images))
        return output


@register_model("sbad_router")
def build_sbad_router(**options: Any) -> SurfaceRouterNet:
    options.pop("in_channels", None)  # always 3: an ImageNet backbone
    return SurfaceRouterNet(**options)
