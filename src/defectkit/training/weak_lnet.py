"""Training recipe for ``weak_lnet`` (Xu, Lv, Deng & Li, IEEE Access 2020; paper 004).

The network learns from image labels only (``uses_masks = False``: the data layer hides every
mask). Training is one pass over a strictly alternating positive, negative, positive, ... stream
(``AlternatingSampler``; one *iteration* = one positive and one negative image) in three stages:

1. **LNet collaborative learning** (Algorithm 1): shared layers + LNet minimise the weak loss
   (equations 3-5) of each image's mean heat value ``Q``: ``Q log Q + (1 - Q) log(1 - Q)`` for a
   defective image (maximum entropy: some of it must light up), ``-alpha log(1 - Q)`` for a good
   one (all of it must stay dark). ``alpha`` follows equation 6, ``alpha_init (cos(2 pi i / k) +
   3) / 4`` with ``i`` the number of updates so far (one every ``alpha_every`` iterations) and
   ``k = round(N / alpha_every)``: from ``alpha_init`` down to half of it and back.
   Paper: SGD lr 0.1, 750 iterations, ``alpha_init`` 8, updated every 30 iterations.
2. **DNet**: shared layers and LNet frozen (``freeze_stage2``), the DNet minimises BCE on the
   image label. Paper: lr 0.01, 0.001 after 600 of 1200 iterations. Frozen layers normalise with
   their BatchNorm statistics from stage 1 (eval mode, as at inference); when stage 1 was skipped
   those statistics were never estimated, so the frozen layers use batch statistics instead.
3. **Fine-tuning**: everything trains on ``BCE + stage3_weak_weight * weak loss`` with ``alpha``
   fixed at ``alpha_init``. Paper: lr 0.001, 300 iterations.

``rotation`` turns each training batch by a random multiple of 90 degrees (paper IV.D's
rotation study; off by default, as in the paper's best results) in the stages listed in
``rotation_stages``. IV.D lists the rotations among the "DNet parameter configurations", beside
freezing and the number of defects, so the default turns the DNet stages' images only (2 and 3).
Turning stage 1's too (``rotation_stages: [1, 2, 3]``) measured a collapse on KolektorSDD (cpu
profile): the LNet went dark on every image (``Q`` about 0.001 on defective and good ones alike),
the DNet then never left chance (training BCE about 0.7) and AP fell to 0.14, where the paper
reports rotation costing 2 points of AP. Turning stages 2 and 3 only kept the LNet (``Q`` about
0.2 on defective images, 0.002 on good ones) and gave per-fold AP 0.58, 0.98 and 0.97: the
DNet's training loss swung between 0.03 and 1.9 as turned images met an LNet trained upright.
``lnet_trained`` false skips stage 1 (paper IV.F's "LNet not trained" ablation: stages 2 and 3
unchanged).

**Stage-1 attempts** (not in the paper; ``stage1_attempts``, default 1: the paper's single run).
Stage 1 can fail outright: on KolektorSDD (cpu profile, 968x352) one fold's LNet never lit up on
its defects (``Q`` about 0.01 on defective images, as on good ones, where healthy folds reach
0.1), and nothing after it recovered (test AP 0.64). The failure shows on the held-out images of
the training fold: the AP of ``Q`` (image labels only) was 0.50 there against 0.97-1.00 on healthy
folds. With ``stage1_attempts`` > 1, each attempt ends with that validation AP; below
``stage1_min_val_ap`` the shared layers and the LNet get fresh random weights (the model's own
initialisation, drawn from the seeded random stream) and stage 1 runs again on the next images of
the stream; when no attempt reaches the bar, the best one is kept. Stages 2 and 3 run once. Each
attempt's AP is logged (``val/stage1_ap``, ``val/stage1_attempt``) and announced on the console.

The paper updates after every image (``trainer.batch_size: 1``); the configs use batches of 2,
one positive and one negative, so an iteration is one update on the pair and its BatchNorm
statistics are shared by both images (why: ``norm`` in ``defectkit.models.weak_lnet.model``).
``pair_loss`` says how the pair's losses make that update: ``"mean"`` (the default, what every
committed row measured) moves the weights half as far per iteration as the paper's two per-image
steps; ``"sum"`` moves them as far (to first order, without momentum: two SGD steps at ``lr`` on
one image each, against one on the sum).
The schedule counts the images of one process, so training runs on one device. Momentum and
weight decay are not given in the paper (0).
Every count, learning rate and switch is an option (``method_options``); defaults are the paper's.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import Sampler

from defectkit.config import RunConfig
from defectkit.data.sample import Batch
from defectkit.data.samplers import AlternatingSampler
from defectkit.metrics import average_precision
from defectkit.models.weak_lnet import WeakLNet
from defectkit.registry import MethodSpec, method_options, register_method
from defectkit.training.recipe import DecisionRecipe

DEFAULT_OPTIONS: dict[str, Any] = {
    "lnet_trained": True,
    "stage1_iterations": 750,
    "stage1_lr": 0.1,
    "alpha_init": 8.0,
    "alpha_every": 30,
    "stage2_iterations": 1200,
    "stage2_lr": 0.01,
    "stage2_lr_drop_at": 600,
    "stage2_lr_late": 0.001,
    "freeze_stage2": True,
    "stage3_iterations": 300,
    "stage3_lr": 0.001,
    "stage3_weak_weight": 1.0,
    "rotation": False,
    "rotation_stages": (2, 3),
    "pair_loss": "mean",
    "stage1_attempts": 1,
    "stage1_min_val_ap": 0.9,
}
PAIR_LOSSES = ("mean", "sum")

EPS = 1e-6


def resolved_options(options: dict[str, Any]) -> dict[str, Any]:
    resolved = method_options("weak_lnet", options, DEFAULT_OPTIONS)
    stages = resolved["rotation_stages"]
    # type() and not isinstance(): True is an int but not a stage.
    if not isinstance(stages, list | tuple) or not all(type(s) is int and 1 <= s <= 3 for s in stages):
        raise ValueError(f"weak_lnet: rotation_stages must list stages among 1, 2, 3, got {stages!r}")
    if resolved["rotation"] and not stages:
        raise ValueError("weak_lnet: rotation is on but rotation_stages is empty: no batch would turn")
    resolved["rotation_stages"] = tuple(stages)
    if resolved["pair_loss"] not in PAIR_LOSSES:
        raise ValueError(f"weak_lnet: pair_loss must be one of {PAIR_LOSSES}, got {resolved['pair_loss']!r}")
    attempts = resolved["stage1_attempts"]
    if type(attempts) is not int or attempts < 1:
        raise ValueError(f"weak_lnet: stage1_attempts must be a whole number from 1, got {attempts!r}")
    bar = resolved["stage1_min_val_ap"]
    if type(bar) not in (int, float) or not 0.0 <= bar <= 1.0:
        raise ValueError(f"weak_lnet: stage1_min_val_ap must be an AP between 0 and 1, got {bar!r}")
    return resolved


def stage_lengths(options: dict[str, Any]) -> tuple[int, int, int]:
    """Iterations of stages 1-3 (stage 1 is empty when the LNet is not trained)."""
    first = int(options["stage1_iterations"]) if options["lnet_trained"] else 0
    return first, int(options["stage2_iterations"]), int(options["stage3_iterations"])


def stream_iterations(options: dict[str, Any]) -> int:
    """Iterations the sampler must provide: the schedule plus every stage-1 attempt it may repeat."""
    first, second, third = stage_lengths(options)
    return first * int(options["stage1_attempts"]) + second + third


def collaborative_alpha(iteration: int, total: int, alpha_init: float, every: int) -> float:
    """Equation 6 at 1-based ``iteration`` of ``total``: updated once every ``every`` iterations."""
    updates = max(round(total / every), 1)
    i = min(iteration // every, updates)
    return alpha_init * (math.cos(i / updates * 2.0 * math.pi) + 3.0) / 4.0


def weak_loss(heatmap: Tensor, labels: Tensor, alpha: float) -> Tensor:
    """Equations 3-5 per image, averaged over the batch; only the mean heat value ``Q`` is used.

    ``heatmap`` Bx1xhxw in (0, 1); ``labels`` B in {0, 1}. Defective images: ``Q log Q + (1 - Q)
    log(1 - Q)`` (the negative binary entropy of ``Q``); good images: ``-alpha log(1 - Q)``.
    """
    q = heatmap.mean(dim=(1, 2, 3)).clamp(EPS, 1.0 - EPS)
    positive = labels.float()
    loss_positive = q * torch.log(q) + (1.0 - q) * torch.log(1.0 - q)
    loss_negative = -torch.log(1.0 - q)
    return (positive * loss_positive + alpha * (1.0 - positive) * loss_negative).mean()


class WeakLNetRecipe(DecisionRecipe):
    """Three-stage training of a :class:`WeakLNet` with manual optimisation (the stage decides
    the loss, the learning rate and what is frozen, batch by batch)."""

    def __init__(
        self, model: WeakLNet, momentum: float, weight_decay: float, options: dict[str, Any]
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.model = model
        self.momentum, self.weight_decay = momentum, weight_decay
        self.options = resolved_options(options)
        self.stages = stage_lengths(self.options)
        self.images_seen = 0
        self.current_stage = 0
        self.stage1_attempt = 1
        self._best_stage1: tuple[float, dict[str, Tensor]] | None = None

    @property
    def total_iterations(self) -> int:
        return sum(self.stages)

    def stage_at(self, iteration: int) -> tuple[int, int]:
        """(stage 1-3, 0-based iteration inside it) of a 0-based global iteration; stage 0 = done."""
        for stage, length in enumerate(self.stages, start=1):
            if iteration < length:
                return stage, iteration
            iteration -= length
        return 0, 0

    def learning_rate(self, stage: int, within: int) -> float:
        if stage == 1:
            return float(self.options["stage1_lr"])
        if stage == 2:
            late = within >= int(self.options["stage2_lr_drop_at"])
            return float(self.options["stage2_lr_late" if late else "stage2_lr"])
        return float(self.options["stage3_lr"])

    def alpha(self, stage: int, within: int) -> float:
        alpha_init = float(self.options["alpha_init"])
        if stage != 1:
            return alpha_init
        return collaborative_alpha(within + 1, self.stages[0], alpha_init, int(self.options["alpha_every"]))

    def setup(self, stage: str) -> None:
        if self.trainer.world_size > 1:
            raise ValueError(
                "weak_lnet trains on one device: its three-stage schedule counts the images of one "
                f"process (got {self.trainer.world_size} processes)"
            )

    def _set_mode(self, stage: int) -> None:
        frozen = stage == 2 and bool(self.options["freeze_stage2"])
        # Statistics estimated in stage 1 stay fixed with the weights; untrained ones are not used.
        frozen_stats = frozen and bool(self.options["lnet_trained"])
        for part in (self.model.shared, self.model.lnet):
            part.train(not frozen_stats)
            part.requires_grad_(not frozen)
        self.model.dnet.train(stage != 1)
        self.model.dnet.requires_grad_(stage != 1)

    def stage1_validation_ap(self) -> float:
        """AP of the mean heat value ``Q`` on the validation images (image labels only), the shared
        layers and LNet in eval mode (their BatchNorm statistics from stage 1, as inference uses)."""
        datamodule = getattr(self.trainer, "datamodule", None)  # set by fit(datamodule=...)
        if datamodule is None:
            raise ValueError("weak_lnet: stage1_attempts > 1 judges stage 1 on validation images; none given")
        modes = [part.training for part in (self.model.shared, self.model.lnet)]
        self.model.shared.eval()
        self.model.lnet.eval()
        q, labels = [], []
        with torch.no_grad():
            for batch in datamodule.val_dataloader():
                batch = batch.to(self.device)
                q.append(torch.sigmoid(self.model.localise(batch.images)).mean(dim=(1, 2, 3)).float())
                labels.append(batch.label)
        self.model.shared.train(modes[0])
        self.model.lnet.train(modes[1])
        scores, known = torch.cat(q).cpu().numpy(), torch.cat(labels).cpu().numpy()
        scores, known_labels = scores[known >= 0], known[known >= 0]
        if not (known_labels == 1).any() or not (known_labels == 0).any():
            raise ValueError(
                "weak_lnet: stage1_attempts > 1 needs validation images of both labels to judge stage 1"
            )
        return float(average_precision(known_labels, scores))

    def _localisation_state(self) -> dict[str, Tensor]:
        """A copy of the shared layers' and LNet's weights and statistics, keyed as the model's own."""
        return {
            k: v.detach().clone() for k, v in self.model.state_dict().items() if not k.startswith("dnet.")
        }

    def _end_stage1(self) -> bool:
        """Judge the attempt that just ended; True when stage 1 starts again with fresh weights."""
        attempts = int(self.options["stage1_attempts"])
        if attempts == 1:
            return False
        ap, bar = self.stage1_validation_ap(), float(self.options["stage1_min_val_ap"])
        if self.logger is not None:
            metrics = {"val/stage1_ap": ap, "val/stage1_attempt": float(self.stage1_attempt)}
            self.logger.log_metrics(metrics, step=self.global_step)
        verdict = f"stage 1, attempt {self.stage1_attempt} of {attempts}: validation AP of Q {ap:.3f}"
        if ap >= bar:
            rank_zero_info(f"{verdict}, kept")
            self._best_stage1 = None
            return False
        if self._best_stage1 is None or ap > self._best_stage1[0]:
            self._best_stage1 = (ap, self._localisation_state())
        if self.stage1_attempt < attempts:
            rank_zero_info(f"{verdict} < {bar:g}: fresh shared layers and LNet, stage 1 again")
            self.stage1_attempt += 1
            self.model.reset_localisation()
            return True
        best_ap, best_state = self._best_stage1
        rank_zero_info(f"{verdict} < {bar:g}: no attempt left, the best ({best_ap:.3f}) is kept")
        # Only the DNet's keys are missing from the copy, and the DNet has not trained yet.
        self.model.load_state_dict(best_state, strict=False)
        self._best_stage1 = None
        return False

    def training_step(self, batch: Batch, batch_index: int) -> Tensor | None:
        iteration = self.images_seen // 2
        stage, within = self.stage_at(iteration)
        self.images_seen += len(batch)
        if stage == 0:
            return None  # past the schedule (a resumed run whose stream was already consumed)
        optimizer = cast(LightningOptimizer, self.optimizers())
        if stage != self.current_stage:
            optimizer.optimizer.state.clear()  # a new stage starts without the previous one's momentum
            self.current_stage = stage
            self._set_mode(stage)  # freezing and norm modes change only between stages
        for group in optimizer.param_groups:
            group["lr"] = self.learning_rate(stage, within)

        images, labels = batch.images, batch.label
        if self.options["rotation"] and stage in self.options["rotation_stages"]:
            # Paper IV.D: random rotations by 0, 90, 180 or 270 degrees. One draw per batch keeps
            # a positive/negative pair stackable whatever the aspect ratio.
            images = torch.rot90(images, int(torch.randint(0, 4, ()).item()), dims=(-2, -1))
        alpha = self.alpha(stage, within)
        losses: dict[str, Tensor] = {}
        if stage == 1:  # the DNet is not part of stage 1: neither run nor updated
            heatmap = torch.sigmoid(self.model.localise(images))
        else:
            output = self.model(images)
            heatmap = output.heatmap
            losses["dec"] = F.binary_cross_entropy_with_logits(output.decision_logit, labels.float())
        if stage in (1, 3):
            weight = 1.0 if stage == 1 else float(self.options["stage3_weak_weight"])
            losses["weak"] = weight * weak_loss(heatmap, labels, alpha)
        loss = sum(losses.values(), torch.zeros((), device=images.device))
        optimizer.zero_grad()
        # The losses are batch means (logged as such); "sum" steps by the batch's total instead.
        self.manual_backward(loss * len(batch) if self.options["pair_loss"] == "sum" else loss)
        optimizer.step()

        size = len(batch)
        q = heatmap.detach().mean(dim=(1, 2, 3))
        for name, value in losses.items():
            self.log(f"train/{name}_loss", value, batch_size=size)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/stage", float(stage), prog_bar=True, batch_size=size)
        self.log("train/alpha", alpha, batch_size=size)
        if bool((labels == 1).any()):
            self.log("train/q_defective", q[labels == 1].mean(), batch_size=size)
        if bool((labels == 0).any()):
            self.log("train/q_good", q[labels == 0].mean(), batch_size=size)
        # Counted in images, not iterations, so that any batch size ends a stage exactly once.
        stage1_done = stage == 1 and self.images_seen >= 2 * self.stages[0]
        if stage1_done and self._end_stage1():
            self.images_seen, self.current_stage = 0, 0  # the schedule, alpha included, starts again
        elif self.images_seen >= 2 * self.total_iterations and self.stage1_attempt < int(
            self.options["stage1_attempts"]
        ):
            self.trainer.should_stop = True  # the stream holds images for attempts that were not needed
        return loss.detach()

    def decision_logits(self, images: Tensor) -> Tensor:
        return cast(Tensor, self.model(images).decision_logit)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["weak_lnet_images_seen"] = self.images_seen
        # Not the best earlier attempt's weights: a run resumed in a later attempt cannot go back to it.
        checkpoint["weak_lnet_stage1_attempt"] = self.stage1_attempt

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Resuming continues the schedule where it stopped instead of restarting stage 1.
        self.images_seen = int(checkpoint.get("weak_lnet_images_seen", 0))
        self.stage1_attempt = int(checkpoint.get("weak_lnet_stage1_attempt", 1))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # One optimiser; the stage sets its learning rate and which parameters get gradients.
        return torch.optim.SGD(
            self.model.parameters(),
            lr=float(self.options["stage1_lr"]),
            momentum=self.momentum,
            weight_decay=self.weight_decay,
        )


@register_method("weak_lnet", supervision=("weak",), tasks=("decision", "localisation"), paper="004")
class WeakLNetMethod(MethodSpec):
    """Weakly supervised localisation + decision network (paper 004): image labels only."""

    default_config = "configs/weak_lnet/kolektorsdd.yaml"
    model_name = "weak_lnet"
    uses_masks = False

    @classmethod
    def train_sampler(cls, labels: list[int | None], config: RunConfig) -> Sampler[int] | None:
        # The schedule's images, two per iteration over all three stages (and every stage-1 attempt
        # allowed), in one epoch; the recipe stops the epoch early when fewer attempts are needed.
        if config.trainer.epochs != 1:
            raise ValueError(
                f"weak_lnet runs its whole three-stage schedule in one epoch; set trainer.epochs: 1 "
                f"(got {config.trainer.epochs}) and change the method_options iteration counts instead"
            )
        iterations = stream_iterations(resolved_options(config.method_options))
        return AlternatingSampler(labels, seed=config.seed, epoch_size=2 * iterations)

    @classmethod
    def build_recipe(cls, model: Any, config: dict[str, Any]) -> WeakLNetRecipe:
        trainer = config["trainer"]
        return WeakLNetRecipe(
            model, trainer["momentum"], trainer["weight_decay"], config.get("method_options", {})
        )
