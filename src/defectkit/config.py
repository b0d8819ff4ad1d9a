"""Training configs: YAML files validated by pydantic, with profiles and ``--set a.b=c`` overrides.

A config file (``configs/<method>/<dataset>.yaml``) holds the full settings of one method on one
dataset plus named ``profiles`` (``cpu``, ``paper``) that override parts of it. Resolution order:
file, then the chosen profile, then ``--set`` overrides. The resolved config is saved beside
every trained model, so a model always says exactly how it was made.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Supervision = Literal["weak", "mixed", "full"]


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the field."""


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str | None = Field(None, description="dataset folder ($VARS expanded); None with synthetic")
    format: str | None = Field(None, description="reader name; detected when omitted")
    synthetic: dict[str, Any] | None = Field(
        None, description="SynthConfig fields: generate the data instead"
    )
    train_split: str | None = Field("train", description="use only samples whose meta split is this, if any")
    surface: str | None = Field(
        None, description="use only this surface (one detector per surface, paper 002)"
    )
    surfaces: list[str] | None = Field(
        None, description="use only these surfaces (a line's seen surfaces, paper 002); None: all"
    )
    val_fraction: float = Field(
        0.2, gt=0, lt=1, description="share of training parts held out for validation"
    )
    split_seed: int = 0
    supervision: Supervision = "full"
    num_segmented: int | None = Field(None, ge=0, description="mixed: positives that keep their masks")
    train_positives: int | None = Field(
        None,
        ge=1,
        description="train on at most this many defective images (drawn with split_seed after the "
        "validation hold-out, which keeps its own); None: all",
    )
    train_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="train on this share of the training parts (grouped, stratified, drawn with "
        "split_seed after the validation hold-out, which keeps its size)",
    )
    masks_from_boxes: bool = Field(
        False,
        description="images with boxes but no mask get a coarse class-id mask with each box filled "
        "(NEU-DET for segmentation models)",
    )

    @model_validator(mode="after")
    def _source(self) -> DataConfig:
        if (self.root is None) == (self.synthetic is None):
            raise ValueError("give exactly one of data.root and data.synthetic")
        if self.supervision == "mixed" and self.num_segmented is None:
            raise ValueError("supervision 'mixed' needs data.num_segmented")
        if self.synthetic is not None:
            from dataclasses import fields

            from defectkit.data.synthetic import SynthConfig

            known = {f.name for f in fields(SynthConfig)}
            unknown = sorted(set(self.synthetic) - known)
            if unknown:
                raise ValueError(f"data.synthetic: unknown key(s) {unknown}; known: {sorted(known)}")
        return self

    def resolved_root(self) -> Path | None:
        return None if self.root is None else Path(os.path.expandvars(os.path.expanduser(self.root)))


class InputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: tuple[int, int] = Field(description="(height, width) of the network input")
    channels: int = Field(1, ge=1, le=3)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)


# Lightning's precision settings, checked when the config is read rather than after data preparation.
Precision = Literal[
    "32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true", "64-true", "64",
    "transformer-engine", "transformer-engine-float16",
]  # fmt: skip


class TrainerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("max_steps")
    @classmethod
    def _some_steps(cls, value: int) -> int:
        # 0 would save the untrained network as the model.
        if value == 0:
            raise ValueError("must be -1 (no limit) or at least 1")
        return value

    epochs: int = Field(50, ge=1)
    max_steps: int = Field(-1, ge=-1, description="stop after this many optimiser steps (-1: no limit)")
    batch_size: int = Field(1, ge=1)
    lr: float = Field(0.01, gt=0)
    momentum: float = 0.0
    weight_decay: float = 0.0
    val_every: int = Field(5, ge=1, description="validate every N epochs")
    early_stopping_patience: int | None = Field(
        None,
        description="validations without gain in the recipe's val/selection (AP for decision "
        "recipes, Dice for tlu_net); None: off",
    )
    restore_best: bool = Field(
        False,
        description="end with the weights of the best val/selection (AP for decision recipes, Dice "
        "for tlu_net; ties -> lower val loss), else the last epoch's",
    )
    gradient_clip_val: float | None = Field(None, description="clip the gradient norm; None: off")
    threshold_placement: Literal["score", "midpoint"] = Field(
        "midpoint",
        description="where the best-F1 decision threshold sits in its gap on validation scores "
        "(defectkit.metrics.best_f1_threshold)",
    )
    pixel_quantile: float = Field(
        1.0,
        gt=0,
        le=1,
        description="without validation masks: pixel threshold = this quantile of the good "
        "validation images' heat values",
    )
    num_workers: int = Field(0, ge=0)
    precision: Precision = "32-true"
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"


class RunConfig(BaseModel):
    """One training run, fully resolved."""

    model_config = ConfigDict(extra="forbid")

    method: str
    seed: int = 0
    data: DataConfig
    input: InputConfig
    augment: dict[str, Any] = Field(default_factory=dict, description="AugmentConfig fields for training")
    model: dict[str, Any] = Field(default_factory=dict, description="options of the model family")
    method_options: dict[str, Any] = Field(default_factory=dict, description="loss / sampling options")
    trainer: TrainerConfig = Field(default_factory=lambda: TrainerConfig())
    profile: str | None = None
    weights: str | None = Field(None, description="pretrained backbone weights file; None: random init")


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    keys = dotted.split(".")
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=c`` -> (``a.b``, YAML-parsed ``c``), so numbers, lists and booleans keep their type."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. trainer.epochs=10")
    if any(not part.strip() for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: an empty name between dots in {key.strip()!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_config(
    source: str | Path | dict[str, Any], profile: str | None = None, overrides: list[str] | None = None
) -> RunConfig:
    """Read a config file (or dict), apply ``profile`` then ``overrides``, and validate it."""
    where = str(source) if not isinstance(source, dict) else "<config>"
    if isinstance(source, dict):
        tree = copy.deepcopy(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        tree = read_yaml(path, ConfigError) or {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{where}: a config must be a mapping")
    if "profile" in tree:
        # The profile a run used is recorded by load_config itself: set by hand, it would name
        # settings the run never had.
        raise ConfigError(f"{where}: 'profile' is not a setting; choose a profile with --profile")
    profiles = tree.pop("profiles", {}) or {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"{where}: profiles must be a mapping of profile name to settings")
    if profile is not None:
        if profile not in profiles:
            raise ConfigError(f"{where}: no profile {profile!r}; profiles: {', '.join(profiles) or 'none'}")
        settings = profiles[profile] or {}  # a profile left empty changes nothing
        if not isinstance(settings, dict):
            raise ConfigError(f"{where}: profiles.{profile} must be a mapping of settings")
        tree = _merge(tree, settings)
        tree["profile"] = profile
    for text in overrides or []:
        key, value = parse_override(text)
        if key == "profile":
            raise ConfigError(f"--set {text}: 'profile' is not a setting; choose a profile with --profile")
        _set_path(tree, key, value)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(f"{where}: {validation_problems(error)}") from None


def yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML error on one line: what is wrong and where (line and column, 1-based), without
    PyYAML's multi-line excerpt and caret."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        return f"{where}{error.problem or error.context or 'not valid YAML'}"
    return " ".join(str(error).split())


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key repeated in one mapping: PyYAML keeps the last, so a
    second ``trainer:`` section would silently replace every setting of the first."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor`: keys written beside it override the merged ones by design
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the safe loader's own check names an unhashable key
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one section", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses a key repeated in one mapping (:class:`_UniqueKeyLoader`)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def read_yaml(path: Path, error: type[Exception]) -> Any:
    """``path``'s YAML, or ``error`` naming the file when it is not UTF-8 text or not YAML (a key
    repeated in one section counts as not YAML)."""
    try:
        return load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as problem:
        raise error(f"{path}: not valid YAML ({yaml_problem(problem)})") from None
    except UnicodeDecodeError as problem:
        raise error(f"{path}: not UTF-8 text ({problem.reason} at byte {problem.start})") from None


def validation_problems(error: ValidationError, section: str = "") -> str:
    """pydantic's error list on one line: ``field.path: message; ...`` (under ``section``)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in (section, *e['loc']) if p) or '(root)'}: {e['msg']}"
        for e in error.errors()
    )


def config_profiles(source: str | Path) -> list[str]:
    tree = yaml.safe_load(Path(source).read_text()) or {}
    return sorted((tree.get("profiles") or {}).keys())


# Fields added after benchmark cells were first committed (keys include a config fingerprint):
# left out of the fingerprint while they hold these defaults, so the cells of runs that never
# used them keep their keys across sessions.
LATER_DEFAULTS: dict[tuple[str, str], Any] = {
    ("data", "train_fraction"): 1.0,
    ("data", "masks_from_boxes"): False,
    ("data", "surfaces"): None,
    ("model", "image_score"): "classifier",  # aux_net
    ("model", "mask_guidance"): "none",  # aux_net
    # aux_net: an explicit constant rate or smooth L1 is what cells computed before these were named.
    # Only aux_net has these keys; a method adding them with other defaults needs its own rule here.
    ("method_options", "lr_schedule"): "constant",
    ("method_options", "box_loss"): "smooth_l1",
    ("model", "mask_bias"): False,  # segdec: cells before 2026-12-06 had no bias on the mask's norm
    ("method_options", "drop_last"): True,  # scl_arcface and its baselines
    ("method_options", "arc_init_std"): None,  # scl_arcface: the library's N(0, 1) centres
    ("method_options", "pair_loss"): "mean",  # weak_lnet: one update on the pair's mean loss
    ("method_options", "stage1_attempts"): 1,  # weak_lnet: the paper's single stage 1
}


def _method_option(dump: dict[str, Any], key: str, default: Any) -> Any:
    return dump.get("method_options", {}).get(key, default)


# Later fields that only act while a switch is on: left out of the fingerprint while it is off.
LATER_WHEN_ON: dict[tuple[str, str], Callable[[dict[str, Any]], bool]] = {
    ("method_options", "rotation_stages"): lambda dump: bool(_method_option(dump, "rotation", False)),
    # weak_lnet: attempts repeat stage 1, which runs only with lnet_trained; the bar judges them.
    ("method_options", "stage1_attempts"): lambda dump: bool(_method_option(dump, "lnet_trained", True)),
    ("method_options", "stage1_min_val_ap"): lambda dump: _method_option(dump, "stage1_attempts", 1) > 1,
}


def fingerprint_dump(config: RunConfig) -> dict[str, Any]:
    """The resolved config as JSON-ready data, without :data:`LATER_DEFAULTS` at their defaults
    nor :data:`LATER_WHEN_ON` fields whose switch is off."""
    dump = config.model_dump(mode="json")
    for (section, key), default in LATER_DEFAULTS.items():
        fields = dump.get(section, {})
        if key in fields and fields[key] == default:
            del fields[key]
    for (section, key), switched_on in LATER_WHEN_ON.items():
        if key in dump.get(section, {}) and not switched_on(dump):
            del dump[section][key]
    return dump


def config_fingerprint(config: RunConfig, **extra: Any) -> str:
    """A short, stable hash of the resolved config (and ``extra`` values) for benchmark cell keys."""
    payload = {"config": fingerprint_dump(config), **extra} if extra else fingerprint_dump(config)
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:10]
