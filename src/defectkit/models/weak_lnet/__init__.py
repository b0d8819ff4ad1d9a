"""The weakly supervised localisation + decision network (``weak_lnet``, paper 004)."""

from __future__ import annotations

from defectkit.models import register_model
from defectkit.models.weak_lnet.model import (
    STRIDE,
    DecisionNet,
    LocalisationNet,
    ResidualSpatialAttention,
    SharedLayers,
    WeakLNet,
    WeakLNetOutput,
)

# The constructor is the builder: its keyword arguments are the config's ``model`` section.
weak_lnet = register_model("weak_lnet")(WeakLNet)

__all__ = [
    "STRIDE",
    "DecisionNet",
    "LocalisationNet",
    "ResidualSpatialAttention",
    "SharedLayers",
    "WeakLNet",
    "WeakLNetOutput",
    "weak_lnet",
]
