"""defectkit eval: scoring, metrics at the STORED threshold, report files, bad images, CLI."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import defectkit.evaluation.evaluate as evaluate_module
from conftest import tiny_segdec
from defectkit.cli.main import app
from defectkit.data.formats import read_dataset
from defectkit.data.synthetic import SynthConfig, generate
from defectkit.evaluation.evaluate import (
    ScoredSet,
    default_report_folder,
    evaluate_model,
    evaluate_scores,
    score_dataset,
    select_split,
)
from defectkit.inference.inspector import load_inspector

REPORT_FILES = {"metrics.json", "scores.csv", "pr_curve.png", "score_histogram.png", "worst.png"}
runner = CliRunner()


def _save(directory: Path, decision: float) -> Path:
    return tiny_segdec(directory, decision=decision, size=(64, 64))


def _set_threshold(model_dir: Path, decision: float) -> None:
    card = yaml.safe_load((model_dir / "model.yaml").read_text())
    card["thresholds"]["decision"] = decision
    (model_dir / "model.yaml").write_text(yaml.safe_dump(card, sort_keys=False))


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny convolutions run far slower with several threads fighting over 2 busy cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save(tmp_path_factory.mktemp("model") / "segdec", 0.5)


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "synth"
    generate(root, SynthConfig(surfaces=1, per_surface=12, size=64, defect_fraction=0.5))
    return root


def test_select_split_uses_meta_or_everything(data_root: Path) -> None:
    samples = read_dataset(data_root).samples
    test, note = select_split(samples, "test")
    assert 0 < len(test) < len(samples) and all(s.meta["split"] == "test" for s in test) and "test" in note
    assert len(select_split(samples, "all")[0]) == len(samples)
    unsplit = [s.replace(meta={}) for s in samples]
    assert len(select_split(unsplit, "test")[0]) == len(samples)
    with pytest.raises(ValueError, match="no images in split 'val'"):
        select_split(samples, "val")


def test_eval_writes_report_at_stored_threshold(
    model_dir: Path, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: object, **kwargs: object) -> float:
        raise AssertionError("evaluation must never choose a threshold on the evaluated data")

    import defectkit.metrics
    import defectkit.metrics.thresholds

    monkeypatch.setattr(defectkit.metrics, "best_f1_threshold", forbidden)
    monkeypatch.setattr(defectkit.metrics.thresholds, "best_f1_threshold", forbidden)

    report = evaluate_model(model_dir, data_root, split="test", out=tmp_path / "eval")
    assert {p.name for p in (tmp_path / "eval").iterdir()} == REPORT_FILES
    metrics = report.metrics
    for key in ("ap", "auroc", "fp", "fn", "false_calls", "fp_at_full_recall", "dice", "dice_pos", "iou_pos"):
        assert key in metrics
    assert metrics["n_images"] == 6 and metrics["n_pos"] == 3 and metrics["threshold"] == 0.5
    assert metrics["infer_ms_per_image"] > 0 and metrics["n_masks"] == 6

    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["thresholds"]["decision"] == 0.5 and saved["split"] == "test"
    rows = list(csv.DictReader((tmp_path / "eval" / "scores.csv").open()))
    assert len(rows) == 6 and set(rows[0]) >= {"path", "label", "score", "verdict"}
    scores = np.asarray([float(r["score"]) for r in rows])
    labels = np.asarray([int(r["label"]) for r in rows])
    assert all((r["verdict"] == "defect") == (float(r["score"]) >= 0.5) for r in rows)
    assert metrics["fp"] == int(((scores >= 0.5) & (labels == 0)).sum())

    # Changing only the stored threshold changes FP / FN: everything called defective, then nothing.
    copy = tmp_path / "model-copy"
    shutil.copytree(model_dir, copy)
    _set_threshold(copy, float(scores.min()) - 1e-5)  # scores.csv rounds to 6 places
    low = evaluate_model(copy, data_root, out=tmp_path / "low").metrics
    _set_threshold(copy, float(scores.max()) + 1e-5)
    high = evaluate_model(copy, data_root, out=tmp_path / "high").metrics
    assert (low["fp"], low["fn"]) == (3, 0)
    assert (high["fp"], high["fn"]) == (0, 3)
    assert low["ap"] == high["ap"] == metrics["ap"]  # ranking metrics do not depend on it


def test_corrupt_image_is_reported_and_skipped(model_dir: Path, data_root: Path, tmp_path: Path) -> None:
    test_samples, _ = select_split(read_dataset(data_root).samples, "test")
    broken = Path(test_samples[0].path)
    broken.write_bytes(b"not an image at all")
    report = evaluate_model(model_dir, data_root, out=tmp_path / "eval")
    assert [p.path for p in report.problems] == [str(broken)]
    assert "cannot decode" in report.problems[0].reason
    assert report.metrics["n_skipped"] == 1 and report.metrics["n_images"] == 5
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["skipped"][0]["path"] == str(broken)


def test_default_report_folders_keep_each_datasets_report(
    model_dir: Path, data_root: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "model-copy"
    shutil.copytree(model_dir, copy)
    other = tmp_path / "line 2"  # a second dataset, judged by the same model
    shutil.copytree(data_root, other)
    first = evaluate_model(copy, data_root)
    second = evaluate_model(copy, other)
    assert first.out == copy / f"eval-{data_root.name}-test" and second.out == copy / "eval-line_2-test"
    assert (first.out / "metrics.json").is_file() and (second.out / "metrics.json").is_file()


def test_default_report_folder_names_what_was_given(tmp_path: Path) -> None:
    manifest = tmp_path / "synth" / "manifest.jsonl"
    manifest.parent.mkdir()
    manifest.write_text("")
    link = tmp_path / "line-2"
    link.symlink_to(manifest.parent)
    assert default_report_folder(tmp_path, manifest, "test") == tmp_path / "eval-synth-manifest-test"
    assert default_report_folder(tmp_path, link, "all") == tmp_path / "eval-line-2-all"  # not "synth"
    assert default_report_folder(tmp_path, tmp_path / "Prüfung 3", "test").name == "eval-Prüfung_3-test"


def test_an_unwritable_report_folder_fails_before_scoring(
    model_dir: Path, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*_: object, **__: object) -> None:
        raise AssertionError("scored although the report could not be written")

    monkeypatch.setattr(evaluate_module, "score_dataset", never)
    in_the_way = tmp_path / "report.json"  # --out given a file's name
    in_the_way.write_text("{}")
    with pytest.raises(FileExistsError) as raised:
        evaluate_model(model_dir, data_root, out=in_the_way)
    assert raised.value.filename == str(in_the_way)


def test_load_inspector_expands_home(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(model_dir.parent))
    assert load_inspector(f"~/{model_dir.name}").threshold == load_inspector(model_dir).threshold


def test_score_dataset_and_unlabelled_images(model_dir: Path, data_root: Path) -> None:
    inspector = load_inspector(model_dir)
    samples = read_dataset(data_root).samples[:4]
    samples[0] = samples[0].replace(label=None)
    calls: list[tuple[int, int]] = []
    scored = score_dataset(inspector, samples, progress=lambda done, total: calls.append((done, total)))
    assert isinstance(scored, ScoredSet) and len(scored) == 4 and calls[-1] == (4, 4)
    assert scored.labels[0] == -1 and np.all((scored.scores >= 0) & (scored.scores <= 1))
    metrics = evaluate_scores(scored, inspector.threshold)
    assert metrics["n_images"] == 3 and metrics["n_unlabelled"] == 1
    with pytest.raises(ValueError, match="finite"):
        evaluate_scores(scored, float("nan"))


def test_cli_eval(model_dir: Path, data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli-eval"
    result = runner.invoke(app, ["eval", str(model_dir), "--data", str(data_root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "fp_at_full_recall" in result.output and {p.name for p in out.iterdir()} == REPORT_FILES

    missing = runner.invoke(app, ["eval", str(tmp_path / "nope"), "--data", str(data_root)])
    assert missing.exit_code == 1 and "not a saved defectkit model" in missing.output
    assert "Traceback" not in missing.output
    no_data = runner.invoke(app, ["eval", str(model_dir), "--data", str(tmp_path / "absent")])
    assert no_data.exit_code == 1 and "no such file or directory" in no_data.output

    Path(select_split(read_dataset(data_root).samples, "test")[0][0].path).write_bytes(b"broken")
    partial = runner.invoke(app, ["eval", str(model_dir), "--data", str(data_root), "--out", str(out)])
    assert partial.exit_code == 1 and "1 image(s) could not be used" in partial.output
    assert json.loads((out / "metrics.json").read_text())["metrics"]["n_skipped"] == 1


def test_classifier_metrics_count_unknown_calls_beside_the_confusion_matrix() -> None:
    from defectkit.evaluation.classifier import ClassifiedSet, classifier_metrics

    classified = ClassifiedSet(
        class_names=["crack", "dent"],
        truth=[0, 0, 0, 1, 1],
        called=[0, 1, 0, 1, 1],
        unknown=[False, False, True, False, True],
    )
    metrics = classifier_metrics(classified)
    assert metrics["confusion_matrix"] == [[1, 1], [0, 1]]  # columns: the known classes called
    assert metrics["unknown_by_class"] == {"crack": 1, "dent": 1}
    rows = [
        sum(row) + metrics["unknown_by_class"][name]
        for row, name in zip(metrics["confusion_matrix"], ["crack", "dent"], strict=True)
    ]
    assert rows == [3, 2] and metrics["accuracy"] == pytest.approx(2 / 5)
