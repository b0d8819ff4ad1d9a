"""Shared fixtures: tiny datasets written in each format's real layout, and real-data locations."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def save(path: Path, array: np.ndarray, palette: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array.astype(np.uint8))
    if palette:
        image = image.convert("P")
    image.save(path)
    return path


def texture(seed: int, height: int = 64, width: int = 48, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 1 else (height, width, channels)
    return rng.integers(60, 200, size=shape, dtype=np.uint8)


@pytest.fixture
def ksdd_root(tmp_path: Path) -> Path:
    """Three parts of KolektorSDD: kos01 (one defective of two), kos02 (good), kos03 (duplicate of kos01)."""
    root = tmp_path / "kolektorsdd"
    for part, seeds in (("kos01", (1, 2)), ("kos02", (3, 4)), ("kos03", (1, 5))):
        for index, seed in enumerate(seeds):
            save(root / part / f"Part{index}.jpg", texture(seed))
            mask = np.zeros((64, 48), dtype=np.uint8)
            if part == "kos01" and index == 1:
                mask[10:20, 5:15] = 255
            save(root / part / f"Part{index}_label.bmp", mask, palette=True)
    return root


@pytest.fixture
def neu_det_root(tmp_path: Path) -> Path:
    root = tmp_path / "NEU-DET"
    boxes = {
        "crazing_1": [("crazing", 1, 1, 40, 30)],
        "scratches_2": [("scratches", 5, 5, 20, 64), ("inclusion", 30, 30, 48, 48)],
    }
    for index, (stem, objects) in enumerate(boxes.items()):
        save(root / "IMAGES" / f"{stem}.jpg", texture(index, 64, 64, 3))
        xml = "".join(
            f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
            for n, a, b, c, d in objects
        )
        (root / "ANNOTATIONS").mkdir(parents=True, exist_ok=True)
        (root / "ANNOTATIONS" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>64</width><height>64</height><depth>1</depth></size>{xml}</annotation>"
        )
    return root


@pytest.fixture
def real_data() -> Callable[[str], Path]:
    """``real_data("kolektorsdd")``: the unpacked dataset, or skip with the reason."""

    def locate(name: str) -> Path:
        base = os.environ.get("DEFECTKIT_DATA")
        if not base:
            pytest.skip(
                f"DEFECTKIT_DATA is not set; {name} tests need the real dataset (see shared/data/unpack.sh)"
            )
        root = Path(base) / name
        if not root.is_dir():
            pytest.skip(f"{root} is missing; unpack the datasets with shared/data/unpack.sh")
        return root

    return locate


TINY_SEGDEC = {"volume_channels": 16, "widths": [8, 8, 8], "decision_widths": [4, 4, 4]}
TINY_WEAK_LNET = {
    "shared_widths": [4, 4, 8, 8],
    "lnet_widths": [4, 4],
    "lnet_volume": 8,
    "dnet_widths": [4, 4, 4, 8, 8],
    "fc_width": 8,
}
TINY_TLU_NET = {"encoder": "tf_efficientnet_lite0", "decoder_channels": [16, 16, 8, 8, 8]}
TINY_AUX_NET = {
    "backbone": "tf_efficientnet_lite0",
    "num_classes": 1,
    "pyramid_channels": 16,
    "segmentation_channels": 8,
    "anchor_sizes": [16, 32, 64, 128],
}
TINY_MODELS = {
    "segdec": TINY_SEGDEC,
    "weak_lnet": TINY_WEAK_LNET,
    "tlu_net": TINY_TLU_NET,
    "aux_net": TINY_AUX_NET,
}


def tiny_model(
    directory: Path,
    method: str,
    channels: int = 1,
    decision: float = 0.5,
    size: tuple[int, int] = (96, 64),
    seed: int = 0,
    options: dict[str, Any] | None = None,
    class_names: list[str] | None = None,
) -> Path:
    """A random-weight model of ``method`` saved like a trained one: fast to build, export and run.
    ``options`` are model options on top of the tiny ones; ``class_names`` default to one, "defect".

    Sides must be multiples of 64: segdec and weak_lnet halve them three times in each subnetwork
    (tlu_net needs multiples of 32).
    """
    import torch

    from defectkit.inference.saved_model import InputSpec, ModelCard, Thresholds, save_model
    from defectkit.models import create_model

    torch.manual_seed(seed)
    model_options = {**TINY_MODELS[method], "in_channels": channels, **(options or {})}
    norm = (0.5,) * channels, (0.25,) * channels
    card = ModelCard(
        method=method,
        model=method,
        model_options=model_options,
        input=InputSpec(size=size, channels=channels, mean=norm[0], std=norm[1]),
        thresholds=Thresholds(decision=decision),
        class_names=class_names or ["defect"],
        multilabel=method in ("tlu_net", "aux_net"),  # as training writes it
    )
    model = create_model(method, **model_options).eval()
    if method in ("weak_lnet", "tlu_net", "aux_net"):
        # Fresh BatchNorm statistics are the identity; make them non-trivial so export must carry them.
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return save_model(directory, model, card)


def tiny_segdec(
    directory: Path, channels: int = 1, decision: float = 0.5, size: tuple[int, int] = (96, 64), seed: int = 0
) -> Path:
    return tiny_model(directory, "segdec", channels, decision, size, seed)


def with_changes(config: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """``config`` with each ``section__key=value`` set (``trainer__epochs=3``); returns ``config``."""
    for dotted, value in changes.items():
        node = config
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return config


@pytest.fixture
def one_thread() -> Any:
    """torch on one thread: tests share two cores with other work, and two fighting is slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def png_bytes(seed: int = 0, height: int = 96, width: int = 64, channels: int = 1) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(texture(seed, height, width, channels)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def served_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny segdec exported to ONNX, as ``defectkit serve`` would serve it."""
    from defectkit.inference.export import export_onnx

    directory = tiny_segdec(tmp_path_factory.mktemp("serve") / "tiny-segdec")
    export_onnx(directory)
    return directory


@pytest.fixture
def serve_settings(served_model: Path, tmp_path: Path) -> Any:
    pytest.importorskip("fastapi", reason="the service needs the serve extra")
    pytest.importorskip("sqlalchemy", reason="the service needs the serve extra")
    from defectkit.serve import ServeSettings

    return ServeSettings(model_dir=served_model, data_dir=tmp_path / "serve", max_wait_ms=2.0, durable=False)


@pytest.fixture
def client(serve_settings: Any) -> Any:
    """A TestClient of the service (lifespan run, so the batcher stops at the end)."""
    from fastapi.testclient import TestClient

    from defectkit.serve import create_app

    with TestClient(create_app(serve_settings)) as test_client:
        yield test_client
