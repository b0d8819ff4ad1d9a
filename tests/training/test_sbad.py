"""SBAD (paper 002): class embeddings, the VAEGAN recipe and the DAGM_MIX protocol on tiny data."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from defectkit.data.attributes import TABLE1_NAMES, describe, read_attributes, table1_attributes
from defectkit.data.synthetic import SynthConfig
from defectkit.training.sbad import SBADOptions, _kl, fit_sbad, map_unseen, pin_unvaried, seen_span


def test_table1_attributes_have_29_slots_in_range_and_tell_surfaces_apart() -> None:
    attributes = table1_attributes(SynthConfig(surfaces=10, size=64))
    matrix = attributes.matrix([f"Class{i}" for i in range(1, 11)])
    assert matrix.shape == (10, 29) and len(TABLE1_NAMES) == 29
    assert matrix.min() >= 0.0 and matrix.max() <= 1.0
    # One-hot groups: exactly one area bin, one shape, one reason per surface.
    for group in (slice(9, 12), slice(12, 19), slice(21, 29)):
        assert np.all(matrix[:, group].sum(axis=1) == 1.0)
    assert len({tuple(row) for row in matrix}) == 10
    words = describe(matrix[0], attributes.names, top=2)
    assert len(words) == 2 and all(w.split(" (")[0] in TABLE1_NAMES for w in words)


def test_users_attribute_tables_are_checked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "good.yaml"
    good.write_text("attribute_names: [shiny, rough]\nsurfaces:\n  steel: [1, 0]\n  cast: [0, 1]\n")
    table = read_attributes(good)
    assert table.matrix(["cast"]).tolist() == [[0.0, 1.0]]
    with pytest.raises(KeyError, match="wood"):
        table.matrix(["wood"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("attribute_names: [shiny, rough]\nsurfaces:\n  steel: [1]\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*length"):
        read_attributes(bad)


def test_kl_is_zero_at_the_centre_and_grows_away_from_it() -> None:
    centre = torch.tensor([[0.5, 1.0]])
    assert float(_kl(centre.clone(), torch.zeros(1, 2), centre)) == pytest.approx(0.0)
    # The printed equation 3 would reward moving away; the implemented KL penalises it.
    assert float(_kl(centre + 1.0, torch.zeros(1, 2), centre)) == pytest.approx(1.0)
    assert float(_kl(centre, torch.full((1, 2), 1.0), centre)) > 0.0


def test_unseen_embeddings_follow_the_seen_shift() -> None:
    rng = np.random.default_rng(0)
    real = rng.random((8, 5))
    learned = real + 0.1  # a constant shift on every seen class
    unseen = rng.random((2, 5))
    mapped = map_unseen(real, learned, unseen, ridge=1.0)
    assert np.allclose(mapped, unseen + 0.1, atol=1e-6)
    # A shift that grows with the first attribute is followed too.
    learned = real + 0.5 * real[:, :1]
    assert np.allclose(map_unseen(real, learned, unseen, ridge=1e-9), unseen + 0.5 * unseen[:, :1], atol=1e-4)


def test_attributes_no_seen_surface_varies_are_pinned_to_the_seen_value() -> None:
    embeddings = np.array([[0.0, 1.0, 0.2], [0.0, 0.5, 0.2], [1.0, 0.0, 0.9]])  # two seen, one unseen
    pinned = pin_unvaried(embeddings, n_seen=2)
    assert np.array_equal(pinned[:, 1], embeddings[:, 1])  # varies over the seen rows: kept
    assert np.array_equal(pinned[2], [0.0, 0.0, 0.2])  # the unseen row takes the seen value elsewhere
    assert np.array_equal(pinned[:2], embeddings[:2])
    with pytest.raises(ValueError, match="unvaried"):
        SBADOptions(unvaried="drop")
    with pytest.warns(UserWarning, match="share one embedding"):
        pin_unvaried(np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 1.0]]), n_seen=2)


def test_seen_span_keeps_only_what_the_seen_surfaces_combine() -> None:
    # Seen: two surfaces over attributes (a, b, c); the unseen one also sets d, which no seen
    # surface has, and a + b, which they do.
    embeddings = np.array([[1.0, 0.0, 0.5, 0.0], [0.0, 1.0, 0.5, 0.0], [1.0, 1.0, 1.0, 1.0]])
    projected = seen_span(embeddings, n_seen=2)
    assert np.allclose(projected[:2], embeddings[:2])
    assert np.allclose(projected[2], [1.0, 1.0, 1.0, 0.0])  # d dropped, the seen combination kept
    with pytest.warns(UserWarning, match="share one embedding"):
        seen_span(np.array([[1.0, 0.0], [2.0, 0.0], [1.0, 1.0], [1.0, 2.0]]), n_seen=2)
    assert SBADOptions(unvaried="seen_span").unvaried == "seen_span"


def test_fit_sbad_trains_on_the_pinned_embeddings() -> None:
    features, labels, attributes = _blobs(5, 40, 16, seed=2)
    attributes[:4, 0] = 0.5  # the four seen surfaces share attribute 0; the unseen one differs
    options = SBADOptions(
        hidden=32, ce="real", gan_epochs=2, synthetic_per_class=10, critic_steps=1, unvaried="seen_value"
    )
    seen = labels < 4
    model = fit_sbad(features[seen], labels[seen], attributes, 4, options)
    assert np.allclose(model.embeddings, pin_unvaried(attributes, 4))
    assert model.embeddings[4, 0] == 0.5


def _blobs(n_classes: int, per_class: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features that are a fixed linear image of each class's attributes, plus noise."""
    rng = np.random.default_rng(seed)
    attributes = rng.random((n_classes, 6)).astype(np.float32)
    projection = rng.normal(size=(6, dim)).astype(np.float32)
    labels = np.repeat(np.arange(n_classes), per_class)
    features = attributes[labels] @ projection + 0.05 * rng.normal(size=(len(labels), dim)).astype(np.float32)
    return features.astype(np.float32), labels, attributes


def _seen_parts(labels: np.ndarray, n_seen: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masks of the seen classes' images, their training part and the held-out rest (every fourth)."""
    seen = labels < n_seen
    train = seen & (np.arange(len(labels)) % 4 != 0)
    return seen, train, seen & ~train


def test_fit_sbad_routes_held_out_seen_images_and_scores_unseen_ones_higher() -> None:
    features, labels, attributes = _blobs(6, 80, 32, seed=1)
    seen, train, held_out = _seen_parts(labels)
    options = SBADOptions(hidden=64, ce_epochs=30, gan_epochs=30, synthetic_per_class=60, critic_steps=2)
    model = fit_sbad(features[train], labels[train], attributes, 4, options)
    with torch.no_grad():
        out = model.router(torch.as_tensor(features))
    assert out.logits.shape == (len(labels), 6) and out.attributes.shape == (len(labels), 6)
    assert float((out.seen_class.numpy()[held_out] == labels[held_out]).mean()) > 0.95
    assert float(out.unseen_score[~seen].mean()) > float(out.unseen_score[held_out].mean())
    assert model.learned_seen is not None and model.learned_seen.shape == (4, 6)
    with pytest.raises(ValueError, match="no training features"):
        fit_sbad(features[labels < 3], labels[labels < 3], attributes, 4, options)
    with pytest.raises(ValueError, match="attribute_loss"):
        SBADOptions(attribute_loss="l2")


def test_nearest_seen_score_keeps_a_bounded_memory_and_reloads() -> None:
    from defectkit.models.sbad import AttributeRegressor, SurfaceRouter

    features, labels, attributes = _blobs(6, 80, 32, seed=2)
    seen, train, held_out = _seen_parts(labels)
    options = SBADOptions(
        hidden=32, ce_epochs=2, gan_epochs=2, synthetic_per_class=10, critic_steps=1,
        unseen_score="nearest_seen", memory_size=100,
    )  # fmt: skip
    router = fit_sbad(features[train], labels[train], attributes, 4, options).router
    assert router.memory.shape == (100, 32)
    assert torch.allclose(router.memory.norm(dim=1), torch.ones(100))
    with torch.no_grad():
        scores = router(torch.as_tensor(features)).unseen_score.numpy()
    assert scores[~seen].min() > np.quantile(scores[held_out], 0.5)
    # A router built empty from the card's options takes the saved memory back.
    empty = SurfaceRouter(
        torch.zeros(32), torch.ones(32), torch.nn.Linear(32, 6), AttributeRegressor(32, 6, 32),
        torch.zeros(6, 6), 4, "nearest_seen", torch.ones(100, 32),
    )  # fmt: skip
    empty.load_state_dict(router.state_dict())
    with torch.no_grad():
        assert np.allclose(empty(torch.as_tensor(features)).unseen_score.numpy(), scores, atol=1e-6)
    with pytest.raises(ValueError, match="unseen_score"):
        SBADOptions(unseen_score="energy")
    with pytest.raises(ValueError, match="memory_size"):
        SBADOptions(unseen_score="nearest_seen", memory_size=0)


def test_semantic_classifier_input_routes_and_reloads_as_a_saved_router() -> None:
    from defectkit.models.sbad import SurfaceRouterNet

    features, labels, attributes = _blobs(6, 80, 32, seed=3)
    _, train, held_out = _seen_parts(labels)
    options = SBADOptions(
        hidden=32,
        ce="real",
        gan_epochs=20,
        synthetic_per_class=40,
        critic_steps=1,
        classifier_input="semantic",
    )
    model = fit_sbad(features[train], labels[train], attributes, 4, options)
    router = model.router
    assert router.classifier.in_features == 32 + 6 + 32  # features, reconstruction, hidden layer
    with torch.no_grad():
        out = router(torch.as_tensor(features))
    assert float((out.seen_class.numpy()[held_out] == labels[held_out]).mean()) > 0.95
    # The saved network, built empty from the card's options, takes the router's weights back.
    empty = SurfaceRouterNet(
        "tf_efficientnet_lite0", [f"a{i}" for i in range(6)], 6, 4, 32, 32, classifier_input="semantic"
    )
    empty.router.load_state_dict(router.state_dict())
    with torch.no_grad():
        assert torch.allclose(empty.router(torch.as_tensor(features)).logits, out.logits, atol=1e-5)
    with pytest.raises(ValueError, match="classifier_input"):
        SBADOptions(classifier_input="hidden")


def test_routers_saved_before_the_memory_existed_still_load() -> None:
    from defectkit.models import create_model
    from defectkit.models.sbad import SurfaceRouterNet

    old_card = {"backbone": "test_efficientnet", "attribute_names": ["a", "b"], "n_surfaces": 3, "n_seen": 2}
    saved = SurfaceRouterNet(hidden=8, **old_card).state_dict()  # type: ignore[arg-type]
    del saved["router.memory"]
    create_model("sbad_router", hidden=8, **old_card).load_state_dict(saved)  # strict, as load_model


def test_mix_splits_keep_unseen_and_test_images_out_of_training() -> None:
    from defectkit.bench.dagm_mix import MixFeatures, mix_split

    n = 10 * 40
    surface = np.repeat(np.arange(10), 40)
    data = MixFeatures(
        features=np.zeros((n, 4), np.float32), surface=surface, train=np.tile(np.arange(40) < 30, 10),
        label=np.tile(np.arange(40) % 2, 10), surfaces=[f"Class{i + 1}" for i in range(10)],
    )  # fmt: skip
    splits = [mix_split(data, k, 0.2) for k in range(5)]
    assert sorted(s for split in splits for s in split.unseen) == list(range(10))  # each unseen once
    for split in splits:
        parts = [set(split.train), set(split.validation), set(split.seen_test), set(split.unseen_test)]
        assert sum(len(p) for p in parts) == n and len(set().union(*parts)) == n  # disjoint, complete
        assert not set(surface[split.train]) & set(split.unseen)
        assert set(surface[split.unseen_test]) == set(split.unseen)
        assert data.train[split.train].all() and not data.train[split.seen_test].any()
        assert len(split.validation) == 8 * 6  # 20 % of each seen surface's 30 train images


def test_dagm_mix_protocol_on_tiny_data(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from defectkit.bench.protocols import BenchRequest, run_protocol

    overrides = [
        "data.synthetic.per_surface=16", "data.synthetic.size=32", "input.size=[32,32]", "weights=null",
        "method_options.hidden=16", "method_options.ce_epochs=1", "method_options.gan_epochs=1",
        "method_options.synthetic_per_class=8", "method_options.critic_steps=1",
    ]  # fmt: skip
    request = BenchRequest(
        "cpu", "full", "defectkit bench dagm-mix/sbad", tmp_path / "results", tmp_path / "work", False,
        {"splits": "2", "generator": "vaegan-mse,softmax"}, overrides, cells_root=tmp_path / "cells",
    )  # fmt: skip
    run_protocol("dagm-mix/sbad", request)
    records = {p.name: json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")}
    assert len(records) == 2
    sbad = next(r for r in records.values() if r["variant"]["generator"] == "vaegan-mse")
    assert {"s", "u", "h", "zsl", "alert_auroc", "false_alert_rate"} <= set(sbad["metrics"])
    assert {"s_gated", "u_gated", "h_gated"} <= set(sbad["metrics"])
    diagnosis = {"zsl_attributes", "zsl_attributes_cosine", "generated_gap_seen", "generated_gap_unseen"}
    assert diagnosis <= set(sbad["metrics"])
    assert all(0 <= sbad["metrics"][k]["mean"] <= 1 for k in ("zsl_attributes", "zsl_attributes_cosine"))
    assert sbad["paper"]["h"] == 0.9703 and len(sbad["per_fold"]) == 2
    assert sbad["per_fold"][0]["unseen"] != sbad["per_fold"][1]["unseen"]
    assert [f["fold"] for f in sbad["per_fold"]] == [0, 1] and "h" in sbad["per_fold"][0]["metrics"]
    assert sbad["init"] == "random"
    # Cells are reused: a second run trains nothing and writes the same figures.
    import defectkit.bench.dagm_mix as protocol

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(protocol, "sbad_cell", refuse)
    monkeypatch.setattr(protocol, "softmax_cell", refuse)
    monkeypatch.setattr(protocol, "mix_features", refuse)  # only a computed cell reads the features
    run_protocol("dagm-mix/sbad", request)
    again = {p.name: json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")}
    assert {k: v["metrics"] for k, v in again.items()} == {k: v["metrics"] for k, v in records.items()}


def test_option_b_trains_the_backbone_on_seen_training_images_only(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import defectkit.bench.dagm_mix as protocol
    from defectkit.bench.protocols import BenchRequest, run_protocol

    seen_counts: list[int] = []
    real_finetune = protocol.finetune_backbone

    targets: list[str] = []

    def spy(backbone, spec, images, labels, options, progress=None, attributes=None):  # type: ignore[no-untyped-def]
        seen_counts.append(len(images))
        targets.append(options.backbone_target)
        assert options.backbone_epochs == 1 and max(labels) == 7  # 8 seen surfaces, classes 0..7
        assert attributes.shape == (8, 29)  # the seen surfaces' Table 1 rows, class order
        return real_finetune(backbone, spec, images, labels, options, progress, attributes)

    monkeypatch.setattr(protocol, "finetune_backbone", spy)
    overrides = [
        "data.synthetic.per_surface=16", "data.synthetic.size=32", "input.size=[32,32]", "weights=null",
        "model.backbone=test_efficientnet", "method_options.hidden=16", "method_options.ce_epochs=1",
        "method_options.gan_epochs=1", "method_options.synthetic_per_class=8",
        "method_options.critic_steps=1", "method_options.backbone_epochs=1",
    ]  # fmt: skip
    request = BenchRequest(
        "cpu", "full", "defectkit bench dagm-mix/sbad", tmp_path / "results", tmp_path / "work", False,
        {"splits": "1", "generator": "vaegan-mse", "features": "seen,seen-attributes"}, overrides,
        cells_root=tmp_path / "cells",
    )  # fmt: skip
    run_protocol("dagm-mix/sbad", request)
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "results").glob("*.json"))]
    assert sorted(r["variant"]["features"] for r in records) == ["seen-1", "seen-attributes-1"]
    assert targets == ["surfaces", "attributes"]
    # 8 seen surfaces x 12 generator-train images x 0.8 (validation held out): no test or unseen image.
    split = records[0]["per_fold"][0]
    assert seen_counts == [split["train_images"]] * 2 and split["train_images"] < 8 * 12


def test_documented_dagm_mix_matrix_is_the_one_the_code_uses() -> None:
    from pathlib import Path

    from defectkit.data.attributes import markdown_table
    from defectkit.data.synthetic import surface_names

    config = SynthConfig(surfaces=10, per_surface=800, size=128, defect_fraction=0.5, test_fraction=0.25)
    page = (Path(__file__).resolve().parents[2] / "docs" / "dagm-mix-attributes.md").read_text()
    assert markdown_table(table1_attributes(config), surface_names(config)) in page


def test_documented_products_matrix_is_the_one_the_bench_reads() -> None:
    from pathlib import Path

    from defectkit.data.attributes import markdown_table, read_attributes

    root = Path(__file__).resolve().parents[2]
    attributes = read_attributes(root / "configs" / "sbad" / "products-attributes.yaml")
    page = (root / "docs" / "products-attributes.md").read_text()
    assert markdown_table(attributes, list(attributes.surfaces)) in page


def test_ridge_baseline_names_unseen_surfaces_from_linearly_encoded_attributes() -> None:
    from defectkit.bench.dagm_mix import MixFeatures, mix_split, ridge_cell

    rng = np.random.default_rng(0)
    attributes = rng.random((10, 6))
    surface = np.repeat(np.arange(10), 40)
    # Features carry the attributes linearly, so a ridge map learnt on 8 surfaces transfers.
    features = attributes[surface] @ rng.normal(size=(6, 16)) + 0.01 * rng.normal(size=(400, 16))
    data = MixFeatures(
        features=features.astype(np.float32), surface=surface, train=np.tile(np.arange(40) < 30, 10),
        label=np.tile(np.arange(40) % 2, 10), surfaces=[f"Class{i + 1}" for i in range(10)],
    )  # fmt: skip
    split = mix_split(data, 0, 0.2)
    cell = ridge_cell(data, split, attributes, SBADOptions(), alpha=1e-3)
    assert cell["zsl"] == 1.0 and cell["s"] == 1.0 and cell["u"] == 1.0
    assert cell["alert_auroc"] == 1.0 and cell["unseen"] == split.unseen
    # Nothing but seen training images fits it, and test images do not move the alert threshold.
    held_out = np.r_[split.seen_test, split.unseen_test]
    noisy = data.features.copy()
    noisy[held_out] = rng.normal(size=(len(held_out), 16))
    again = ridge_cell(replace(data, features=noisy), split, attributes, SBADOptions(), alpha=1e-3)
    assert again["alert_threshold"] == cell["alert_threshold"]


def test_results_variants_name_only_the_router_choices_that_differ_from_the_defaults() -> None:
    from defectkit.bench.dagm_mix import score_variant

    assert score_variant(SBADOptions()) == {}
    assert score_variant(SBADOptions(unseen_score="nearest_seen")) == {"unseen_score": "nearest_seen"}
    assert score_variant(SBADOptions(ridge=1e6)) == {"ridge": 1e6}
    assert score_variant(SBADOptions(ridge=2)) == score_variant(SBADOptions(ridge=2.0))
    assert score_variant(SBADOptions(unseen_ce="real", ridge=1e6)) == {"unseen_ce": "real"}
    assert score_variant(SBADOptions(ce="real", unseen_ce="real", ridge=1e6)) == {}  # real CEs: no mapping
    assert score_variant(SBADOptions(unvaried="seen_value")) == {"unvaried": "seen_value"}
    assert score_variant(SBADOptions(classifier_input="semantic")) == {"classifier_input": "semantic"}
    # Baselines name only what their figures read: the ridge its unvaried attributes, softmax nothing.
    changed = SBADOptions(unvaried="seen_span", unseen_score="nearest_seen", classifier_input="semantic")
    assert score_variant(changed, "ridge") == {"unvaried": "seen_span"}
    assert score_variant(changed, "softmax") == {}
    assert score_variant(changed, "vaegan-mse") == score_variant(changed)


def test_mix_variants_name_only_the_generator_settings_off_their_defaults() -> None:
    from defectkit.bench.dagm_mix import mix_notes, mix_variant
    from defectkit.data.synthetic import SynthConfig

    assert mix_variant(SynthConfig()) == {} and mix_notes(SynthConfig()) == ""
    assert mix_variant(SynthConfig(families=5)) == {"families": 5}
    assert mix_variant(SynthConfig(defect_types=5, families=5)) == {"defect_types": 5, "families": 5}
    assert "5 texture families" in mix_notes(SynthConfig(families=5))


def test_set_names_only_settings_the_variant_does_not_name_and_the_figures_read(tmp_path: Path) -> None:
    from defectkit.bench.dagm_mix import unnamed_settings
    from defectkit.bench.protocols import BenchRequest

    def named(generator: str, *overrides: str, features: str = "frozen") -> dict[str, str]:
        request = BenchRequest("cpu", "full", "c", tmp_path, tmp_path, False, {}, list(overrides))
        return request.set_variant(exclude=unnamed_settings(generator, features))

    # Named by fields of their own (pooling=, unvaried=): no set= besides, for any generator.
    for generator in ("vaegan-mse", "softmax", "ridge"):
        assert named(generator, "model.pooling=stages", "method_options.unvaried=seen_span") == {}
    # Router options a baseline never reads leave its row as it is.
    assert named("softmax", "method_options.gan_epochs=3") == {}
    assert named("ridge", "method_options.classifier_epochs=3") == {}
    assert named("ridge", "method_options.alert_quantile=0.9") == {"set": "method_options.alert_quantile=0.9"}
    # Backbone training options: unread on frozen features; their epochs are named by features=.
    assert named("softmax", "method_options.backbone_lr=0.1") == {}
    assert named("softmax", "method_options.backbone_lr=0.1", features="seen") == {
        "set": "method_options.backbone_lr=0.1"
    }
    assert named("ridge", "method_options.backbone_epochs=5", features="seen") == {}
    assert named("vaegan-mse", "method_options.gan_epochs=3") == {"set": "method_options.gan_epochs=3"}
    assert named("softmax", "method_options.classifier_epochs=3", "input.size=[64,64]") == {
        "set": "input.size=[64,64],method_options.classifier_epochs=3"
    }


def test_stage_pooling_is_the_mean_and_std_of_every_feature_stage() -> None:
    import torch

    from defectkit.models.sbad import FeatureBackbone

    backbone = FeatureBackbone("test_efficientnet", weights=None, pooling="stages").eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        features = backbone(images)
        stages = backbone.network.forward_intermediates(images, intermediates_only=True)
    assert features.shape == (2, backbone.dim) and len(stages) == len(backbone.network.feature_info)
    first = stages[0]
    channels = first.shape[1]
    torch.testing.assert_close(features[:, :channels], first.mean((2, 3)))
    torch.testing.assert_close(features[:, channels : 2 * channels], first.std((2, 3)))
    with pytest.raises(ValueError, match="pooling 'max'"):
        FeatureBackbone("test_efficientnet", weights=None, pooling="max")


def test_sbad_cells_keyed_before_data_surfaces_existed_are_found() -> None:
    import defectkit.bench.dagm_mix as protocol
    from defectkit.bench.protocols import REPO_ROOT
    from defectkit.config import load_config

    config = load_config(REPO_ROOT / protocol.CONFIG, "cpu")
    keys = protocol.sbad_config_keys(config)
    assert len(keys) == 2 and keys[0] != keys[1]
    # The softmax row was computed before the field: its committed cells resume under the old key.
    cells = REPO_ROOT / "benchmarks/cells/dagm-mix-sbad-cpu"
    assert list(cells.glob(f"softmax-none-split0-config-{keys[1]}-*.json"))
    named = config.model_copy(update={"data": config.data.model_copy(update={"surfaces": ["Class1"]})})
    dump = named.model_dump(exclude={"profile"})
    assert protocol.sbad_config_keys(named) == [protocol.fingerprint([dump, protocol.CELL_VERSION])]


def test_gated_decision_sends_alerted_images_to_the_unseen_classes_only() -> None:
    from defectkit.bench.dagm_mix import gated_calls, gated_figures, mean_and_std

    score, seen_call, unseen_call = (
        np.array([0.1, 0.5, 0.9, 0.49]),
        np.array([0, 1, 2, 1]),
        np.array([3, 4, 4, 3]),
    )
    assert gated_calls(score, seen_call, unseen_call, 0.5).tolist() == [0, 4, 4, 1]  # at the threshold alerts
    record = gated_figures(np.array([0, 1]), np.array([0, 4]), np.array([3, 4]), np.array([3, 4]))
    assert record == {"s_gated": 0.5, "u_gated": 1.0, "h_gated": pytest.approx(2 / 3)}
    # A figure only newer cells carry is left out of the summary, not averaged over some of them.
    summary = mean_and_std([{"h": 0.5, "h_gated": 0.7}, {"h": 0.7}])
    assert set(summary) == {"h"} and summary["h"]["mean"] == pytest.approx(0.6)
