"""SBAD (paper 002's surface router): zero-shot surface classification and unseen-surface alerts."""

from __future__ import annotations

from defectkit.models.sbad.model import (
    CEVAE,
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
