"""``tlu/<dataset>``: paper 001's transfer-learning study with ``tlu_net``.

Does an ImageNet-initialised encoder beat random initialisation for defect segmentation and
classification, and does the gain grow as labelled data shrinks? Every (encoder, init, fraction)
cell trains one model and scores it on held-out images:

* ``neu-det``, ``severstal``, ``synthetic-steel``: one grouped, label-stratified split 75 / 12.5 /
  12.5 % (seed 0; the paper's proportions). ``fraction`` keeps that share of the 75 % training
  part (grouped, stratified, seeded); validation and test stay whole, so every fraction is judged
  on the same test images.
* ``ksdd``: the 3-fold split by commutator of the other KolektorSDD protocols; within each
  training fold a grouped 20 % hold-out validates. Figures pool the three folds' test images.

Per cell (results file ``tlu-<dataset>-encoder-<e>_fraction-<f>_init-<i>[_<option>-<value>...]-
<profile>.json``): MLA at the stored class thresholds, mean per-class AUROC, per-class Dice / IoU,
``dice_pos``, image AP / AUROC of the model's image score (the best class probability, rescaled
where classes have their own thresholds), the arg-max accuracy where each image has one class, wall
time and inference ms per image. Per (encoder, fraction) with both inits done, a
``tlu/<dataset>/transfer`` record sets our ImageNet-minus-random gains beside the paper's claims
(ResNet: +5 % absolute MLA at 100 % data and +8 % at 50 %; Dice +26 % relative at 100 %, +12 % at
50 %; per-image Dice improved on 81 % of images). The comparison pairs the two runs' test images by
path; its Dice is the paper's per-image Dice (Fig. 4's box plots: an image's mean over the classes
it has, over all classes for a good image): ``dice_gain_rel`` is the relative gain of its mean,
``share_improved`` the share of images whose Dice rose (Fig. 9). Figures as the paper draws them go
to ``<work>/<name>/figures`` (``<work>/<name>-<set>/figures`` under ``--set``; not committed), drawn from the
cells the invocation ran; Fig. 8 draws every fold's training curve.

Cell keys hold the encoder, init, fraction, fold, fingerprints of the resolved config and
of the fold's image names, so a changed config or another copy of the data trains afresh. The
cell's own settings (``weights``, ``model.encoder``, ``data.train_fraction``, Adam's betas and
the threshold rule) cannot be set with ``--set``: use the ``--variant`` options.

Options (``--variant``): ``encoders`` (comma list; default the profile's: EfficientNet-Lite0 on
``cpu``, whose ImageNet weights are offline, ResNet-18 and DenseNet-121 on ``paper``), ``inits``
(``imagenet,random``), ``fractions`` (``1,0.5,0.25,0.1``), ``betas`` (``profile`` or ``paper``:
Adam's (0.99, 0.99) as printed), ``threshold`` (``paper``: 0.5 for every class, or
``validation``: one best-F1 threshold per class chosen on each fold's validation part, MLA judged
at those) and ``weights`` (ImageNet state-dict files for encoders without
packaged weights: ``PATH`` for all of them, or ``resnet18:PATH,densenet121:PATH``). Every
encoder name and weights file is checked before the first cell trains.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from defectkit.bench.grid import (
    GridDataset,
    fold_cells,
    fold_splits,
    summarise,
    train_and_score,
)
from defectkit.bench.ksdd import ksdd_samples
from defectkit.bench.protocols import (
    REPO_ROOT,
    BenchOptionError,
    BenchRequest,
    check_options,
    dataset_root,
    option_list,
    option_numbers,
    register_protocol,
)
from defectkit.bench.results import write_results
from defectkit.config import RunConfig, load_config
from defectkit.data.formats import read_dataset
from defectkit.data.io import with_box_masks
from defectkit.data.sample import DatasetInfo
from defectkit.data.synthetic import SynthConfig, synthetic_dataset
from defectkit.evaluation.multilabel import MultilabelScores, per_image_dice
from defectkit.evaluation.plots import (
    dice_difference_png,
    dice_iou_boxplot_png,
    mla_bars_png,
    validation_curves_png,
)
from defectkit.files import write_atomic
from defectkit.models.pretrained import PACKAGED
from defectkit.models.tlu_net import smp_encoder_name

SPLIT = (0.75, 0.125, 0.125)
SPLIT_SEED = 0
OPTIONS = ("encoders", "inits", "fractions", "betas", "threshold", "weights")
# Options that change every cell's config away from the profile's: option -> (default, the
# override of each other value). Set ones enter the variant, the cell cache's name and the results.
SETTINGS = {
    "betas": ("profile", {"paper": "method_options.betas=[0.99,0.99]"}),
    "threshold": ("paper", {"validation": "method_options.threshold=validation"}),
}
DEFAULT_ENCODERS = {"cpu": "tf_efficientnet_lite0", "paper": "resnet18,densenet121"}
# ImageNet weights that install offline, per encoder name (defectkit.models.pretrained.PACKAGED).
PACKAGED_ENCODER_WEIGHTS = {entry.architecture: name for name, entry in PACKAGED.items()}
# Config keys each cell sets itself; a --set of one would make the cell's key lie about its run.
CELL_KEYS = (
    "weights",
    "model.encoder",
    "data.train_fraction",
    "method_options.betas",
    "method_options.threshold",
)
# Paper 001's claims for its ResNet encoder (no table; the text of section III.D), by fraction.
PAPER_TRANSFER = {
    1.0: {"mla_gain": 0.05, "dice_gain_rel": 0.26, "share_improved": 0.81},
    0.5: {"mla_gain": 0.08, "dice_gain_rel": 0.12},
}


def load_tlu_dataset(name: str, profile: str = "cpu", overrides: Sequence[str] = ()) -> GridDataset:
    """Samples (masks where the data has them; NEU-DET's from its boxes) and names of a dataset;
    the generated one follows its config (``profile``, ``overrides``)."""
    config = f"configs/tlu_net/{name}.yaml"
    if name == "ksdd":
        samples = ksdd_samples()
        info = DatasetInfo(name="kolektorsdd", format="kolektorsdd", root="", class_names=["defect"])
        return GridDataset(name, "configs/tlu_net/kolektorsdd.yaml", samples, info)
    if name == "neu-det":
        dataset = read_dataset(dataset_root("neu-det"), "neu-det")
        samples = with_box_masks([s for s in dataset.samples if s.label is not None])
        return GridDataset(name, config, samples, dataset.info)
    if name == "severstal":
        dataset = read_dataset(dataset_root("severstal"), "severstal")
        return GridDataset(name, config, [s for s in dataset.samples if s.label is not None], dataset.info)
    if name == "synthetic-steel":
        synth = load_config(REPO_ROOT / config, profile, list(overrides)).data.synthetic or {}
        dataset = synthetic_dataset(SynthConfig(**synth))
        return GridDataset(name, config, list(dataset.samples), dataset.info)
    raise KeyError(f"unknown tlu dataset {name!r}; known: ksdd, neu-det, severstal, synthetic-steel")


def user_weights(option: str | None, encoders: Sequence[str]) -> dict[str, str]:
    """``--variant weights``: ``PATH`` (every encoder without packaged weights) or
    ``encoder:PATH,encoder:PATH``."""
    if not option:
        return {}
    if ":" not in option.split(",")[0] or option.startswith(("/", ".", "~", "$")):
        return {encoder: option for encoder in encoders if encoder not in PACKAGED_ENCODER_WEIGHTS}
    pairs = dict(item.split(":", 1) for item in option.split(",") if item)
    unknown = sorted(set(pairs) - set(encoders))
    if unknown:
        raise BenchOptionError(
            f"--variant weights names encoders {unknown} that are not in this grid {list(encoders)}"
        )
    return pairs


def encoder_weights(encoder: str, init: str, given: Mapping[str, str]) -> str | None:
    """The weights a cell starts from: None (random), the user's file, or the packaged ones."""
    if init == "random":
        return None
    if init != "imagenet":
        raise BenchOptionError(f"--variant inits: {init!r} is not imagenet or random")
    if encoder in given:
        return given[encoder]
    if encoder not in PACKAGED_ENCODER_WEIGHTS:
        raise BenchOptionError(
            f"encoder {encoder!r} has no ImageNet weights offline; give a state-dict file with "
            f"--variant weights={encoder}:PATH, or use one of {sorted(PACKAGED_ENCODER_WEIGHTS)}"
        )
    return PACKAGED_ENCODER_WEIGHTS[encoder]


def _config(dataset: GridDataset, request: BenchRequest, encoder: str, weights: str | None,
            fraction: float) -> RunConfig:  # fmt: skip
    overrides = [f"model.encoder={encoder}", f"data.train_fraction={fraction}"]
    overrides.append(f"weights={weights}" if weights else "weights=null")
    overrides += [SETTINGS[option][1][value] for option, value in settings_of(request).items()]
    # The cell's own settings come last: nothing a user sets may contradict the cell's key.
    return load_config(REPO_ROOT / dataset.config, request.profile, [*request.overrides, *overrides])


def settings_of(request: BenchRequest) -> dict[str, str]:
    """The :data:`SETTINGS` options this run sets away from their defaults (a usage error for an
    unknown value)."""
    chosen = {}
    for option, (default, overrides) in SETTINGS.items():
        value = str(request.variant.get(option, default))
        if value != default and value not in overrides:
            raise BenchOptionError(f"--variant {option}={value}: use {default} or {' or '.join(overrides)}")
        if value != default:
            chosen[option] = value
    return chosen


def _check_grid(request: BenchRequest, encoders: Sequence[str], inits: Sequence[str]) -> dict[str, str]:
    """Fail before the first cell trains: unknown encoders, missing weights, conflicting --set."""
    import segmentation_models_pytorch as smp
    import timm

    known = set(smp.encoders.get_encoder_names())

    def exists(name: str) -> bool:  # "tu-<arch>": any timm architecture, wrapped by smp
        return name in known or (name.startswith("tu-") and timm.is_model(name.removeprefix("tu-")))

    unknown = [e for e in encoders if not exists(smp_encoder_name(e))]
    if unknown:
        raise BenchOptionError(f"--variant encoders: {unknown} are not segmentation_models_pytorch encoders")
    clashes = [o for o in request.overrides if o.split("=", 1)[0].strip() in CELL_KEYS]
    if clashes:
        raise BenchOptionError(
            f"--set {clashes}: each cell sets {list(CELL_KEYS)}; use --variant encoders/weights/fractions"
        )
    given = user_weights(request.variant.get("weights"), encoders)
    for encoder in encoders:
        for init in inits:
            encoder_weights(encoder, init, given)
    return given


def run_tlu(dataset_name: str, request: BenchRequest) -> Path:
    check_options(request.variant, OPTIONS, f"tlu/{dataset_name}")
    options = request.variant
    encoders = option_list(
        options, "encoders", DEFAULT_ENCODERS.get(request.profile, "tf_efficientnet_lite0")
    )
    inits = option_list(options, "inits", "imagenet,random")
    fractions = option_numbers(options, "fractions", "1,0.5,0.25,0.1", float)
    settings = settings_of(request)
    given = _check_grid(request, encoders, inits)
    dataset = load_tlu_dataset(dataset_name, request.profile, request.overrides)
    splits = fold_splits(dataset, SPLIT, SPLIT_SEED)
    protocol = f"tlu/{dataset_name}"
    name = "-".join([protocol.replace("/", "-"), *(f"{k}-{v}" for k, v in settings.items())])
    cache = request.cells(f"{name}-{request.profile}")
    work_root = request.work_folder(f"{name}-{request.profile}")
    finished: dict[tuple[str, str, float], dict[str, Any]] = {}
    last: Path | None = None
    for encoder in encoders:
        for fraction in fractions:
            for init in inits:
                config = _config(dataset, request, encoder, encoder_weights(encoder, init, given), fraction)
                prefix = f"{encoder}/{init}/fraction-{fraction:g}/"
                stem = work_root / f"{encoder}-{init}-f{fraction:g}"
                cells = fold_cells(
                    cache, dataset, config, splits, prefix, stem, partial(train_and_score, config, request)
                )
                record = summarise(cells)
                finished[(encoder, init, fraction)] = record
                variant: dict[str, Any] = {
                    "encoder": encoder,
                    "init": init,
                    "fraction": fraction,
                    **settings,
                    **request.set_variant(),
                }
                last = write_results(
                    protocol=protocol,
                    method="tlu_net",
                    dataset=dataset.info.name,
                    variant=variant,
                    profile=request.profile,
                    metrics=record["metrics"],
                    per_fold=record["per_fold"],
                    n_images=len(record["scores"].paths),
                    wall_time_s=sum(c["wall_s"] for c in cells),
                    infer_ms_per_image=float(np.mean([c["infer_ms"] for c in cells if c["infer_ms"]])),
                    command=request.command,
                    cells=cells,
                    init="random" if init == "random" else str(config.weights),
                    notes=_notes(dataset_name, config),
                    root=request.results_root,
                )
    for encoder in encoders:
        gains = {}
        for fraction in sorted(fractions, reverse=True):
            imagenet, random = (
                finished.get((encoder, "imagenet", fraction)),
                finished.get((encoder, "random", fraction)),
            )
            if imagenet is None or random is None:
                continue
            gains[fraction] = transfer_metrics(imagenet, random)
            verdict = transfer_verdict(gains, fraction)
            last = _write_transfer(protocol, dataset, request, encoder, fraction, (imagenet, random),
                                   gains[fraction], settings, verdict)  # fmt: skip
    # A --set experiment's work folder, figures included, is its own (BenchRequest.work_folder).
    _figures(finished, work_root / "figures", dataset_name)
    assert last is not None, "no cell ran"
    return last


def _notes(dataset_name: str, config: RunConfig) -> str:
    notes = [f"input {config.input.size[0]}x{config.input.size[1]}, {config.trainer.epochs} epochs max"]
    notes.append(f"Adam betas {tuple(config.method_options.get('betas', (0.99, 0.99)))}")
    if config.model.get("classifier_pooling", "avg") != "avg":
        notes.append(f"classification head {config.model['classifier_pooling']}-pools the bottleneck")
    if dataset_name == "neu-det":
        notes.append("masks are NEU-DET's boxes filled (coarse): Dice measures box overlap")
    validation = config.method_options.get("threshold") == "validation"
    if validation:
        notes.append("MLA at one best-F1 threshold per class, chosen on each fold's validation part")
    if dataset_name == "ksdd":
        notes.append("3-fold CV by commutator, figures pooled over folds; AP from the classification head")
        if not validation:
            # Most KSDD images are good: MLA at 0.5 is high for a model that calls nothing defective.
            notes.append(
                "MLA at the 0.5 threshold: calling every image good scores the good share (about 0.87)"
            )
    return "; ".join(notes)


def paired_dice(first: MultilabelScores, second: MultilabelScores) -> tuple[np.ndarray, np.ndarray]:
    """Per-image Dice of two runs on the same test images, row for row (matched by path)."""
    if set(first.paths) != set(second.paths):
        only = sorted(set(first.paths) ^ set(second.paths))
        raise ValueError(f"the two runs were tested on different images ({len(only)} differ, e.g. {only[0]})")
    row = {path: index for index, path in enumerate(second.paths)}
    order = np.asarray([row[path] for path in first.paths], dtype=np.int64)
    return per_image_dice(first), per_image_dice(second)[order]


def transfer_metrics(imagenet: Mapping[str, Any], random: Mapping[str, Any]) -> dict[str, Any]:
    """ImageNet-minus-random gains of one (encoder, fraction) on the same test images."""
    ours, theirs = imagenet["metrics"], random["metrics"]
    dice_ours, dice_theirs = paired_dice(imagenet["scores"], random["scores"])
    difference = dice_ours - dice_theirs
    known = ~np.isnan(difference)
    metrics = {
        "mla_gain": ours["mla"] - theirs["mla"],
        "mean_auroc_gain": ours["mean_auroc"] - theirs["mean_auroc"],
        "dice_gain_rel": float(np.nanmean(dice_ours) / np.nanmean(dice_theirs) - 1.0),
        "dice_pos_gain_rel": ours["dice_pos"] / theirs["dice_pos"] - 1.0 if theirs["dice_pos"] else None,
        "share_improved": float(np.mean(difference[known] > 0)) if known.any() else None,
        "share_worse": float(np.mean(difference[known] < 0)) if known.any() else None,
        "mla_imagenet": ours["mla"],
        "mla_random": theirs["mla"],
    }
    if "accuracy" in ours:
        metrics["accuracy_gain"] = ours["accuracy"] - theirs["accuracy"]
    if "ap" in ours and ours["ap"] is not None and theirs.get("ap") is not None:
        metrics["ap_gain"] = ours["ap"] - theirs["ap"]
    return metrics


def transfer_verdict(gains: Mapping[float, Mapping[str, Any]], fraction: float) -> str:
    """The paper's claims checked in words: does ImageNet beat random here, and is the gap wider
    than with all the training data?

    Image AP is named beside MLA where both runs have it (one-class data such as KSDD): there MLA
    at the 0.5 threshold rewards a model that calls every image good, so AP is the fairer gap.
    """
    here = gains[fraction]

    def sign(value: float) -> str:
        return "beats" if value > 0 else ("ties" if value == 0 else "loses to")

    measures = [("MLA", "mla_gain", "+.4f")]
    if here.get("ap_gain") is not None:
        measures.append(("image AP", "ap_gain", "+.4f"))
    measures.append(("per-image Dice", "dice_gain_rel", "+.1%"))
    clauses = [
        f"{sign(here[key])} {'random' if index == 0 else 'it'} in {name} ({here[key]:{spec}})"
        for index, (name, key, spec) in enumerate(measures)
    ]
    words = "ImageNet " + ", ".join(clauses[:-1]) + " and " + clauses[-1]
    full = gains.get(1.0)
    if full is not None and fraction < 1.0:
        grows = [name for name, key, _ in measures if full.get(key) is not None and here[key] > full[key]]
        words += (
            f"; versus 100 % of the data the gap grows in {' and '.join(grows)}"
            if grows
            else "; the gap does not grow versus 100 % of the data"
        )
    return words


def _write_transfer(protocol: str, dataset: GridDataset, request: BenchRequest, encoder: str, fraction: float,
                    pair: tuple[Mapping[str, Any], Mapping[str, Any]], metrics: Mapping[str, Any],
                    settings: Mapping[str, str], verdict: str) -> Path:  # fmt: skip
    """One ``tlu/<dataset>/transfer`` record: the gains beside the paper's claims."""
    variant: dict[str, Any] = {"encoder": encoder, "fraction": fraction, **settings, **request.set_variant()}
    paper = PAPER_TRANSFER.get(fraction, {}) if encoder.startswith("resnet") else {}
    return write_results(
        protocol=f"{protocol}/transfer",
        method="tlu_net",
        dataset=dataset.info.name,
        variant=variant,
        profile=request.profile,
        metrics=dict(metrics),
        n_images=len(pair[0]["scores"].paths),
        paper=paper,
        wall_time_s=sum(c["wall_s"] for run in pair for c in run["cells"]),
        command=request.command,
        cells=[c for run in pair for c in run["cells"]],
        notes=f"{verdict}. Imagenet minus random on the same test images; the paper's figures are for "
        "its ResNet (ResNet-18-sized) encoder" + ("" if paper else ", none for this encoder / fraction"),
        root=request.results_root,
    )


def _figures(finished: Mapping[tuple[str, str, float], Mapping[str, Any]], out: Path, title: str) -> None:
    """The paper's Figs. 4, 5, 8 and 9 for the finished cells (PNG files under ``out``)."""
    if not finished:
        return
    out.mkdir(parents=True, exist_ok=True)
    label = {key: f"{key[0]} {key[1]} {key[2]:g}" for key in finished}
    dice = {label[k]: per_image_dice(v["scores"]) for k, v in sorted(finished.items())}
    iou = {}
    for key, value in sorted(finished.items()):
        scores = value["scores"]
        iou_scores = MultilabelScores(scores.class_names, scores.paths, truth=scores.truth, dice=scores.iou)
        iou[label[key]] = per_image_dice(iou_scores)
    write_atomic(out / "fig4_dice_iou_box.png", dice_iou_boxplot_png(dice, iou, title))
    mla = {(k[0], k[1], k[2]): float(v["metrics"]["mla"]) for k, v in finished.items()}
    write_atomic(out / "fig5_mla_bars.png", mla_bars_png(mla, title))
    curves = {label[k]: [cell["curve"] for cell in v["cells"]] for k, v in sorted(finished.items())}
    write_atomic(out / "fig8_validation_curves.png", validation_curves_png(curves, title))
    for encoder, init, fraction in finished:
        if init != "imagenet" or (encoder, "random", fraction) not in finished:
            continue
        ours, theirs = paired_dice(
            finished[(encoder, "imagenet", fraction)]["scores"],
            finished[(encoder, "random", fraction)]["scores"],
        )
        png = dice_difference_png(ours - theirs, f"{title}: {encoder}, {fraction:.0%} of the training data")
        write_atomic(out / f"fig9_dice_difference_{encoder}_f{fraction:g}.png", png)


def _register(dataset_name: str, description: str) -> None:
    register_protocol(f"tlu/{dataset_name}", description)(lambda request: run_tlu(dataset_name, request))


_register(
    "neu-det", "tlu_net on NEU-DET (6 classes, masks from boxes): ImageNet vs random by fraction (paper 001)"
)
_register("ksdd", "tlu_net on KolektorSDD, 3-fold CV: ImageNet vs random by training fraction (paper 001)")
_register("severstal", "tlu_net on Severstal (4 classes, multi-label) when a copy is present (paper 001)")
_register("synthetic-steel", "tlu_net on generated Severstal-like multi-class strips (paper 001)")
