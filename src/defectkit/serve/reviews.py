"""The feedback loop: reviewed inspections become a training set that ``defectkit train`` reads.

``export_reviews`` writes DESIGN.md's generic manifest (``manifest.jsonl`` + ``dataset.json``) and
copies each reviewed image beside it. The label is the operator's, never the model's; the model's
verdict and score travel as extra columns, so a later run can study where the two disagreed. An
image inspected (and reviewed) more than once appears once, with its latest review.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from defectkit.data.formats.manifest import check_manifest_target, write_manifest
from defectkit.data.sample import Dataset, DatasetInfo, Sample
from defectkit.serve.records import InspectionRecord, RecordStore, as_utc
from defectkit.serve.store import ContentStore

EXTRA_COLUMNS = ("inspection_id", "model_verdict", "model_score", "reviewed_at", "note", "station")


class ExportError(ValueError):
    """Nothing to export, or a stored image that is gone or no longer matches its hash."""


def _latest_per_image(records: Sequence[InspectionRecord]) -> list[InspectionRecord]:
    latest: dict[str, InspectionRecord] = {}
    for record in records:
        known = latest.get(record.image_sha256)
        if known is None or as_utc(record.reviewed_at or record.created) >= as_utc(
            known.reviewed_at or known.created
        ):
            latest[record.image_sha256] = record
    return sorted(latest.values(), key=lambda r: as_utc(r.created))


def export_reviews(
    records: RecordStore,
    store: ContentStore,
    out: str | Path,
    name: str = "reviews",
    *,
    replace: bool = False,
    on_damaged: Callable[[str], None] | None = None,
) -> Path:
    """Write the reviewed images under ``out`` as a manifest; returns the manifest's path.

    A folder that already holds a dataset is refused unless ``replace`` (a
    :class:`~defectkit.data.formats.manifest.ManifestTargetError`), before anything is written. A
    stored image that is gone or damaged stops the export (:class:`ExportError`), or, given
    ``on_damaged``, is reported to it and left out while the others are exported.
    """
    chosen = _latest_per_image(records.reviewed())
    if not chosen:
        raise ExportError("no reviewed inspections to export; review some on the service's page first")
    out = Path(out).expanduser()
    manifest = check_manifest_target(out / "manifest.jsonl", replace=replace)
    intact = []
    for record in chosen:
        if store.verify(record.image_sha256, record.image_format):
            intact.append(record)
            continue
        source = store.path(record.image_sha256, record.image_format)
        problem = f"{source}: stored image of inspection {record.id} is missing or damaged"
        if on_damaged is None:
            raise ExportError(problem)
        on_damaged(problem)
    chosen = intact
    if not chosen:
        raise ExportError("no reviewed inspection has its stored image intact; nothing exported")
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    class_names = sorted({r.review_class for r in chosen if r.review_class})
    ids = {n: i + 1 for i, n in enumerate(class_names)}
    samples = []
    for record in chosen:
        source = store.path(record.image_sha256, record.image_format)
        target = images / source.name
        if not target.is_file():
            shutil.copyfile(source, target)
        label = 1 if record.review_verdict == "defect" else 0
        classes = [ids[record.review_class]] if label and record.review_class else None
        meta = {
            "inspection_id": record.id,
            "model_verdict": record.verdict,
            "model_score": round(record.score, 6),
            "reviewed_at": as_utc(record.reviewed_at or record.created).isoformat(),
            "note": record.review_note or "",
            "station": record.station or "",
        }
        samples.append(
            Sample(
                str(target),
                label=label,
                classes=[] if not label else classes,
                surface=record.surface,
                meta=meta,
            )
        )
    info = DatasetInfo(name=name, format="manifest", root=str(out), class_names=class_names)
    return write_manifest(Dataset(samples, info, []), manifest, meta_columns=EXTRA_COLUMNS)


def zip_folder(folder: Path, target: Path) -> Path:
    """``folder``'s files in one zip (stored, not compressed: the images are already compressed)."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return target
