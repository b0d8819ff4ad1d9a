"""``dagm-mix/line``: paper 002's whole cascade on generated DAGM_MIX, measured end to end.

The paper reports its router (SBAD) and its detectors (SBDD) apart; this protocol runs them as a
line (:mod:`defectkit.inference.line`) over every test image: seen surfaces' good and defective
test images and every image of the unseen surfaces. The line is ``configs/line/dagm-mix.yaml``
(the same file ``defectkit line train`` reads), at the requested profile:

1. DAGM_MIX is written once to the work folder in DAGM layout (the router config's
   ``data.synthetic``: 10 surfaces x 800 images, half defective, a quarter in Test/).
2. Router features (the frozen backbone), once for every split.
3. Per split (:func:`~defectkit.bench.dagm_mix.mix_split`, as ``dagm-mix/sbad``): SBAD trained on the
   8 seen surfaces' training images, its unknown threshold on their validation images; every test
   image routed (a surface, or unknown).
4. One detector per surface (10 ``segdec`` models, data.surface = that surface, with the line
   file's ``detector.per_surface`` overrides; a detector does not depend on which other surfaces
   are unseen, so each trains once and serves every split in which its surface is seen; its cell
   and folder are keyed by its own config, so surfaces trained alike share a key). It scores its
   own test split (its AP), then every image any split's router sent it (a separate cell, so new
   routes rescore with the saved model rather than retrain it); nothing else: what a line would
   ask of it.
5. Each test image judged by :func:`~defectkit.inference.line.cascade_verdict`.

The wall time is the whole protocol's but writing the generated images: features, routers (fit and
routing), detectors (training and scoring).

Figures per split, then mean and std over splits: ``routing_accuracy`` (seen test images sent to
their own surface's detector, no alert), ``detection_rate`` (seen defective images called defect),
``escape_rate`` (seen defective images called ok), ``false_alarm_rate`` (seen good images not
passed as ok: called defect or unknown), ``false_defect_rate`` (seen good images called defect),
``unseen_alert_rate`` (unseen images called unknown), ``alert_auroc`` (the unseen score, seen
against unseen test images), the verdict confusion matrix (rows: seen good, seen defective,
unseen; columns: ok, defect, unknown). Each detector's test AP (NaN for a surface whose test
split holds one class), their minimum, beside the paper's 0.99, and their mean, both over the
surfaces that have one.

``products/line`` (:func:`run_products`) is the router alone on five real products (KolektorSDD,
NEU-CLS, X-SDD, ELPV mono and poly), each left out once: the unseen alert's AUROC beside the
issue's 0.95 (``-V per_surface=N`` images drawn per product). No detectors follow it: NEU-CLS and
X-SDD are defect-type datasets, every image defective, so two of the five surfaces have no good
images to train or measure an ok / defect detector on (:data:`PRODUCTS_ROUTER_ONLY_NOTE`); the
cascade's figures come from ``dagm-mix/line``, and KolektorSDD's detectors from ``ksdd/...``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from defectkit.bench.dagm_mix import (
    NAMED_KEYS,
    MixFeatures,
    fingerprint,
    mean_and_std,
    mix_notes,
    mix_split,
    mix_variant,
    score_variant,
)
from defectkit.bench.protocols import (
    REPO_ROOT,
    BenchRequest,
    check_options,
    option_number,
    register_protocol,
)
from defectkit.bench.results import CellCache, write_results
from defectkit.config import RunConfig, load_config
from defectkit.data.attributes import table1_attributes
from defectkit.data.formats import read_dataset
from defectkit.data.io import read_image
from defectkit.data.sample import Sample
from defectkit.data.synthetic import SynthConfig, generate, surface_names
from defectkit.evaluation.line import ROWS, VERDICTS, cascade_figures
from defectkit.inference.inspector import Inspector, load_inspector
from defectkit.inference.line import cascade_verdict
from defectkit.inference.saved_model import CARD_NAME, InputSpec
from defectkit.metrics.image import auroc, average_precision
from defectkit.models.sbad import FeatureBackbone
from defectkit.training.engine import train
from defectkit.training.line import detector_config, read_line_train_spec, stage_config
from defectkit.training.sbad import (
    RouterSetup,
    SurfaceFeatures,
    backbone_features,
    feature_backbone,
    fit_router,
    pooling_setting,
    router_input,
    sbad_options,
)

LINE_CONFIG = "configs/line/dagm-mix.yaml"
OPTIONS = ("splits",)
PAPER = {"detector_ap_min": 0.99}  # the paper's SBDD on DAGM; it reports no cascade figures
# What has been tried against the detectors' shortfall (the issue's AP >= 0.99 on every surface).
LINE_TRIED_CPU = (
    "; tried against the detectors' AP shortfall: batch 1 at lr 0.05 (the demo's: the validation "
    "loss spiked and test AP fell to 0.92 on the weak surfaces) and batch 1 at lr 0.01 (as stable as "
    "batch 8, 1.75x slower); batch 8 kept. The surfaces below 0.99 hold the smallest defects (Class3: "
    "spots of a few pixels on a weave; Class8: faint dents), which 128 px halves: Class3 at the generated "
    "256 px reached validation AP 0.990 against 0.984, but at about an hour a surface on 2 cores, ten "
    "detectors would not fit the protocol's 60 minutes (configs/line/dagm-mix.yaml). segdec's mask "
    "bias (model.mask_bias, on since 2026-12-06) raised Class3 from 0.973 to 0.986 and Class8 from "
    "0.981 to 0.985, the others 0.999-1.0 as before. This row's detectors trained on a slower 2-core "
    "machine (850-990 s a surface against 181-236 s for the row before, 50.2 min in all). Class3 and "
    "Class8 at 192 px (detector.per_surface, 2026-12-07; the generated images are 128 px, so a finer "
    "grid, not more pixels), to be kept only if their validation AP rose: it fell (0.977 against "
    "0.987, 0.982 against 0.994; test 0.981 and 0.966), so both stay at 128 px. The same two at the "
    "segdec paper's 70 DAGM epochs, on the same rule: validation AP 0.983 against 0.987 and 0.9940 "
    "against 0.9943 (test 0.987 and 0.989), so both stay at 30"
)

# Bump when code changes what a cell would hold (the line's and the products' cells apart).
CELL_VERSION = 2  # 2: routes first; detectors score only their own test split and what is routed to them
PRODUCTS_CELL_VERSION = 1


def mix_on_disk(synth: SynthConfig, root: Path, progress: bool) -> list[Sample]:
    """DAGM_MIX written once under ``root`` (a marker file records the generator settings)."""
    marker = root / "generated.json"
    wanted = json.dumps(synth.settings(), sort_keys=True)
    if not marker.is_file() or marker.read_text() != wanted:
        bar = tqdm(total=synth.surfaces * synth.per_surface, desc="DAGM_MIX", disable=not progress)
        generate(root, synth, progress=lambda done, total: bar.update(done - bar.n))
        bar.close()
        marker.write_text(wanted)
    samples = read_dataset(root, "dagm").samples
    return sorted((s for s in samples if s.label is not None), key=lambda s: s.path)


def _image_key(sample: Sample, root: Path) -> str:
    return str(Path(sample.path).relative_to(root))


def cached_features(samples: Sequence[Sample], backbone: FeatureBackbone, spec: InputSpec, cache: Path,
                    request: BenchRequest, cells: CellCache) -> tuple[np.ndarray, float]:  # fmt: skip
    """The backbone's features of ``samples`` (read from ``cache`` when there) and the seconds they
    took to compute; a cache file whose time no cell recorded is computed again, so the protocol's
    wall time is whole. A cells-only run computes no cell, and only cells read the features: it
    gets the committed time and, without the file, a feature-less array of the right length."""
    key = f"features/{cache.stem}"
    timed = cells.get(key)
    if cache.is_file() and timed is not None:
        loaded: np.ndarray = np.load(cache)
        return loaded, float(timed["seconds"])
    if cells.cells_only:
        if timed is None:
            raise cells.missing(key)
        return np.zeros((len(samples), 0), dtype=np.float32), float(timed["seconds"])
    started = time.perf_counter()
    images = (read_image(s.path) for s in tqdm(samples, desc="features", disable=not request.progress))
    features = backbone_features(backbone, spec, images)
    seconds = time.perf_counter() - started
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, features)
    cells.put(key, {"seconds": seconds, "images": len(samples)})
    return features, seconds


def own_test(samples: Sequence[Sample], surface: str) -> list[int]:
    return [i for i, s in enumerate(samples) if s.surface == surface and s.meta.get("split") == "test"]


def score_images(inspector: Inspector, samples: Sequence[Sample], indices: Sequence[int], desc: str,
                 request: BenchRequest) -> tuple[dict[int, float], float]:  # fmt: skip
    """A detector's scores of ``samples[indices]`` and the seconds they took."""
    started = time.perf_counter()
    scores: dict[int, float] = {}
    for k in tqdm(range(0, len(indices), 64), desc=desc, disable=not request.progress):
        chunk = list(indices[k : k + 64])
        judged = inspector.score_batch([read_image(samples[i].path) for i in chunk])
        scores.update({i: float(scored.score) for i, scored in zip(chunk, judged, strict=True)})
    return scores, time.perf_counter() - started


def rounded(scores: dict[int, float]) -> dict[str, float]:
    return {str(i): round(v, 5) for i, v in scores.items()}


def detector_cell(config: Any, work: Path, samples: list[Sample], surface: str, request: BenchRequest
                  ) -> dict[str, Any]:  # fmt: skip
    """Train ``surface``'s detector and score its own test split (its AP, from unrounded scores)."""
    started = time.perf_counter()
    model_dir = train(config, work, progress=request.progress)
    assert model_dir is not None
    train_s = time.perf_counter() - started
    inspector = load_inspector(model_dir)
    own = own_test(samples, surface)
    scores, score_s = score_images(inspector, samples, own, f"{surface} detector", request)
    truth = [int(samples[i].label or 0) for i in own]
    return {
        "surface": surface,
        "train_s": train_s,
        "score_s": score_s,
        "threshold": inspector.threshold,
        "validation": inspector.card.validation_metrics,
        "test_ap": average_precision(truth, [scores[i] for i in own]),
        "test_images": len(own),
        "scores": rounded(scores),
    }


def run_line(request: BenchRequest) -> Path:
    protocol = "dagm-mix/line"
    check_options(request.variant, OPTIONS, protocol)
    n_splits = option_number(request.variant, "splits", "5", int)
    spec_path = REPO_ROOT / LINE_CONFIG
    spec = read_line_train_spec(spec_path)
    router_path = spec_path.parent / spec.router.config
    router_config = load_config(router_path, request.profile, [*spec.router.set, *request.overrides])
    synth = SynthConfig(**(router_config.data.synthetic or {}))
    name = f"dagm-mix-line-{request.profile}"
    work = request.work_folder(name, exclude=NAMED_KEYS)
    root = work / "data"
    surfaces = surface_names(synth)  # the generator's order, so split k leaves out dagm-mix/sbad's pair
    # Every detector's config first, so a bad per-surface override fails before any work.
    spec.detector.refuse_unknown(surfaces, spec_path, "DAGM_MIX does not have")
    detector_configs = {
        s: detector_config(spec, spec_path.parent, str(root), request.profile, s) for s in surfaces
    }
    detector_trainer = stage_config(spec.detector, spec_path.parent, str(root), request.profile, []).trainer
    samples = mix_on_disk(synth, root, request.progress)
    keys = [_image_key(s, root) for s in samples]
    data_key = fingerprint([synth.settings(), keys])
    cache = request.cells(name)

    # Router features (frozen backbone), once.
    backbone_name = str(router_config.model.get("backbone", "tf_efficientnet_lite0"))
    spec_input = router_input(router_config)
    backbone = feature_backbone(router_config)
    feature_key = fingerprint(
        [
            data_key,
            backbone_name,
            router_config.weights,
            spec_input.model_dump(),
            *pooling_setting(backbone.pooling).values(),
        ]
    )
    features, features_s = cached_features(
        samples, backbone, spec_input, work / f"features-{feature_key}.npy", request, cache
    )
    index = {s: k for k, s in enumerate(surfaces)}
    mix = MixFeatures(
        features,
        np.asarray([index[str(s.surface)] for s in samples]),
        np.asarray([s.meta.get("split") == "train" for s in samples]),
        np.asarray([int(s.label or 0) for s in samples]),
        surfaces,
    )
    options = sbad_options(dict(router_config.method_options), seed=router_config.seed)
    setup = RouterSetup(table1_attributes(synth), backbone, backbone_name, options)
    line_key = fingerprint([router_config.model_dump(exclude={"profile"}), data_key, CELL_VERSION])

    # Routers, one per split: where each test image goes.
    routes = []
    for split in range(n_splits):
        key = f"route/split{split}/config-{line_key}"
        compute = partial(route_cell, mix, split, router_config.data.val_fraction, setup, request)
        routes.append(cache.get_or_compute(key, compute))

    # Detectors, one per surface, scoring their own test split and what the routers sent them.
    asked: dict[str, set[int]] = {}  # per surface: the test images some router sent it, no alert
    for route in routes:
        for image, call, unknown in route_calls(route):
            if not unknown:
                asked.setdefault(call, set()).add(image)
    detectors: dict[str, dict[str, Any]] = {}
    for surface in surfaces:
        detector_key = detector_config_key(detector_configs[surface], data_key)
        trained_key = f"detector/{surface}/config-{detector_key}"
        # One folder per config: routed_cell scores with the model it finds there.
        work_dir = work / "detectors" / f"{surface}-{detector_key}"
        config = detector_configs[surface]
        train_detector = partial(detector_cell, config, work_dir, samples, surface, request)
        routed = sorted(asked.get(surface, set()))
        routed_key = f"routed/{surface}/config-{detector_key}-images-{fingerprint(routed)}"
        score_routed = partial(
            routed_cell, cache, trained_key, train_detector, work_dir, samples, routed, surface, request
        )
        extra = cache.get_or_compute(routed_key, score_routed)
        # After the routed scores: routed_cell trains the detector first, or again when its model
        # is not on this machine, replacing its cell.
        trained = cache.get_or_compute(trained_key, train_detector)
        detectors[surface] = {
            **trained,
            "scores": {**trained["scores"], **extra["scores"]},
            "score_s": trained["score_s"] + extra["score_s"],
        }

    cells = [judge_split(mix, route, detectors) for route in routes]
    metrics = mean_and_std([c["metrics"] for c in cells], omit_nan=True)
    metrics["confusion"] = {
        "rows": list(ROWS),
        "columns": list(VERDICTS),
        "counts": np.sum([c["metrics"]["confusion"] for c in cells], axis=0).tolist(),
    }
    # A surface whose test split holds one class has no AP: NaN (null in its cell), shown in
    # detector_ap and left out of the minimum and mean, which cover the surfaces that have one.
    aps = {s: float("nan") if d["test_ap"] is None else float(d["test_ap"]) for s, d in detectors.items()}
    measured = [ap for ap in aps.values() if not np.isnan(ap)]
    metrics["detector_ap"] = aps
    metrics["detector_ap_min"] = min(measured, default=float("nan"))
    metrics["detector_ap_mean"] = float(np.mean(measured)) if measured else float("nan")
    return write_results(
        protocol=protocol,
        method="sbad+segdec",
        dataset="dagm-mix (generated)",
        variant={
            "ce": options.ce,
            "generator": f"vaegan-{options.attribute_loss}",
            "splits": n_splits,
            **mix_variant(synth),
            **pooling_setting(backbone.pooling),
            **score_variant(options),
            # Other --set options name their own row (as dagm-mix/sbad's do), never the profile's.
            **request.set_variant(exclude=NAMED_KEYS),
        },
        profile=request.profile,
        metrics=metrics,
        per_fold=[
            {"fold": k, **{x: c[x] for x in ("seen", "unseen", "train_s")}, "metrics": c["metrics"]}
            for k, c in enumerate(cells)
        ],
        n_images=len(samples),
        paper=PAPER,
        wall_time_s=features_s
        + sum(r["train_s"] for r in routes)
        + sum(d["train_s"] + d["score_s"] for d in detectors.values()),
        command=request.command,
        cells=[*routes, *detectors.values()],
        init=str(router_config.weights) if router_config.weights else "random",
        notes=(
            f"{LINE_CONFIG}: sbad router ({backbone_name} frozen, {options.gan_epochs} VAEGAN epochs) + one "
            f"segdec per surface (batch {detector_trainer.batch_size}, {detector_trainer.epochs} epochs"
            + "".join(
                f"; {name}: {', '.join(own)}"
                for name in sorted(spec.detector.per_surface)
                if (own := spec.detector.overrides(name, request.profile))
            )
            + "); "
            f"totals over {n_splits} seen / unseen splits (confusion summed); detectors trained once per "
            "surface; wall time: features, routers, detectors (training and scoring)"
            + mix_notes(synth)
            # What was tried concerns the shipped DAGM_MIX's detectors, not another build of it.
            + (LINE_TRIED_CPU if request.profile == "cpu" and not mix_variant(synth) else "")
        ),
        root=request.results_root,
    )


def detector_config_key(config: RunConfig, data_key: str) -> str:
    """A detector cell's config key: everything but the data root (the same images wherever they
    lie) and the surface (its cell's key names it), so surfaces trained alike share one key."""
    settings = config.model_dump(mode="json")
    settings["data"] = {k: v for k, v in settings["data"].items() if k not in ("root", "surface")}
    return fingerprint([settings, data_key, CELL_VERSION])


def routed_cell(
    cache: CellCache,
    trained_key: str,
    train_detector: Callable[[], dict[str, Any]],
    work_dir: Path,
    samples: list[Sample],
    routed: Sequence[int],
    surface: str,
    request: BenchRequest,
) -> dict[str, Any]:
    """The scores of the images routers sent to ``surface``'s detector that its own cell
    (``trained_key``) lacks. When its model is not on this machine (the cell came with the
    checkout), the detector is trained again and its cell replaced, so both come from one model."""
    trained = cache.get_or_compute(trained_key, train_detector)
    missing = [i for i in routed if str(i) not in trained["scores"]]
    if not missing:
        return {"scores": {}, "score_s": 0.0}
    if not (work_dir / "model" / CARD_NAME).is_file():
        cache.put(trained_key, train_detector())
    detector = load_inspector(work_dir / "model")
    scores, score_s = score_images(detector, samples, missing, f"{surface} routed", request)
    return {"scores": rounded(scores), "score_s": score_s}


def route_cell(mix: MixFeatures, split: int, val_fraction: float, router: RouterSetup,
               request: BenchRequest) -> dict[str, Any]:  # fmt: skip
    """One split's router: trained on its seen surfaces, every test image routed."""
    parts = mix_split(mix, split, val_fraction)
    names = mix.surfaces
    started = time.perf_counter()
    fitted = fit_router(
        SurfaceFeatures(mix.features[parts.train], [names[s] for s in mix.surface[parts.train]]),
        SurfaceFeatures(mix.features[parts.validation], [names[s] for s in mix.surface[parts.validation]]),
        router,
    )
    test = np.concatenate([parts.seen_test, parts.unseen_test])
    with torch.no_grad():
        routed = fitted.network.router(torch.as_tensor(mix.features[test]))
    seen_names = fitted.surfaces[: fitted.n_seen]
    scores = routed.unseen_score.numpy()
    return {
        "seen": [names[s] for s in parts.seen],
        "unseen": [names[s] for s in parts.unseen],
        "train_s": time.perf_counter() - started,
        "unknown_threshold": fitted.unknown_threshold,
        "test": test.tolist(),
        "calls": [seen_names[int(c)] for c in routed.seen_class],
        "unseen_scores": [float(v) for v in scores],
        "unknown": (scores >= fitted.unknown_threshold).tolist(),
    }


def route_calls(route: dict[str, Any]) -> list[tuple[int, str, bool]]:
    """(image index, surface called, unknown) per test image of one routed split."""
    return list(zip(route["test"], route["calls"], route["unknown"], strict=True))


def judge_split(
    mix: MixFeatures, route: dict[str, Any], detectors: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """One split's verdicts (the router's calls, then the called surface's detector) and figures."""
    verdicts, right = [], []
    for image, call, unknown in route_calls(route):
        detector = detectors.get(call)
        score = float(detector["scores"][str(image)]) if detector and not unknown else 0.0
        threshold = float(detector["threshold"]) if detector else 1.0
        verdicts.append(cascade_verdict(unknown, detector is not None, score, threshold))
        right.append(call == mix.surfaces[mix.surface[image]] and not unknown)
    test = np.asarray(route["test"])
    is_unseen = np.isin(mix.surface[test], [mix.surfaces.index(s) for s in route["unseen"]])
    rows = np.where(is_unseen, 2, mix.label[test])
    figures = cascade_figures(rows, verdicts, np.asarray(right), np.asarray(route["unseen_scores"]))
    return {**{k: route[k] for k in ("seen", "unseen", "train_s", "unknown_threshold")}, "metrics": figures}


register_protocol("dagm-mix/line", "paper 002's whole line (SBAD router + per-surface segdec) on DAGM_MIX")(
    run_line
)


# ---------------------------------------------------------------------------------------------
# products/line: the router on five real products, each left out once

PRODUCTS_ATTRIBUTES = "configs/sbad/products-attributes.yaml"
PRODUCTS_PAPER = {"alert_auroc": 0.95}  # the target; the paper has no real-product figure
PRODUCT_OPTIONS = ("per_surface",)
SPLIT = (0.6, 0.2, 0.2)  # train, validation (the unknown threshold), test, per product
PRODUCTS_ROUTER_ONLY_NOTE = (
    "; no detectors follow the router: NEU-CLS and X-SDD hold defective images alone (defect-type "
    "datasets), so no ok / defect detector can be trained or measured on two of the five surfaces; "
    "the cascade is measured on dagm-mix/line"
)


def product_samples(per_surface: int, seed: int) -> dict[str, list[Sample]]:
    """Up to ``per_surface`` images of each product (seeded draw), from ``$DEFECTKIT_DATA`` and the
    ``elpv-dataset`` package; a product whose data is missing is an error naming it."""
    from defectkit.bench.protocols import dataset_root
    from defectkit.data.formats.elpv import default_root

    elpv = default_root()
    if elpv is None:
        raise FileNotFoundError("ELPV not found: pip install elpv-dataset (the defectkit[elpv] extra)")
    sources = {
        "commutator": read_dataset(dataset_root("kolektorsdd"), "kolektorsdd").samples,
        "steel-neu": read_dataset(dataset_root("neu-cls"), "neu-cls").samples,
        "strip-xsdd": read_dataset(dataset_root("x-sdd"), "folder").samples,
    }
    cells = read_dataset(elpv, "elpv").samples
    sources["elpv-mono"] = [s for s in cells if s.surface == "mono"]
    sources["elpv-poly"] = [s for s in cells if s.surface == "poly"]
    rng = np.random.default_rng(seed)
    drawn = {}
    for name, samples in sources.items():
        ordered = sorted(samples, key=lambda s: s.path)
        keep = sorted(rng.permutation(len(ordered))[:per_surface].tolist())
        drawn[name] = [ordered[i] for i in keep]
    return drawn


def run_products(request: BenchRequest) -> Path:
    """Leave-one-product-out: the router trained on four products (60 % of each drawn image set,
    20 % for its unknown threshold), scored on their other 20 % and on every drawn image of the
    fifth; the unseen alert's AUROC, alert rate and false alerts, mean over the five."""
    from defectkit.data.attributes import read_attributes
    from defectkit.data.splits import split_fractions

    protocol = "products/line"
    check_options(request.variant, PRODUCT_OPTIONS, protocol)
    per_surface = option_number(request.variant, "per_surface", "300", int)
    spec = read_line_train_spec(REPO_ROOT / LINE_CONFIG)
    router_config = load_config(
        REPO_ROOT / "configs" / "line" / spec.router.config,
        request.profile,
        [*spec.router.set, *request.overrides],
    )
    attributes = read_attributes(REPO_ROOT / PRODUCTS_ATTRIBUTES)
    products = product_samples(per_surface, router_config.seed)
    names = sorted(products)
    samples = [s for n in names for s in products[n]]
    surface = np.asarray([names.index(n) for n in names for _ in products[n]])
    name = f"products-line-{request.profile}"
    work = request.work_folder(name, exclude=NAMED_KEYS)
    backbone_name = str(router_config.model.get("backbone", "tf_efficientnet_lite0"))
    spec_input = router_input(router_config)
    backbone = feature_backbone(router_config)
    key = fingerprint(
        [
            [s.path for s in samples],
            backbone_name,
            router_config.weights,
            spec_input.model_dump(),
            *pooling_setting(backbone.pooling).values(),
        ]
    )
    cache = request.cells(name)
    features, features_s = cached_features(
        samples, backbone, spec_input, work / f"features-{key}.npy", request, cache
    )
    # One 60 / 20 / 20 split per product, fixed across the leave-one-out folds; grouped by part and
    # by duplicate content (KolektorSDD's parts hold several images each), stratified by label.
    role = np.zeros(len(samples), dtype=int)  # 0 train, 1 validation, 2 test
    for k, product in enumerate(names):
        members = np.flatnonzero(surface == k)
        _, validation, test = split_fractions(products[product], SPLIT, seed=router_config.seed + k)
        role[members[validation]] = 1
        role[members[test]] = 2
    options = sbad_options(dict(router_config.method_options), seed=router_config.seed)
    setup = RouterSetup(attributes, backbone, backbone_name, options)
    config_key = fingerprint(
        [router_config.model_dump(exclude={"profile"}), key, attributes.surfaces, PRODUCTS_CELL_VERSION]
    )
    cells = []
    for held, unseen in enumerate(names):
        cell_key = f"unseen-{unseen}/config-{config_key}"
        compute = partial(product_cell, features, surface, role, names, held, setup)
        cells.append(cache.get_or_compute(cell_key, compute))
    metrics = mean_and_std([c["metrics"] for c in cells])
    return write_results(
        protocol=protocol,
        method="sbad",
        dataset="kolektorsdd + neu-cls + x-sdd + elpv (mono, poly)",
        variant={
            "ce": options.ce,
            "generator": f"vaegan-{options.attribute_loss}",
            "per_surface": per_surface,
            **pooling_setting(backbone.pooling),
            **score_variant(options),
            **request.set_variant(exclude=NAMED_KEYS),
        },
        profile=request.profile,
        metrics=metrics,
        per_fold=[
            {"fold": k, "unseen": c["unseen"], "train_s": c["train_s"], "metrics": c["metrics"]}
            for k, c in enumerate(cells)
        ],
        n_images=len(samples),
        paper=PRODUCTS_PAPER,
        wall_time_s=features_s + sum(c["train_s"] for c in cells),
        command=request.command,
        cells=cells,
        init=str(router_config.weights) if router_config.weights else "random",
        notes=(
            f"router only (sbad, {backbone_name} frozen at {spec_input.size[0]} px, {options.gan_epochs} "
            f"VAEGAN epochs), attribute vectors in "
            f"{PRODUCTS_ATTRIBUTES}; each product left out once (mean ± std over the 5); target from the "
            "issue, not the paper; wall time: features and the five routers; the unseen score "
            "(nearest_seen) was chosen after this protocol's alert AUROCs had been seen"
            + PRODUCTS_ROUTER_ONLY_NOTE
        ),
        root=request.results_root,
    )


def product_cell(features: np.ndarray, surface: np.ndarray, role: np.ndarray, names: list[str], held: int,
                 router: RouterSetup) -> dict[str, Any]:  # fmt: skip
    """One product unseen: train on the other four, score their test images and all of it."""
    seen = surface != held
    train_idx = np.flatnonzero(seen & (role == 0))
    val_idx = np.flatnonzero(seen & (role == 1))
    test_idx = np.flatnonzero(seen & (role == 2))
    unseen_idx = np.flatnonzero(~seen)
    started = time.perf_counter()
    fitted = fit_router(
        SurfaceFeatures(features[train_idx], [names[s] for s in surface[train_idx]]),
        SurfaceFeatures(features[val_idx], [names[s] for s in surface[val_idx]]),
        router,
    )
    train_s = time.perf_counter() - started
    with torch.no_grad():
        seen_out = fitted.network.router(torch.as_tensor(features[test_idx]))
        unseen_out = fitted.network.router(torch.as_tensor(features[unseen_idx]))
    seen_scores, unseen_scores = seen_out.unseen_score.numpy(), unseen_out.unseen_score.numpy()
    threshold = fitted.unknown_threshold
    seen_names = fitted.surfaces[: fitted.n_seen]
    calls = np.asarray([seen_names[int(c)] for c in seen_out.seen_class])
    truth = np.asarray([names[s] for s in surface[test_idx]])
    return {
        "unseen": names[held],
        "train_s": train_s,
        "unknown_threshold": threshold,
        "metrics": {
            "alert_auroc": auroc(
                np.r_[np.zeros(len(seen_scores)), np.ones(len(unseen_scores))],
                np.r_[seen_scores, unseen_scores],
            ),
            "alert_rate": float((unseen_scores >= threshold).mean()),
            "false_alert_rate": float((seen_scores >= threshold).mean()),
            "routing_accuracy": float(((calls == truth) & (seen_scores < threshold)).mean()),
        },
    }


register_protocol("products/line", "paper 002's router on five real products, leave-one-product-out alert")(
    run_products
)
