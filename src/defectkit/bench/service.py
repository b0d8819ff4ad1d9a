"""``defectkit bench service``: the HTTP service under load, against the bare ONNX Inspector.

One run, on one machine, measures:

1. **bare**: the ONNX :class:`~defectkit.inference.inspector.Inspector` in this process, decoding
   and inspecting the same image bytes one after another: the ceiling a service could reach;
2. **load**: ``defectkit serve`` in its own process (durable commits on, as shipped) and N raw-body
   requests at concurrency C from an async client: throughput, p50/p95/p99 latency, errors, and
   the database's record count against the 2xx responses (they must be equal);
3. **kill**: a fresh service under the same load, killed with SIGKILL half-way, restarted on the
   same database: every inspection that got a 2xx must be there, its stored image still hashing
   to its name and its record equal to the response.

The model is a ``segdec`` at the KolektorSDD ``cpu`` profile's architecture and input size with
random weights (speed does not depend on the weights; ``-V model=DIR`` serves a trained one),
exported to ONNX. Images are generated KolektorSDD-sized greyscale PNGs. Client and server share
the machine, as they would on a station; the bare figure has no client to feed.
"""

from __future__ import annotations

import asyncio
import io
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from defectkit.bench.protocols import (
    REPO_ROOT,
    BenchOptionError,
    BenchRequest,
    option_number,
    register_protocol,
)
from defectkit.bench.results import write_results

PROTOCOL = "service/load"
MODEL_CONFIG = "configs/segdec/kolektorsdd.yaml"
IMAGE_SIZE = (1250, 500)  # height, width: KolektorSDD's
DEFAULTS: dict[str, str] = {
    "requests": "400",
    "concurrency": "8",
    "distinct": "24",
    "model": "",
    "max_batch": "8",
    "max_wait_ms": "5",
}
STARTUP_TIMEOUT_S = 120.0


def generated_images(count: int, size: tuple[int, int] = IMAGE_SIZE, seed: int = 0) -> list[bytes]:
    """``count`` distinct greyscale PNGs: smooth texture plus grain, like a machined surface."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        smooth = ndimage.gaussian_filter(rng.normal(size=size), sigma=12)
        smooth = (smooth - smooth.min()) / (np.ptp(smooth) + 1e-9)
        pixels = np.clip(90 + 80 * smooth + rng.normal(0, 6, size=size), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


def build_model(directory: Path, profile: str) -> Path:
    """A segdec saved like a trained one, at ``profile``'s architecture and input, then exported."""
    import torch

    from defectkit.config import load_config
    from defectkit.inference.export import export_onnx
    from defectkit.inference.saved_model import InputSpec, ModelCard, Thresholds, save_model
    from defectkit.registry import get_method

    config = load_config(REPO_ROOT / MODEL_CONFIG, profile)
    resolved = config.model_dump(mode="json")
    spec = get_method(config.method)
    torch.manual_seed(0)
    model = spec.build_model(resolved).eval()
    card = ModelCard(
        method=config.method,
        model=spec.model_name or spec.name,
        model_options=spec.model_options(resolved),
        config=resolved,
        class_names=["defect"],
        input=InputSpec(
            size=config.input.size,
            channels=config.input.channels,
            mean=config.input.mean,
            std=config.input.std,
        ),
        thresholds=Thresholds(decision=0.5, rule="none: random weights, for speed only"),
    )
    save_model(directory, model, card)
    export_onnx(directory)
    return directory


def bare_throughput(model_dir: Path, images: Sequence[bytes], count: int) -> tuple[float, float]:
    """Images per second and ms per image of decode + ONNX inspect, one after another, no HTTP."""
    from defectkit.data.io import decode_image
    from defectkit.inference.inspector import load_inspector

    inspector = load_inspector(model_dir, backend="onnx")
    for data in images[:3]:  # warm-up: first runs allocate
        inspector.inspect(decode_image(data).pixels)
    started = time.perf_counter()
    for index in range(count):
        inspector.inspect(decode_image(images[index % len(images)]).pixels)
    elapsed = time.perf_counter() - started
    return count / elapsed, 1000.0 * elapsed / count


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ServerProcess:
    """``defectkit serve`` in a child process on a free loopback port."""

    model_dir: Path
    data_dir: Path
    extra: Sequence[str] = ()
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        import httpx

        command = [
            sys.executable, "-m", "defectkit.cli.main", "serve", str(self.model_dir),
            "--port", str(self.port), "--data-dir", str(self.data_dir), *self.extra,
        ]  # fmt: skip
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir.parent / f"server-{self.port}.log"
        with open(log, "ab") as output:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the service exited at start-up (see {log})")
                try:
                    if httpx.get(self.url + "/v1/health", timeout=1.0).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            raise RuntimeError(f"the service did not answer within {STARTUP_TIMEOUT_S:.0f} s")
        except BaseException:
            self.kill()  # given up or interrupted while waiting: no server left running
            raise

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # uvicorn shuts down gracefully on SIGINT
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class LoadReport:
    wall_s: float
    latencies_ms: list[float]
    acknowledged: dict[str, dict[str, Any]]  # id -> response body of every 2xx
    statuses: dict[str, int]  # "200", "413", "connection error", ... -> count

    @property
    def ok(self) -> int:
        return len(self.acknowledged)

    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if not status.startswith("2"))

    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status.startswith("5"))


def run_load(
    url: str,
    images: Sequence[bytes],
    count: int,
    concurrency: int,
    on_ack: Callable[[int], None] | None = None,
) -> LoadReport:
    """POST ``count`` images (raw bodies) at ``concurrency``; ``on_ack(n)`` after the n-th 2xx."""
    import httpx

    latencies: list[float] = []
    acknowledged: dict[str, dict[str, Any]] = {}
    statuses: dict[str, int] = {}

    async def main() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(count):
            queue.put_nowait(index)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as client:

            async def worker() -> None:
                while True:
                    try:
                        index = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    started = time.perf_counter()
                    try:
                        response = await client.post(
                            "/v1/inspect",
                            content=images[index % len(images)],
                            headers={"content-type": "image/png"},
                            params={"name": f"load-{index}.png"},
                        )
                    except httpx.HTTPError as error:
                        key = f"connection error ({type(error).__name__})"
                        statuses[key] = statuses.get(key, 0) + 1
                        continue
                    statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
                    if response.is_success:
                        latencies.append(1000.0 * (time.perf_counter() - started))
                        body = response.json()
                        acknowledged[body["id"]] = body
                        if on_ack is not None:
                            on_ack(len(acknowledged))

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    started = time.perf_counter()
    asyncio.run(main())
    return LoadReport(time.perf_counter() - started, latencies, acknowledged, statuses)


def count_records(data_dir: Path) -> tuple[int, set[str]]:
    from defectkit.serve.records import RecordStore

    store = RecordStore(f"sqlite:///{(data_dir / 'inspections.db').resolve()}")
    try:
        return store.count(), store.ids()
    finally:
        store.close()


@dataclass(frozen=True)
class KillReport:
    acknowledged: int
    lost: int  # acknowledged but missing or damaged after the restart
    records_after_restart: int
    served_after_restart: bool


def kill_and_verify(
    model_dir: Path, data_dir: Path, images: Sequence[bytes], count: int, concurrency: int, kill_after: int
) -> KillReport:
    """Load a fresh service, SIGKILL it after ``kill_after`` 2xx, restart, check every 2xx survived."""
    import httpx

    from defectkit.serve.store import SUFFIXES, ContentStore

    server = ServerProcess(model_dir, data_dir).start()
    killed = threading.Event()

    def maybe_kill(acked: int) -> None:
        if acked >= kill_after and not killed.is_set():
            killed.set()
            server.kill()

    try:
        report = run_load(server.url, images, count, concurrency, on_ack=maybe_kill)
    finally:
        server.kill()
    restarted = ServerProcess(model_dir, data_dir).start()
    try:
        store = ContentStore(data_dir / "images")
        lost = 0
        with httpx.Client(base_url=restarted.url, timeout=30.0) as client:
            for record_id, body in report.acknowledged.items():
                response = client.get(f"/v1/inspections/{record_id}")
                intact = response.status_code == 200 and response.json() == body
                if not intact or not any(store.verify(body["image_sha256"], s) for s in SUFFIXES):
                    lost += 1
            served = client.post(
                "/v1/inspect", content=images[0], headers={"content-type": "image/png"}
            ).is_success
        records, _ = count_records(data_dir)
    finally:
        restarted.stop()
    return KillReport(report.ok, lost, records, served)


def _options(request: BenchRequest) -> dict[str, str]:
    unknown = set(request.variant) - set(DEFAULTS)
    if unknown:
        raise BenchOptionError(f"{PROTOCOL}: unknown option(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    return {**DEFAULTS, **request.variant}


@register_protocol(
    PROTOCOL,
    "HTTP service vs the bare ONNX Inspector: throughput, latency, records, SIGKILL",
    aliases=("service",),
    cells=False,
)
def service_load(request: BenchRequest) -> Path:
    options = _options(request)
    count, concurrency, distinct = (
        option_number(options, key, DEFAULTS[key], int) for key in ("requests", "concurrency", "distinct")
    )
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="defectkit-service-", dir=_scratch(request.work_root)))
    model_dir = Path(options["model"]) if options["model"] else build_model(work / "model", request.profile)
    images = generated_images(distinct)
    _say(request, f"bare ONNX Inspector on {count} images...")
    bare_rps, bare_ms = bare_throughput(model_dir, images, count)

    _say(request, f"service under load: {count} requests at concurrency {concurrency}...")
    extra = ["--max-batch", options["max_batch"], "--max-wait-ms", options["max_wait_ms"]]
    server = ServerProcess(model_dir, work / "load", extra).start()
    try:
        run_load(server.url, images, 2 * concurrency, concurrency)  # warm-up (recorded too)
        warm_records, _ = count_records(work / "load")
        load = run_load(server.url, images, count, concurrency)
    finally:
        server.stop()
    records, _ = count_records(work / "load")
    service_rps = load.ok / load.wall_s

    _say(request, "SIGKILL half-way through a second load, restart, check every acknowledged record...")
    kill = kill_and_verify(model_dir, work / "kill", images, count // 2, concurrency, kill_after=count // 4)
    latencies = np.asarray(load.latencies_ms)
    metrics = {
        "throughput_ratio": service_rps / bare_rps,
        "service_rps": service_rps,
        "bare_rps": bare_rps,
        "bare_ms_per_image": bare_ms,
        "p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else None,
        "p95_ms": float(np.percentile(latencies, 95)) if len(latencies) else None,
        "p99_ms": float(np.percentile(latencies, 99)) if len(latencies) else None,
        "errors": load.errors(),
        "server_errors": load.server_errors(),
        "records_minus_accepted": records - warm_records - load.ok,
        "kill_acknowledged": kill.acknowledged,
        "kill_lost_records": kill.lost,
        "kill_served_after_restart": kill.served_after_restart,
    }
    from defectkit.inference.saved_model import read_card

    card = read_card(model_dir)
    height, width = card.input.size
    served = (
        "the model given"
        if options["model"]
        else f"segdec at the KolektorSDD {request.profile} profile ({height}x{width} input, random weights)"
    )
    notes = (
        f"{served} exported to ONNX; "
        f"generated {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} PNGs sent as raw bodies; durable commits (fsync); "
        f"micro-batching max_batch {options['max_batch']}, max_wait {options['max_wait_ms']} ms; "
        "client and server on the same machine. Bare = decode + ONNX Inspector.inspect in one "
        "process, sequential."
    )

    return write_results(
        protocol=PROTOCOL,
        method=card.method,
        dataset="generated",
        variant={"concurrency": concurrency},
        profile=request.profile,
        metrics=metrics,
        n_images=count,
        command=request.command,
        commit=request.commit,
        wall_time_s=time.perf_counter() - started,
        infer_ms_per_image=1000.0 / service_rps if service_rps else None,
        notes=notes,
        root=request.results_root,
    )


def _scratch(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return root


def _say(request: BenchRequest, message: str) -> None:
    if request.progress:
        print(message, file=sys.stderr, flush=True)
