"""``defectkit line train``: a surface router and one defect detector per seen surface (paper 002).

The line's training file (``configs/line/*.yaml``, :class:`LineTrainSpec`) names one dataset with
surface names (``data_root``), the router's training config (``sbad``) and the detectors' (any
method with an OK/NG decision; ``segdec`` is the paper's SBDD), each with optional ``set``
overrides; ``detector.per_surface`` adds overrides for named surfaces (``{Class3:
["input.size=[192,192]"]}``, or per profile ``{Class3: {cpu: [...]}}``). The same ``--profile``
applies to both. Seen surfaces are ``surfaces`` or, when it is omitted, every surface in the data's
train split; surfaces of the router's attribute table that have no images stay unseen-known (the
router can name them, no detector judges them).

Written under ``OUT``: ``router/model``, ``detectors/<surface>/model`` and ``line.yaml`` pointing
at them (relative paths, so the folder moves as one). A detector already saved is kept, so an
interrupted training resumes where it stopped (a kept router must have the same seen surfaces,
a kept detector the same input and network settings; for other changes, remove it to retrain).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from defectkit.config import ConfigError, RunConfig, load_config, read_yaml, validation_problems
from defectkit.files import writable_folder
from defectkit.inference.line import LineSpec, read_line_spec, write_line_spec
from defectkit.inference.saved_model import CARD_NAME, LINE_FILE, SavedModelError, read_card
from defectkit.registry import get_method

ROUTER_DIR = "router"
DETECTORS_DIR = "detectors"


class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: str = Field(description="training config file (relative to the line file)")
    set: list[str] = Field(default_factory=list, description="overrides a.b=c, as --set")


class DetectorStageSpec(StageSpec):
    """The detectors' stage: one config for every surface, plus overrides for some of them.

    ``per_surface`` maps a surface to overrides applied after ``set``: a list applies under every
    profile, a mapping profile -> list under that profile only (a 192 px input that helps a cpu
    detector would shrink the paper profile's 512). They may not touch ``data.*``: a surface's
    detector trains on that surface's images, whatever its overrides say.
    """

    # Surfaces differ: a weave with spots of a few pixels may need a larger input than a plain
    # sheet with long scratches, and training every detector at the larger size costs them all.
    per_surface: dict[str, list[str] | dict[str, list[str]]] = Field(
        default_factory=dict,
        description="per-surface overrides a.b=c after set: a list, or a mapping profile -> list",
    )

    @model_validator(mode="after")
    def _leave_data_alone(self) -> DetectorStageSpec:
        for surface, own in self.per_surface.items():
            lists = [own] if isinstance(own, list) else list(own.values())
            touched = [o for overrides in lists for o in overrides if o.strip().startswith("data.")]
            if touched:
                raise ValueError(f"detector.per_surface.{surface}: {touched} would change its data")
        return self

    def refuse_unknown(self, known: list[str], source: Path, lacking: str) -> None:
        """Refuse overrides for surfaces not in ``known``; ``lacking`` says what lacks them."""
        if missing := sorted(set(self.per_surface) - set(known)):
            raise ConfigError(
                f"{source}: detector.per_surface names {', '.join(missing)}, which {lacking} "
                f"(it has {', '.join(known)})"
            )

    def overrides(self, surface: str, profile: str | None) -> list[str]:
        """``surface``'s own overrides under ``profile``."""
        own = self.per_surface.get(surface, [])
        if isinstance(own, list):
            return list(own)
        return list(own.get(profile, [])) if profile is not None else []


class LineTrainSpec(BaseModel):
    """Contents of a line training file."""

    model_config = ConfigDict(extra="forbid")

    data_root: str = Field(description="dataset folder with surface names ($VARS expanded)")
    surfaces: list[str] | None = Field(
        None, min_length=1, description="seen surfaces; None: all in the train split"
    )
    router: StageSpec
    detector: DetectorStageSpec
    classifier: str | None = Field(
        None, description="saved defect-type classifier (optional; relative to this file's folder)"
    )
    attributes_top: int = Field(3, ge=1, description="attributes in words on an unknown")


def read_line_train_spec(path: str | Path) -> LineTrainSpec:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: line training file not found")
    try:
        return LineTrainSpec.model_validate(read_yaml(path, ConfigError))
    except ValidationError as error:
        raise ConfigError(f"{path}: {validation_problems(error)}") from None


def _config_path(config: str, base: Path) -> Path:
    """A stage's config file: relative paths from the line file's folder, whatever the cwd."""
    candidate = Path(config).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def setting(key: str, value: object) -> str:
    """``key=value`` for ``--set`` with ``value`` quoted (JSON is YAML), so a path or a surface
    name is read back as itself: ``#`` starts no comment, ``~`` is no null, ``1`` no number."""
    return f"{key}={json.dumps(value)}"


def stage_config(stage: StageSpec, base: Path, data_root: str, profile: str | None,
                 extra: list[str]) -> RunConfig:  # fmt: skip
    """A stage's run config on the line's data (generated-data settings in it are dropped)."""
    overrides = [*stage.set, setting("data.root", data_root), "data.synthetic=null", *extra]
    return load_config(_config_path(stage.config, base), profile, overrides)


def detector_config(spec: LineTrainSpec, base: Path, data_root: str, profile: str | None,
                    surface: str) -> RunConfig:  # fmt: skip
    """``surface``'s detector config: the stage's, on that surface, with its own overrides."""
    own = [setting("data.surface", surface), *spec.detector.overrides(surface, profile)]
    return stage_config(spec.detector, base, data_root, profile, own)


def line_surfaces(config: RunConfig) -> tuple[list[str], list[str]]:
    """The surfaces of the router's training data (after ``data.surfaces``), and every surface the
    data's train split has."""
    from defectkit.training.data import load_samples, of_surfaces

    samples, _ = load_samples(config)
    wanted = config.data.train_split
    if wanted is not None and any("split" in s.meta for s in samples):
        samples = [s for s in samples if s.meta.get("split") == wanted]
    seen = sorted({str(s.surface) for s in of_surfaces(samples, config) if s.surface})
    return seen, sorted({str(s.surface) for s in samples if s.surface})


def check_detector(model_dir: Path, config: RunConfig) -> None:
    """Refuse a kept detector whose input or network differs from what ``config`` now asks for."""
    trained = read_card(model_dir).config
    wanted = config.model_dump(mode="json")
    trained_on = (trained.get("data") or {}).get("surface")
    if trained_on and trained_on != config.data.surface:
        # A folder name that differs only in case is one folder on macOS and Windows.
        raise ConfigError(
            f"{model_dir}: a detector trained on surface {trained_on!r}, not {config.data.surface!r}; "
            "remove it to retrain"
        )
    changed = [k for k in ("input", "model") if trained.get(k) != wanted[k]]
    if trained and changed:
        raise ConfigError(
            f"{model_dir}: a detector trained with other {' and '.join(changed)} settings than the line "
            "file now gives; remove it to retrain"
        )


def train_line(
    spec_path: str | Path,
    out: str | Path,
    profile: str | None = None,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> Path:
    """Train the router, then each seen surface's detector; returns ``OUT`` (with ``line.yaml``)."""
    from defectkit.training.engine import train
    from defectkit.training.sbad import SBADOptions, sbad_options, train_router_model

    spec_path, out = Path(spec_path), Path(out)
    spec = read_line_train_spec(spec_path)
    base = spec_path.parent
    chosen = [setting("data.surfaces", list(spec.surfaces))] if spec.surfaces else []
    router_config = stage_config(spec.router, base, spec.data_root, profile, chosen)
    if router_config.method != "sbad":
        raise ConfigError(f"{spec.router.config}: the router must be method sbad, not {router_config.method}")
    surfaces, present = line_surfaces(router_config)
    say(f"seen surfaces ({len(surfaces)}): {', '.join(surfaces)}")
    spec.detector.refuse_unknown(present, spec_path, "the data has no images of")
    if unseen := sorted(set(spec.detector.per_surface) - set(surfaces)):
        say(f"detector.per_surface: no detector trains for {', '.join(unseen)} (unseen by this line)")
    # Every detector's config before any training, so a bad override fails in seconds, not hours.
    configs = {s: detector_config(spec, base, spec.data_root, profile, s) for s in surfaces}
    for config in configs.values():
        # Methods the decision engine trains choose an OK/NG threshold; the others (a defect-type
        # classifier, a router) give none, and a line would call every image of the surface defect.
        if get_method(config.method).own_training:
            raise ConfigError(
                f"{spec_path}: detector: method {config.method} gives no OK/NG decision; a detector "
                "needs one (segdec, weak_lnet, ...)"
            )
    existing = _existing_line(out)  # hand edits the training file does not contradict are kept
    classifier = _classifier_path(spec, spec_path, out, existing)
    writable_folder(out)  # before hours of training, not after them
    router_dir = out / ROUTER_DIR / "model"
    if (router_dir / CARD_NAME).is_file():
        card = read_card(router_dir)
        kept = card.surface_names[: int(card.model_options.get("n_seen", 0))]
        if kept != surfaces:
            raise ConfigError(
                f"{router_dir}: a router trained on {kept}, but the line now sees {surfaces}; "
                f"remove {out} (or choose another --out) to train a new line"
            )
        paper_score = SBADOptions.unseen_score  # what cards written before the option scored by
        kept_score = card.model_options.get("unseen_score", paper_score)
        wanted_score = sbad_options(dict(router_config.method_options)).unseen_score
        if kept_score != wanted_score:
            raise ConfigError(
                f"{router_dir}: a router scoring unseen surfaces by {kept_score!r}, but the config asks for "
                f"{wanted_score!r}; remove {out} (or choose another --out) to train a new line"
            )
        say(f"router: kept {router_dir}")
    else:
        say("router: training sbad")
        train_router_model(router_config, out / ROUTER_DIR, progress)
    detectors: dict[str, str] = {}
    for k, surface in enumerate(surfaces, start=1):
        target, config = out / DETECTORS_DIR / surface, configs[surface]
        if (target / "model" / CARD_NAME).is_file():
            check_detector(target / "model", config)
            say(f"detector {k}/{len(surfaces)} {surface}: kept {target / 'model'}")
        else:
            say(f"detector {k}/{len(surfaces)} {surface}: training {config.method}")
            train(config, target, progress=progress)
        detectors[surface] = str(Path(DETECTORS_DIR) / surface / "model")
    line = LineSpec(
        router=str(Path(ROUTER_DIR) / "model"),
        detectors=detectors,
        classifier=classifier,
        attributes_top=_attributes_top(spec, out, existing, say),
    )
    write_line_spec(out, line)
    return out


def _classifier_path(
    spec: LineTrainSpec, spec_path: Path, out: Path, existing: LineSpec | None
) -> str | None:
    """The defect-type classifier for ``line.yaml``: the training file's (relative to its folder,
    checked before any training; written relative to ``OUT``, so line and classifier move
    together), else the one a hand-edited ``OUT/line.yaml`` already names."""
    if spec.classifier is None:
        return existing.classifier if existing is not None else None
    path = Path(spec.classifier).expanduser()
    path = path if path.is_absolute() else spec_path.parent / path
    if not (path / CARD_NAME).is_file():
        raise ConfigError(f"{spec_path}: classifier: {path / CARD_NAME}: not found")
    return os.path.relpath(path.resolve(), out.resolve())


def _attributes_top(
    spec: LineTrainSpec, out: Path, existing: LineSpec | None, say: Callable[[str], None]
) -> int:
    """The training file's ``attributes_top`` when it gives one, else what ``OUT/line.yaml`` holds."""
    if "attributes_top" in spec.model_fields_set or existing is None:
        return spec.attributes_top
    if existing.attributes_top != spec.attributes_top:
        say(f"attributes_top: kept {existing.attributes_top} from {out / LINE_FILE}")
    return existing.attributes_top


def _existing_line(out: Path) -> LineSpec | None:
    """``OUT/line.yaml`` as a previous run (or a person) left it; None when absent or unreadable."""
    try:
        return read_line_spec(out) if (out / LINE_FILE).is_file() else None
    except SavedModelError:
        return None
