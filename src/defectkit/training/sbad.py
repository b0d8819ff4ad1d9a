"""Training recipe for SBAD (paper 002): learned class embeddings, a feature VAEGAN, a GZSL router.

Everything trains on backbone features (one vector per image, :class:`~defectkit.models.sbad.
FeatureBackbone`), so the loops are plain PyTorch over tensors: a few MLPs on a few thousand
vectors train in minutes on a CPU. The steps, and the choices where the paper is silent (each an
:class:`SBADOptions` field):

1. Inputs: features min-max scaled to [0, 1] on the seen training set (the paper's BCE
   reconstruction needs it), clipped outside. Attributes that take one value on every seen
   surface (``unvaried``): nothing in training shows what changing them looks like. Fed as they
   are (``"keep"``, the paper's way), an unseen surface's other value there moves every network
   input along a direction training never constrained (the weights reading it only ever saw a
   constant, so they learned no more than a bias would, and nothing at all when that constant is
   0): an arbitrary shift of its learned CE (:func:`map_unseen` passes the real value through)
   and of everything generated for it. ``"seen_value"`` sets every surface's value there to the
   seen one before anything trains, so the unseen surfaces differ only where the seen ones taught
   something. ``"seen_span"`` goes further: each embedding is replaced by its least-squares
   projection onto the linear span of the seen ones (the seen ones stay as they are), which also
   drops combinations of varied attributes that no seen surface shows (e.g. a defect-reason
   one-hot that is 1 on an unseen surface only, and its correlated shape and area slots).
2. Stage A, the Learned CE (equations 1-3): :class:`~defectkit.models.sbad.CEVAE` with
   ``L = 0.5 * BCE(x_hat, x) + KL(N(mu, sigma) || N(CE_real(y), I))``. Equation 3 as printed,
   ``-0.5 [1 + log s^2 + s^2 + (mu - CE)^2]``, has the sign of the last two terms wrong (it would
   reward variance and distance from the CE); the standard KL
   ``-0.5 sum(1 + log s^2 - s^2 - (mu - CE)^2)`` is used. Sums over dimensions, mean over the
   batch. Each seen class's learned CE is the mean ``mu`` of its training images.
   The paper says unseen classes contribute nothing to training, yet GZSL needs their embeddings:
   ``unseen_ce="mapped"`` (default) moves each unseen real CE by the learned-minus-real shift a
   ridge regression fitted on the seen classes predicts from it; ``"real"`` keeps the real CE.
   ``ce="real"`` skips stage A (Table 3-4's Real CE rows).
3. Stage B, the VAEGAN (TF-VAEGAN's losses; the paper inherits them): per batch, ``critic_steps``
   WGAN-GP critic updates on that batch (TF-VAEGAN draws a fresh batch per critic step; gradient
   penalty ``gp_weight``, fixed, where TF-VAEGAN adapts it by x1.1), then one update of Encoder-1
   and the generator with ``BCE(x_rec, x) + kl_weight * KL(N(mu, sigma) || N(0, I)) - gan_weight *
   critic(G(z, a), a) + attribute_weight * R(Enc2(G(z, a)), a)`` (critic and Encoder-2 frozen
   during it); Encoder-2 (the R-AE's encoder) has its own update ``R(Enc2(x), a)`` on real
   features, once per batch, at 10x the rate (TF-VAEGAN's decoder rate). ``R`` is
   ``attribute_loss``: ``mse`` (the paper's change, equation 4) or ``l1``, both a mean over
   attributes (TF-VAEGAN's is a weighted L1 on an L2-normalised output; not reproduced).
   ``gan_weight`` 10 is TF-VAEGAN's gamma_G; ``attribute_weight`` 1 is ours (TF-VAEGAN's
   ``recons_weight`` 0.1 multiplies a sum, not a mean). No feedback module.
4. The unseen score: ``unseen_score="attributes"`` is the paper's (Encoder-2's reconstruction
   against the best seen surface's embedding); ``"nearest_seen"`` keeps up to ``memory_size``
   seen training features (a seeded random subset when there are more) and scores one minus the
   cosine similarity to the nearest (see :class:`~defectkit.models.sbad.SurfaceRouter`).
5. The router's classifier: a linear softmax on the scaled features ``x``
   (``classifier_input="features"``) or, as TF-VAEGAN's, on ``[x, dec(x), dec_hidden(x)]``, with
   Encoder-2's reconstruction and hidden layer (``"semantic"``), over seen + unseen surfaces,
   trained on the real seen features
   plus ``synthetic_per_class`` (400; TF-VAEGAN 1800) generated features per unseen surface
   (GZSL); the ZSL classifier sees generated unseen features only, over the unseen surfaces.
   Adam with beta1 0.5, as TF-VAEGAN's final classifier.

Widths and rates: TF-VAEGAN's (4096 hidden, 1e-5 for the VAEGAN and 1e-4 for Encoder-2, 120
epochs) are the ``paper`` profile's; the ``cpu`` profile uses 1024 hidden, 40 + 40 epochs and
rates 1e-4 / 1e-3 (fewer epochs need larger steps). Encoders have one hidden layer (TF-VAEGAN's
Encoder-1 has two).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from defectkit.config import RunConfig
from defectkit.data.attributes import Attributes, read_attributes, table1_attributes
from defectkit.data.io import read_image
from defectkit.data.sample import DatasetInfo
from defectkit.data.synthetic import SynthConfig
from defectkit.inference.preprocess import Preprocess, to_network_layout
from defectkit.inference.saved_model import InputSpec
from defectkit.models.sbad import (
    CEVAE,
    CLASSIFIER_INPUTS,
    UNSEEN_SCORES,
    AttributeRegressor,
    ConditionalEncoder,
    Critic,
    FeatureBackbone,
    FeatureGenerator,
    SurfaceRouter,
    SurfaceRouterNet,
    classifier_features,
    reparameterise,
)
from defectkit.registry import MethodSpec, register_method

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class SBADOptions:
    hidden: int = 1024
    ce: str = "learned"  # learned | real
    unseen_ce: str = "mapped"  # mapped | real
    unvaried: str = "keep"  # keep | seen_value | seen_span: what the seen surfaces never vary
    ce_epochs: int = 40
    ce_lr: float = 1e-3
    ridge: float = 1.0
    gan_epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-4
    beta1: float = 0.5
    critic_steps: int = 5
    gp_weight: float = 10.0
    gan_weight: float = 10.0
    kl_weight: float = 1.0
    attribute_loss: str = "mse"  # mse | l1
    attribute_weight: float = 1.0
    synthetic_per_class: int = 400
    classifier_epochs: int = 25
    classifier_lr: float = 1e-3
    # The unseen alert fires above this quantile of the seen validation images' unseen scores.
    alert_quantile: float = 0.99
    unseen_score: str = "attributes"  # attributes (the paper) | nearest_seen (kNN on features)
    classifier_input: str = "features"  # features | semantic (TF-VAEGAN's [x, Enc2(x), Enc2 hidden])
    memory_size: int = 4096  # seen features kept for nearest_seen
    # The class embeddings: a YAML/JSON attribute table (relative to the data root or absolute), or
    # "table1" for data from the generator (its surfaces' Table 1 vectors, defectkit.data.attributes).
    attributes: str = "table1"
    feature_batch: int = 32
    # Features: 0 keeps the ImageNet backbone frozen (option (a)); N > 0 first trains it N epochs
    # on the seen surfaces (option (b), flips), then uses it frozen like (a): to tell them apart
    # (backbone_target "surfaces": a linear head, cross-entropy) or to regress their attribute
    # vectors ("attributes": a linear head, MSE), so that the features carry what the unseen
    # surfaces are described by.
    backbone_epochs: int = 0
    backbone_target: str = "surfaces"  # surfaces | attributes
    backbone_lr: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        choices = {
            "ce": ("learned", "real"),
            "unseen_ce": ("mapped", "real"),
            "unvaried": UNVARIED,
            "attribute_loss": ("mse", "l1"),
            "unseen_score": UNSEEN_SCORES,
            "classifier_input": CLASSIFIER_INPUTS,
            "backbone_target": ("surfaces", "attributes"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"sbad option {name}={getattr(self, name)!r}: use one of {allowed}")
        if self.memory_size < 1:
            raise ValueError(f"sbad option memory_size={self.memory_size}: keep at least 1 seen feature")


@dataclass
class SBADModel:
    router: SurfaceRouter
    zsl_classifier: nn.Linear  # over the unseen surfaces only, on router.classifier_features
    embeddings: np.ndarray  # C x A, seen then unseen, as used in stage B
    learned_seen: np.ndarray | None  # the seen classes' learned CE (None: ce="real")
    generator: FeatureGenerator  # stage B's, kept for the benchmark's look at what it generates
    history: dict[str, list[float]] = field(default_factory=dict)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    order = torch.randperm(n, generator=generator)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _kl(mu: Tensor, logvar: Tensor, centre: Tensor | float = 0.0) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(centre, I)), summed over dimensions, mean over the batch."""
    return -0.5 * torch.sum(1 + logvar - logvar.exp() - (mu - centre).pow(2), dim=1).mean()


def _bce(reconstruction: Tensor, target: Tensor) -> Tensor:
    return F.binary_cross_entropy(reconstruction, target, reduction="none").sum(dim=1).mean()


UNVARIED = ("keep", "seen_value", "seen_span")


def seen_span(embeddings: np.ndarray, n_seen: int) -> np.ndarray:
    """``embeddings`` (seen rows first) projected onto the linear span of the seen rows: what the
    seen surfaces can show of each surface. Seen rows come back unchanged (to rounding)."""
    seen = np.asarray(embeddings[:n_seen], dtype=np.float64)
    projected = np.asarray(embeddings, dtype=np.float64) @ np.linalg.pinv(seen) @ seen
    if len(np.unique(projected.round(6), axis=0)) < len(projected):
        warnings.warn(
            "projected onto the seen surfaces' span, some surfaces share one embedding", stacklevel=2
        )
    return projected.astype(np.asarray(embeddings).dtype, copy=False)


def handle_unvaried(embeddings: np.ndarray, n_seen: int, mode: str) -> np.ndarray:
    """The class embeddings (seen rows first) as ``SBADOptions.unvaried`` says to treat what the
    seen surfaces never vary: ``keep``, ``seen_value`` (:func:`pin_unvaried`) or ``seen_span``
    (:func:`seen_span`)."""
    if mode == "seen_value":
        return pin_unvaried(embeddings, n_seen)
    if mode == "seen_span":
        return seen_span(embeddings, n_seen)
    return embeddings


def pin_unvaried(embeddings: np.ndarray, n_seen: int) -> np.ndarray:
    """``embeddings`` (seen rows first) with every attribute the seen rows share set to their value;
    warns when that leaves two surfaces with one embedding (no classifier can tell them apart)."""
    seen = embeddings[:n_seen]
    unvaried = np.ptp(seen, axis=0) <= 1e-6
    pinned = embeddings.copy()
    pinned[:, unvaried] = seen[0, unvaried]
    if len(np.unique(pinned.round(6), axis=0)) < len(pinned):
        warnings.warn(
            f"{int(unvaried.sum())} attribute(s) do not vary over the {n_seen} seen surface(s); "
            "without them some surfaces share one embedding",
            stacklevel=2,
        )
    return pinned


def class_means(features: Tensor, labels: Tensor, classes: Iterable[int]) -> Tensor:
    """One row per class of ``classes``: the mean of the rows of ``features`` labelled with it."""
    return torch.stack([features[labels == c].mean(dim=0) for c in classes])


def train_ce_vae(features: Tensor, labels: Tensor, real_ce: Tensor, options: SBADOptions,
                 progress: Progress | None = None) -> Tensor:  # fmt: skip
    """Stage A: the learned CE of each seen class (rows in the order of ``real_ce``)."""
    generator = torch.Generator().manual_seed(options.seed)
    vae = CEVAE(features.shape[1], real_ce.shape[1], options.hidden)
    optimiser = torch.optim.Adam(vae.parameters(), lr=options.ce_lr)
    for epoch in range(options.ce_epochs):
        for index in _batches(len(features), options.batch_size, generator):
            x, centre = features[index], real_ce[labels[index]]
            reconstruction, mu, logvar = vae(x)
            loss = 0.5 * _bce(reconstruction, x) + _kl(mu, logvar, centre)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        if progress is not None:
            progress("learned CE", epoch + 1, options.ce_epochs)
    vae.eval()
    with torch.no_grad():
        mu, _ = vae.encoder(features)
    return class_means(mu, labels, range(len(real_ce)))


def map_unseen(real_seen: np.ndarray, learned_seen: np.ndarray, real_unseen: np.ndarray,
               ridge: float) -> np.ndarray:  # fmt: skip
    """Unseen learned CEs: the real CE plus the shift a ridge regression on the seen classes
    predicts from it (``learned - real ~ real @ W + b``; the intercept ``b`` is not penalised, so a
    very large ``ridge`` moves every unseen CE by the seen classes' mean shift alone)."""
    shift = learned_seen - real_seen
    mean_real, mean_shift = real_seen.mean(axis=0), shift.mean(axis=0)
    centred = real_seen - mean_real
    gram = centred.T @ centred + ridge * np.eye(real_seen.shape[1])
    weights = np.linalg.solve(gram, centred.T @ (shift - mean_shift))
    mapped: np.ndarray = real_unseen + (real_unseen - mean_real) @ weights + mean_shift
    return mapped


def _gradient_penalty(critic: Critic, real: Tensor, fake: Tensor, attributes: Tensor) -> Tensor:
    alpha = torch.rand(len(real), 1)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (gradient,) = torch.autograd.grad(critic(mixed, attributes).sum(), mixed, create_graph=True)
    return (gradient.norm(2, dim=1) - 1).pow(2).mean()


def _attribute_loss(kind: str, predicted: Tensor, target: Tensor) -> Tensor:
    return F.mse_loss(predicted, target) if kind == "mse" else F.l1_loss(predicted, target)


def train_vaegan(features: Tensor, attributes: Tensor, options: SBADOptions, progress: Progress | None = None
                 ) -> tuple[FeatureGenerator, AttributeRegressor, dict[str, list[float]]]:  # fmt: skip
    """Stage B on the seen training features and their classes' embeddings (one row per image)."""
    generator_rng = torch.Generator().manual_seed(options.seed + 1)
    feature_dim, attribute_dim = features.shape[1], attributes.shape[1]
    encoder = ConditionalEncoder(feature_dim, attribute_dim, attribute_dim, options.hidden)
    generator = FeatureGenerator(feature_dim, attribute_dim, attribute_dim, options.hidden)
    critic = Critic(feature_dim, attribute_dim, options.hidden)
    regressor = AttributeRegressor(feature_dim, attribute_dim, options.hidden)
    betas = (options.beta1, 0.999)
    generative = torch.optim.Adam(
        [*encoder.parameters(), *generator.parameters()], lr=options.lr, betas=betas
    )
    critic_optimiser = torch.optim.Adam(critic.parameters(), lr=options.lr, betas=betas)
    regressor_optimiser = torch.optim.Adam(regressor.parameters(), lr=options.lr * 10, betas=betas)
    history: dict[str, list[float]] = {"critic": [], "vae": [], "attribute": []}
    for epoch in range(options.gan_epochs):
        sums = {key: 0.0 for key in history}
        batches = _batches(len(features), options.batch_size, generator_rng)
        for index in batches:
            x, a = features[index], attributes[index]
            for _ in range(options.critic_steps):
                with torch.no_grad():
                    fake = generator.sample(a)
                critic_loss = (
                    critic(fake, a).mean()
                    - critic(x, a).mean()
                    + options.gp_weight * _gradient_penalty(critic, x, fake, a)
                )
                critic_optimiser.zero_grad()
                critic_loss.backward()
                critic_optimiser.step()
            regression = _attribute_loss(options.attribute_loss, regressor(x), a)
            regressor_optimiser.zero_grad()
            regression.backward()
            regressor_optimiser.step()

            frozen = [*critic.parameters(), *regressor.parameters()]
            for parameter in frozen:
                parameter.requires_grad_(False)
            mu, logvar = encoder(x, a)
            reconstruction = generator(reparameterise(mu, logvar), a)
            vae_loss = _bce(reconstruction, x) + options.kl_weight * _kl(mu, logvar)
            fake = generator.sample(a)
            adversarial = -critic(fake, a).mean()
            cycle = _attribute_loss(options.attribute_loss, regressor(fake), a)
            loss = vae_loss + options.gan_weight * adversarial + options.attribute_weight * cycle
            generative.zero_grad()
            loss.backward()
            generative.step()
            for parameter in frozen:
                parameter.requires_grad_(True)
            sums["critic"] += float(critic_loss.detach())
            sums["vae"] += float(vae_loss.detach())
            sums["attribute"] += float(regression.detach())
        for key, value in sums.items():
            history[key].append(value / len(batches))
        if progress is not None:
            progress("VAEGAN", epoch + 1, options.gan_epochs)
    generator.eval()
    regressor.eval()
    return generator, regressor, history


def train_linear(features: Tensor, labels: Tensor, n_classes: int, options: SBADOptions) -> nn.Linear:
    """A softmax classifier (Adam, beta1 0.5, as TF-VAEGAN's final classifier)."""
    rng = torch.Generator().manual_seed(options.seed + 2)
    classifier = nn.Linear(features.shape[1], n_classes)
    optimiser = torch.optim.Adam(
        classifier.parameters(), lr=options.classifier_lr, betas=(options.beta1, 0.999)
    )
    for _ in range(options.classifier_epochs):
        for index in _batches(len(features), options.batch_size, rng):
            loss = F.cross_entropy(classifier(features[index]), labels[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return classifier.eval()


def fit_sbad(features: np.ndarray, labels: np.ndarray, real_ce: np.ndarray, n_seen: int,
             options: SBADOptions, progress: Progress | None = None) -> SBADModel:  # fmt: skip
    """Train SBAD on seen training features (``labels`` in 0..n_seen-1); ``real_ce`` has a row per
    surface, the ``n_seen`` seen ones first, then the unseen ones (used only through their real CE)."""
    if labels.min() < 0 or labels.max() >= n_seen:
        raise ValueError(f"seen labels must lie in 0..{n_seen - 1}")
    missing = sorted(set(range(n_seen)) - set(labels.tolist()))
    if missing:
        raise ValueError(f"seen classes {missing} have no training features")
    torch.manual_seed(options.seed)
    real_ce = handle_unvaried(real_ce, n_seen, options.unvaried)
    raw = torch.as_tensor(features, dtype=torch.float32)
    low, high = raw.min(dim=0).values, raw.max(dim=0).values
    scaled = ((raw - low) / (high - low).clamp_min(1e-6)).clamp(0.0, 1.0)
    y = torch.as_tensor(labels, dtype=torch.long)
    real = torch.as_tensor(real_ce, dtype=torch.float32)
    learned_seen = None
    embeddings = real.clone()
    if options.ce == "learned":
        learned = train_ce_vae(scaled, y, real[:n_seen], options, progress)
        learned_seen = learned.numpy()
        embeddings[:n_seen] = learned
        if options.unseen_ce == "mapped" and len(real) > n_seen:
            mapped = map_unseen(real_ce[:n_seen], learned_seen, real_ce[n_seen:], options.ridge)
            embeddings[n_seen:] = torch.as_tensor(mapped, dtype=torch.float32)
    generator, regressor, history = train_vaegan(scaled, embeddings[y], options, progress)
    unseen = torch.arange(n_seen, len(real))
    synthetic_labels = unseen.repeat_interleave(options.synthetic_per_class)
    with torch.no_grad():
        synthetic = classifier_features(
            generator.sample(embeddings[synthetic_labels]), regressor, options.classifier_input
        )
        real_seen = classifier_features(scaled, regressor, options.classifier_input)
    gzsl = train_linear(
        torch.cat([real_seen, synthetic]), torch.cat([y, synthetic_labels]), len(real), options
    )
    zsl = train_linear(synthetic, synthetic_labels - n_seen, max(len(unseen), 1), options)
    memory = None
    if options.unseen_score == "nearest_seen":
        keep = torch.randperm(len(raw), generator=torch.Generator().manual_seed(options.seed + 4))
        memory = raw[keep[: options.memory_size].sort().values]
    router = SurfaceRouter(
        low, high, gzsl, regressor, embeddings, n_seen, options.unseen_score, memory, options.classifier_input
    )
    router.eval()
    return SBADModel(router, zsl, embeddings.numpy(), learned_seen, generator, history)


def sbad_options(method_options: dict[str, Any], **updates: Any) -> SBADOptions:
    """:class:`SBADOptions` from a config's ``method_options``; unknown keys are an error."""
    known = {f.name for f in fields(SBADOptions)}
    given = {**method_options, **updates}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ValueError(f"sbad method_options: unknown {unknown}; known: {sorted(known)}")
    return SBADOptions(**given)


def router_input(config: RunConfig) -> InputSpec:
    """The backbone's input: the config's size and normalisation, always 3 channels (ImageNet)."""
    return InputSpec(size=config.input.size, channels=3, mean=config.input.mean, std=config.input.std)


def feature_pooling(config: RunConfig) -> str:
    """``model.pooling`` (:class:`~defectkit.models.sbad.FeatureBackbone`'s), ``final`` unset."""
    return str(config.model.get("pooling", "final"))


def pooling_setting(pooling: str) -> dict[str, str]:
    """``{"pooling": pooling}`` unless it is the default ``final``: what router cards, feature-cache
    keys and results variants record, so those made before the option existed keep theirs."""
    return {} if pooling == "final" else {"pooling": pooling}


def feature_backbone(config: RunConfig) -> FeatureBackbone:
    """The config's feature backbone: ``model.backbone`` (a timm name), :func:`feature_pooling`
    and ``weights``."""
    name = str(config.model.get("backbone", "tf_efficientnet_lite0"))
    return FeatureBackbone(name, config.weights, feature_pooling(config))


@torch.inference_mode()
def backbone_features(backbone: FeatureBackbone, spec: InputSpec, images: Iterable[np.ndarray],
                      batch_size: int = 32) -> np.ndarray:  # fmt: skip
    """Pooled features of decoded images (uint8, any size and channel count), N x D float32."""
    backbone.eval()
    preprocess = Preprocess(spec)
    chunks: list[np.ndarray] = []
    batch: list[Tensor] = []

    def flush() -> None:
        chunks.append(backbone(torch.cat(batch)).numpy().astype(np.float32))
        batch.clear()

    for image in images:
        batch.append(preprocess(torch.from_numpy(to_network_layout(image, spec.channels))))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return np.concatenate(chunks) if chunks else np.zeros((0, backbone.dim), np.float32)


def finetune_backbone(backbone: FeatureBackbone, spec: InputSpec, images: Sequence[np.ndarray],
                      labels: Sequence[int], options: SBADOptions, progress: Progress | None = None,
                      attributes: np.ndarray | None = None) -> FeatureBackbone:  # fmt: skip
    """Option (b): train ``backbone`` (all layers) with a linear head for ``options.backbone_epochs``
    epochs (Adam at ``backbone_lr``, batch ``batch_size``, random horizontal and vertical flips),
    to classify the seen surfaces (``backbone_target="surfaces"``) or to regress each image's
    surface's row of ``attributes`` (``"attributes"``; one row per label); returns it in eval mode.

    BatchNorm statistics are kept frozen (eval mode throughout): the seen surfaces are few and a
    batch of one texture would otherwise drag the ImageNet statistics about.
    """
    generator = torch.Generator().manual_seed(options.seed + 3)
    n_classes = int(max(labels)) + 1
    classes = torch.as_tensor(list(labels), dtype=torch.long)
    if options.backbone_target == "attributes":
        if attributes is None or len(attributes) < n_classes:
            raise ValueError("backbone_target 'attributes' needs an attribute row for every seen surface")
        embedding = torch.as_tensor(np.asarray(attributes), dtype=torch.float32)
        head = nn.Linear(backbone.dim, embedding.shape[1])
    else:
        head = nn.Linear(backbone.dim, n_classes)
    preprocess = Preprocess(spec)
    optimiser = torch.optim.Adam([*backbone.parameters(), *head.parameters()], lr=options.backbone_lr)
    backbone.eval()
    for epoch in range(options.backbone_epochs):
        for index in _batches(len(images), options.batch_size, generator):
            raws = [to_network_layout(images[int(i)], spec.channels) for i in index]
            batch = torch.cat([preprocess(torch.from_numpy(raw)) for raw in raws])
            flips = torch.rand(2, generator=generator)
            if flips[0] < 0.5:
                batch = batch.flip(3)
            if flips[1] < 0.5:
                batch = batch.flip(2)
            output = head(backbone(batch))
            if options.backbone_target == "attributes":
                loss = F.mse_loss(output, embedding[classes[index]])
            else:
                loss = F.cross_entropy(output, classes[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        if progress is not None:
            progress("backbone", epoch + 1, options.backbone_epochs)
    return backbone.eval()


def resolve_attributes(spec: str, info: DatasetInfo, root: Path | None) -> Attributes:
    """The attribute table ``spec`` names: ``table1`` (generated data) or a file."""
    if spec == "table1":
        generator = info.extra.get("generator")
        if not isinstance(generator, dict):
            raise ValueError(
                f"{info.root or info.name}: attributes 'table1' need data from the generator; give "
                "method_options.attributes: a YAML table of your surfaces' attributes"
            )
        names = {f.name for f in fields(SynthConfig)}
        return table1_attributes(SynthConfig(**{k: v for k, v in generator.items() if k in names}))
    path = Path(spec).expanduser()
    tried = [path] if path.is_absolute() or root is None else [root / path, path]
    found = next((p for p in tried if p.is_file()), None)
    if found is None:
        raise ValueError(
            f"method_options.attributes {spec!r}: no such file (tried {', '.join(map(str, tried))})"
        )
    path = found
    return read_attributes(path)


@dataclass
class FittedRouter:
    network: SurfaceRouterNet
    surfaces: list[str]  # seen, then unseen-known
    n_seen: int
    unknown_threshold: float
    validation: dict[str, float]


def router_network(model: SBADModel, backbone: FeatureBackbone, backbone_name: str,
                   attribute_names: Sequence[str], hidden: int) -> SurfaceRouterNet:  # fmt: skip
    """The trained pieces in one saveable :class:`SurfaceRouterNet`."""
    router = model.router
    network = SurfaceRouterNet(
        backbone_name, list(attribute_names), len(router.embeddings), router.n_seen, hidden, backbone.dim,
        router.unseen_score, len(router.memory), router.classifier_input, backbone.pooling,
    )  # fmt: skip
    network.backbone.load_state_dict(backbone.state_dict())
    network.router.load_state_dict(router.state_dict())
    return network.eval()


@dataclass(frozen=True)
class RouterSetup:
    """What a router is fitted with besides its images: the attribute table (every known surface,
    seen or not), the backbone that made the features, and the options."""

    attributes: Attributes
    backbone: FeatureBackbone
    backbone_name: str
    options: SBADOptions


@dataclass(frozen=True)
class SurfaceFeatures:
    """Backbone features, one row per image, and each image's surface name."""

    features: np.ndarray
    surfaces: Sequence[str]


def fit_router(train: SurfaceFeatures, validation: SurfaceFeatures, setup: RouterSetup,
               progress: Progress | None = None) -> FittedRouter:  # fmt: skip
    """Train SBAD on seen features and pack it with its backbone and its unknown threshold.

    Seen surfaces are those with training images; every other surface of the attribute table is
    unseen-known (the GZSL classifier gets generated features for it). The unknown threshold is the
    ``alert_quantile`` of the seen validation images' unseen scores.
    """
    attributes, options = setup.attributes, setup.options
    features, surfaces = train.features, train.surfaces
    val_features, val_surfaces = validation.features, validation.surfaces
    seen = sorted(set(surfaces))
    missing = [s for s in seen if s not in attributes.surfaces]
    if missing:
        raise ValueError(
            f"surfaces {missing} have images but no attribute vector in the attribute table "
            f"(method_options.attributes; it has {sorted(attributes.surfaces)})"
        )
    if len(val_features) == 0:
        raise ValueError("no validation images: the unknown threshold needs some (raise data.val_fraction)")
    without = sorted(set(seen) - set(val_surfaces))
    if without:
        warnings.warn(
            f"seen surfaces {without} have no validation image; the unknown threshold ignores them",
            stacklevel=2,
        )
    order = [*seen, *sorted(set(attributes.surfaces) - set(seen))]
    index = {name: i for i, name in enumerate(order)}
    labels = np.asarray([index[s] for s in surfaces])
    model = fit_sbad(features, labels, attributes.matrix(order), len(seen), options, progress)
    network = router_network(model, setup.backbone, setup.backbone_name, attributes.names, options.hidden)
    with torch.no_grad():
        routed = network.router(torch.as_tensor(val_features))
    scores = routed.unseen_score.numpy()
    threshold = float(np.quantile(scores, options.alert_quantile))
    truth = np.asarray([index.get(s, -1) for s in val_surfaces])
    calls = routed.seen_class.numpy()
    figures = {
        "n_images": float(len(truth)),
        "seen_accuracy": float((routed.logits.argmax(1).numpy() == truth).mean()),
        # The same rule as inference: unseen score >= threshold -> unknown.
        "routing_accuracy": float(((calls == truth) & (scores < threshold)).mean()),
        "unknown_threshold": threshold,
    }
    return FittedRouter(network, order, len(seen), threshold, figures)


def train_router_model(config: RunConfig, out: str | Path, progress: bool = True) -> Path:
    """``defectkit train`` for sbad: a saved surface router (``OUT/model``).

    Every labelled image of the data's train split is a training image of its surface (good and
    defective alike), less a stratified ``data.val_fraction`` for validation (the unknown
    threshold and the card's routing accuracy).
    """
    from tqdm import tqdm

    from defectkit.data.splits import group_ids, stratified_split
    from defectkit.inference.saved_model import ModelCard, Thresholds, git_commit, save_model
    from defectkit.training.data import load_samples, of_surfaces

    commit = git_commit()  # the code that trains: a commit made while it runs is not it
    options = sbad_options(dict(config.method_options), seed=config.seed)
    samples, info = load_samples(config)
    wanted = config.data.train_split
    if wanted is not None and any("split" in s.meta for s in samples):
        samples = [s for s in samples if s.meta.get("split") == wanted]
    samples = [s for s in of_surfaces(samples, config) if s.surface]
    if not samples:
        raise ValueError(f"{info.root or info.name}: no images with a surface name; sbad routes surfaces")
    attributes = resolve_attributes(options.attributes, info, config.data.resolved_root())
    names = sorted({str(s.surface) for s in samples})
    labels = [names.index(str(s.surface)) for s in samples]
    # Grouped by part and content: KolektorSDD's parts hold 8 images each, of one surface.
    groups = group_ids(samples)
    train_idx, val_idx = stratified_split(labels, config.data.val_fraction, config.data.split_seed, groups)
    backbone_name = str(config.model.get("backbone", "tf_efficientnet_lite0"))
    backbone = feature_backbone(config)
    spec = router_input(config)
    if options.backbone_epochs > 0:
        train_images = [read_image(samples[i].path) for i in train_idx]
        finetune_backbone(
            backbone, spec, train_images, [labels[i] for i in train_idx], options,
            attributes=attributes.matrix(names) if options.backbone_target == "attributes" else None,
        )  # fmt: skip
    images = (read_image(s.path) for s in tqdm(samples, desc="router features", disable=not progress))
    features = backbone_features(backbone, spec, images, options.feature_batch)

    def report(stage: str, done: int, total: int) -> None:
        if progress and done == total:
            print(f"{stage}: {total} epochs done")

    fitted = fit_router(
        SurfaceFeatures(features[train_idx], [str(samples[i].surface) for i in train_idx]),
        SurfaceFeatures(features[val_idx], [str(samples[i].surface) for i in val_idx]),
        RouterSetup(attributes, backbone, backbone_name, options),
        report,
    )
    card = ModelCard(
        method="sbad",
        model="sbad_router",
        model_options={
            "backbone": backbone_name,
            "attribute_names": attributes.names,
            "n_surfaces": len(fitted.surfaces),
            "n_seen": fitted.n_seen,
            "hidden": options.hidden,
            "feature_dim": backbone.dim,
            "unseen_score": options.unseen_score,
            "classifier_input": options.classifier_input,
            "memory_size": len(fitted.network.router.memory),
            **pooling_setting(backbone.pooling),
        },
        config=config.model_dump(mode="json"),
        surface_names=fitted.surfaces,
        input=spec,
        thresholds=Thresholds(
            decision=1.0,
            unknown=fitted.unknown_threshold,
            rule=f"unknown: quantile {options.alert_quantile} of seen validation unseen scores",
        ),
        validation_metrics={**fitted.validation, "n_seen": fitted.n_seen, "n_train": len(train_idx)},
        init=config.weights or "random",
        commit=commit,
    )
    return save_model(Path(out) / "model", fitted.network, card)


@register_method("sbad", supervision=("zero-shot",), tasks=("surface routing", "unseen alert"), paper="002")
class SBAD(MethodSpec):
    """Zero-shot surface router with unseen-surface alerts (paper 002's SBAD)."""

    default_config = "configs/sbad/dagm-mix.yaml"
    model_name = "sbad_router"
    pretrained_encoder = True
    uses_masks = False
    own_training = True

    @classmethod
    def train(cls, config: RunConfig, out: str | Path, progress: bool = True) -> Path:
        return train_router_model(config, out, progress)
