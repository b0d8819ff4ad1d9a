"""The method registry: each published method registers one :class:`MethodSpec` subclass.

A method bundles a model builder (a plain ``nn.Module``), a training recipe (a LightningModule
class), its default config file under ``configs/`` and named profiles (``cpu``, ``paper``) that
override that config. ``defectkit methods`` lists what is registered.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from torch.utils.data import Sampler

    from defectkit.config import RunConfig
    from defectkit.inference.saved_model import Thresholds
    from defectkit.training.data import PreparedData

# Modules that register methods when imported; each method issue appends its module here.
METHOD_MODULES: tuple[str, ...] = (
    "defectkit.training.segdec",
    "defectkit.training.weak_lnet",
    "defectkit.training.classifier",
    "defectkit.training.scl_arcface",
    "defectkit.training.tlu_net",
    "defectkit.training.aux_net",
    "defectkit.training.sbad",
)


class MethodSpec:
    """Base class of a registered method. Subclasses fill the class attributes and ``build_model``."""

    name: ClassVar[str] = ""
    supervision: ClassVar[tuple[str, ...]] = ()
    tasks: ClassVar[tuple[str, ...]] = ()
    paper: ClassVar[str | None] = None
    default_config: ClassVar[str | None] = None  # configs/<method>/<dataset>.yaml, with its profiles
    model_name: ClassVar[str] = ""  # model family in defectkit.models
    # False: the method learns from image labels only; the data layer then hides every mask.
    uses_masks: ClassVar[bool] = True
    # True: ``train`` is the method's own (not the decision engine's), e.g. a reference database.
    own_training: ClassVar[bool] = False
    # True: ``weights`` (ImageNet weights for an encoder or backbone) is loaded; False: the
    # network always starts random, and a config naming weights is refused (check_config).
    pretrained_encoder: ClassVar[bool] = False
    # True: the model scores K defect classes independently (multi-label probabilities, per-class
    # heat maps); the image is defective when any class reaches its threshold (the decision
    # threshold, or a per-class one chosen on validation).
    multilabel: ClassVar[bool] = False

    @classmethod
    def check_config(cls, config: RunConfig) -> None:
        """Mistakes a config can hold that would otherwise show only once the data is read or the
        network built, or never: ``weights`` for a network that loads none (the model card would
        name weights that were never used), ``augment`` and ``model`` keys that are not taken.
        Methods check their ``method_options`` where they read them."""
        if config.weights and not cls.pretrained_encoder:
            raise ValueError(
                f"weights: {config.weights}: method {cls.name!r} loads no pretrained weights (its "
                "network starts random); remove the weights setting"
            )
        from pydantic import ValidationError

        from defectkit.config import validation_problems
        from defectkit.training.data import augment_config

        try:
            augment_config(config, train=True)
        except ValidationError as error:
            raise ValueError(validation_problems(error, "augment")) from None
        if not cls.own_training:
            from defectkit.models import check_model_options

            check_model_options(cls.model_name or cls.name, cls.model_options(config.model_dump(mode="json")))

    @classmethod
    def train(cls, config: RunConfig, out: str | Path, progress: bool = True) -> Path:
        """The method's own training, for methods whose output is not an OK/NG decision."""
        raise NotImplementedError(f"method {cls.name!r} trains with the decision engine")

    @classmethod
    def model_options(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Options of the model family from a resolved config: the input's channel count as
        ``in_channels``, then the ``model`` section."""
        return {"in_channels": config["input"]["channels"], **config.get("model", {})}

    @classmethod
    def build_model(cls, config: dict[str, Any]) -> Any:
        from defectkit.models import create_model

        return create_model(cls.model_name or cls.name, **cls.model_options(config))

    @classmethod
    def adapt_config(cls, config: RunConfig, data: PreparedData) -> RunConfig:
        """The config as trained and saved, once the training data is known (class count,
        normalisation statistics); unchanged by default."""
        return config

    @classmethod
    def fixed_thresholds(cls, config: RunConfig) -> Thresholds | None:
        """Thresholds the method fixes itself; ``None``: chosen on validation by the engine."""
        return None

    @classmethod
    def train_sampler(cls, labels: list[int | None], config: RunConfig) -> Sampler[int] | None:
        """The order training images are drawn in; ``None``: a plain shuffle each epoch."""
        return None

    @classmethod
    def build_recipe(cls, model: Any, config: dict[str, Any]) -> Any:
        """The LightningModule that trains ``model`` under ``config``."""
        raise NotImplementedError(f"method {cls.name!r} defines no training recipe")


@dataclass(frozen=True)
class MethodInfo:
    name: str
    tasks: tuple[str, ...]
    supervision: tuple[str, ...]
    profiles: tuple[str, ...]
    paper: str | None
    spec: type[MethodSpec]


_METHODS: dict[str, type[MethodSpec]] = {}
SpecT = TypeVar("SpecT", bound=type[MethodSpec])

SUPERVISION_LEVELS = ("zero-shot", "few-shot", "weak", "mixed", "full")


def check_option_names(method: str, given: Iterable[str], known: Iterable[str]) -> None:
    """A config's ``method_options`` keys that ``method`` does not know are an error: a misspelt
    option would otherwise train with its default unseen."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"{method}: unknown method_options {unknown}; known: {sorted(known)}")


def method_options(method: str, given: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``given`` (a config's ``method_options``), whose keys must be
    among the defaults' (:func:`check_option_names`)."""
    check_option_names(method, given, defaults)
    return {**defaults, **given}


def register_method(
    name: str, *, supervision: tuple[str, ...], tasks: tuple[str, ...], paper: str | None = None
) -> Callable[[SpecT], SpecT]:
    unknown = set(supervision) - set(SUPERVISION_LEVELS)
    if unknown:
        raise ValueError(
            f"method {name!r}: unknown supervision levels {sorted(unknown)}; use {SUPERVISION_LEVELS}"
        )

    def decorator(spec: SpecT) -> SpecT:
        if name in _METHODS and _METHODS[name] is not spec:
            raise ValueError(
                f"method {name!r} is registered twice ({_METHODS[name].__qualname__}, {spec.__qualname__})"
            )
        spec.name, spec.supervision, spec.tasks = name, supervision, tasks
        if paper is not None:
            spec.paper = paper
        _METHODS[name] = spec
        return spec

    return decorator


def _load_all() -> None:
    for module in METHOD_MODULES:
        importlib.import_module(module)


def list_methods() -> list[MethodInfo]:
    _load_all()
    return [
        MethodInfo(name, spec.tasks, spec.supervision, _profiles(spec), spec.paper, spec)
        for name, spec in sorted(_METHODS.items())
    ]


def _profiles(spec: type[MethodSpec]) -> tuple[str, ...]:
    if not spec.default_config:
        return ()
    from defectkit.config import config_profiles

    path = Path(__file__).resolve().parents[2] / spec.default_config
    return tuple(config_profiles(path)) if path.is_file() else ()


def get_method(name: str) -> type[MethodSpec]:
    _load_all()
    if name not in _METHODS:
        known = ", ".join(sorted(_METHODS)) or "none registered yet"
        raise KeyError(f"unknown method {name!r}; known methods: {known}")
    return _METHODS[name]
