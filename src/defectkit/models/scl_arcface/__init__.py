"""Embedding network + reference database (``scl_arcface``, paper 003)."""

from __future__ import annotations

from defectkit.models import register_model
from defectkit.models.scl_arcface.model import (
    EmbeddingNet,
    ProjectionHead,
    ReferenceClassifier,
    class_similarities,
)

# The constructor is the builder: its keyword arguments are the config's ``model`` section.
embedding_net = register_model("embedding_net")(EmbeddingNet)
reference_classifier = register_model("reference_classifier")(ReferenceClassifier)

__all__ = [
    "EmbeddingNet",
    "ProjectionHead",
    "ReferenceClassifier",
    "class_similarities",
    "embedding_net",
    "reference_classifier",
]
