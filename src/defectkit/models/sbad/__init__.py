"""SBAD (paper 002's surface router): zero-shot surface classification and unseen-surface alerts."""

from __future__ import annotations

from defectkit.models.sbad.model import (
    CEVAE,
    UNSEEN_SCORES,
    AttributeRegressor,
    ConditionalEncoder,
    Critic,
    FeatureBackbone,
    FeatureGenerator,
    RouterOutput,
    SurfaceRouter,
    SurfaceRouterNet,
    reparameterise,
)

__all__ = [
    "CEVAE",
    "UNSEEN_SCORES",
    "AttributeRegressor",
    "ConditionalEncoder",
    "Critic",
    "FeatureBackbone",
    "FeatureGenerator",
    "RouterOutput",
    "SurfaceRouter",
    "SurfaceRouterNet",
    "reparameterise",
]
