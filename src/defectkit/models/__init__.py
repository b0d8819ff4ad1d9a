"""Model families (plain ``nn.Module`` s) and their registry.

A model family registers a builder with :func:`register_model`; :func:`create_model` builds one from
the ``model`` section of a resolved config. Inference code loads models through this registry
only, so it never imports training code (and never Lightning).

Every model that an :class:`~defectkit.inference.inspector.Inspector` runs implements
``inspect(images) -> (scores, heatmaps)``: ``scores`` B probabilities of "defective" in [0, 1],
``heatmaps`` Bx1xhxw per-pixel defect probabilities at the model's own resolution (or ``None``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from torch import Tensor, nn

# Modules whose import registers model families; each method issue appends its own.
MODEL_MODULES: tuple[str, ...] = (
    "defectkit.models.segdec",
    "defectkit.models.weak_lnet",
    "defectkit.models.classifier",
    "defectkit.models.scl_arcface",
    "defectkit.models.tlu_net",
    "defectkit.models.aux_net",
    "defectkit.models.sbad",
)

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


class InspectionModel(Protocol):
    def inspect(self, images: Tensor) -> tuple[Tensor, Tensor | None]: ...


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS and _BUILDERS[name] is not builder:
            raise ValueError(f"model {name!r} is registered twice")
        _BUILDERS[name] = builder
        return builder

    return decorator


def _load_all() -> None:
    for module in MODEL_MODULES:
        importlib.import_module(module)


class ModelOptionError(ValueError):
    """Options that model family's builder does not take (a misspelt ``model`` key)."""


def check_model_options(name: str, options: Mapping[str, Any]) -> None:
    """Refuse options that the builder of family ``name`` does not take, naming them and the ones
    it does: before anything is built or trained, not as a TypeError from deep inside."""
    _load_all()
    if name not in _BUILDERS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(_BUILDERS)) or 'none'}")
    parameters = inspect.signature(_BUILDERS[name]).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        known = sorted(k for k in parameters if k != "in_channels")
        raise ModelOptionError(f"model {name!r}: unknown option(s) {unknown}; known: {known}")


def create_model(name: str, **options: Any) -> nn.Module:
    """Build model family ``name`` with ``options`` (the config's ``model`` section)."""
    check_model_options(name, options)
    return _BUILDERS[name](**options)


def list_models() -> list[str]:
    _load_all()
    return sorted(_BUILDERS)
