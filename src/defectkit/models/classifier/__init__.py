"""Image-level classifiers on timm backbones (``classifier``): the ImageNet baseline of paper 004."""

from __future__ import annotations

from defectkit.models import register_model
from defectkit.models.classifier.model import ImageClassifier

# The constructor is the builder: its keyword arguments are the config's ``model`` section.
classifier = register_model("classifier")(ImageClassifier)


__all__ = ["ImageClassifier", "classifier"]
