"""``aux/...``: paper 000's measurements of Defect-Aux-Net (method ``aux_net``).

``aux/efficiency`` (Tables V-VI): parameters and single-core CPU time per image of the multitask
network against the three single-task networks on the same backbone (a classifier, an FPN
segmenter and a RetinaNet detector: ``aux_net`` built with one head each), at the profile's
config (input size, backbone, widths). Weights do not change either figure, so the networks are
measured as built; time is the median of ``repeats`` forward passes of one image after
``warmup`` passes, ``torch.set_num_threads(1)`` as the paper's one-core Xeon. The paper: 57.1 %
fewer parameters, 45.5 % less time.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch

from defectkit.bench.protocols import REPO_ROOT, BenchRequest, check_options, register_protocol
from defectkit.bench.results import write_results
from defectkit.config import load_config
from defectkit.models import create_model
from defectkit.models.aux_net.model import TASKS

CONFIG = "configs/aux_net/neu-det.yaml"
PAPER_EFFICIENCY = {"params_reduction": 0.571, "time_reduction": 0.455}


def measure(model: torch.nn.Module, size: tuple[int, int], channels: int, warmup: int, repeats: int) -> float:
    """Median milliseconds of one forward pass of one image on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.eval()
        image = torch.rand(1, channels, *size)
        times = []
        with torch.inference_mode():
            for index in range(warmup + repeats):
                started = time.perf_counter()
                model(image)
                if index >= warmup:
                    times.append((time.perf_counter() - started) * 1000.0)
        return statistics.median(times)
    finally:
        torch.set_num_threads(threads)


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@register_protocol("aux/efficiency", "paper 000 Tables V-VI: multitask vs three single-task networks")
def efficiency(request: BenchRequest) -> Path:
    check_options(request.variant, ("num_classes", "repeats"), "aux/efficiency")
    config = load_config(REPO_ROOT / CONFIG, request.profile, request.overrides)
    num_classes = int(request.variant.get("num_classes", "6"))
    repeats = int(request.variant.get("repeats", "20"))
    size = (int(config.input.size[0]), int(config.input.size[1]))
    options: dict[str, Any] = {
        **config.model,
        "num_classes": num_classes,
        "in_channels": config.input.channels,
    }
    started = time.perf_counter()
    figures: dict[str, tuple[int, float]] = {}
    for name, tasks in (("multitask", TASKS), *((task, (task,)) for task in TASKS)):
        model = create_model("aux_net", **{**options, "tasks": list(tasks)})
        figures[name] = (parameters(model), measure(model, size, config.input.channels, 3, repeats))
    single_params = sum(figures[t][0] for t in TASKS)
    single_ms = sum(figures[t][1] for t in TASKS)
    metrics = {
        "params_reduction": 1.0 - figures["multitask"][0] / single_params,
        "time_reduction": 1.0 - figures["multitask"][1] / single_ms,
        "params_m_multitask": figures["multitask"][0] / 1e6,
        "params_m_single_total": single_params / 1e6,
        "ms_multitask": figures["multitask"][1],
        "ms_single_total": single_ms,
        **{f"params_m_{task}": figures[task][0] / 1e6 for task in TASKS},
        **{f"ms_{task}": figures[task][1] for task in TASKS},
    }
    return write_results(
        protocol="aux/efficiency",
        method="aux_net",
        dataset="none",
        variant={"backbone": str(config.model.get("backbone")), "input": f"{size[0]}x{size[1]}"},
        profile=request.profile,
        metrics=metrics,
        n_images=1,
        paper=PAPER_EFFICIENCY,
        wall_time_s=time.perf_counter() - started,
        infer_ms_per_image=figures["multitask"][1],
        command=request.command,
        commit=request.commit,
        init="random",
        notes=f"one thread, batch 1, median of {repeats} passes after 3; {num_classes} classes; the paper "
        "measured ResNet-50 networks on a one-core Xeon at 2.2 GHz (its input size is not given)",
        root=request.results_root,
    )
