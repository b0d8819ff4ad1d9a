"""SBAD (paper 002's surface router): zero-shot surface classification and unseen-surface alerts."""

from __future__ import annotations

from defectkit.models.sbad.model import (
    CEVAE,
    CLASSIFIER_INPUTS,
    UNSEEN_SCORES,
    AttributeRegressor,
    ConditionalEncoder,
    Critic,
    FeatureBackbone,
    FeatureGenerator,
    RouterOutput,
    SurfaceRouter,
    SurfaceRouterNet,
    classifier_features,
    reparameterise,
)

__all__ = [
    "CEVAE",
    "CLASSIFIER_INPUTS",
    "UNSEEN_SCORES",
    "AttributeRegressor",
    "ConditionalEncoder",
    "Critic",
    "FeatureBackbone",
    "FeatureGenerator",
    "RouterOutput",
    "SurfaceRouter",
    "SurfaceRouterNet",
    "classifier_features",
    "reparameterise",
]
