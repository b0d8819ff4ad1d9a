"""Pictures of an evaluation: precision-recall curve, score histogram, worst-case contact sheet.

Every function here returns PNG bytes or a Pillow image and writes nothing: the caller
(:mod:`defectkit.evaluation.evaluate`) writes them atomically. Figures use matplotlib's
object-oriented API on the Agg canvas, never ``pyplot``: no global figure state, no display
needed, and safe to call from a server or a worker thread. PNGs carry no "Software" metadata so
the same data gives the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw
from sklearn.metrics import precision_recall_curve

from defectkit.data.io import convert_channels
from defectkit.data.sample import Sample
from defectkit.evaluation.contact_sheet import contact_sheet
from defectkit.metrics import average_precision, image_metrics

__all__ = [
    "SheetSection", "confusion_png", "heat_tile", "pr_curve_png", "score_histogram_png", "sectioned_sheet",
]  # fmt: skip

HEADER_PX = 18
# A histogram switches to a log y axis when its tallest bin holds at least LOG_Y_MIN images and
# LOG_Y_RATIO times its lowest non-empty one: with a confident model most good images pile into
# the first bin and would flatten every other bar (the interesting ones) on a linear axis.
LOG_Y_RATIO = 20
LOG_Y_MIN = 50


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def pr_curve_png(labels: np.ndarray, scores: np.ndarray, threshold: float, title: str = "") -> bytes:
    """Precision-recall curve (AP in the title) with the operating point at ``threshold`` marked.

    ``threshold`` is the one stored in the model: the marker shows where the deployed model
    actually works on this data, which a curve alone hides.
    """
    figure = Figure(figsize=(5.0, 4.2), dpi=100)
    axes = figure.add_subplot()
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    ap = average_precision(y, s)
    if 0 < int(y.sum()) < y.size:
        precision, recall, _ = precision_recall_curve(y, s)
        # Step-wise, as scikit-learn's AP integrates it (no interpolation).
        axes.plot(recall, precision, drawstyle="steps-post", color="tab:blue", label="precision-recall")
        point = image_metrics(y, s, threshold)
        axes.plot(
            [point["recall"]],
            [point["precision"]],
            "o",
            color="tab:red",
            label=f"stored threshold {threshold:.3g} (FP {point['fp']}, FN {point['fn']})",
        )
        axes.legend(loc="lower left", fontsize=8)
        heading = f"AP = {ap:.4f}"
    else:
        axes.text(0.5, 0.5, "needs good and defective images", ha="center", va="center")
        heading = "AP undefined (one class)"
    axes.set_xlim(-0.02, 1.02)
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.grid(alpha=0.3)
    axes.set_title(f"{title}: {heading}" if title else heading, fontsize=10)
    figure.tight_layout()
    return _png(figure)


def score_histogram_png(labels: np.ndarray, scores: np.ndarray, threshold: float, title: str = "") -> bytes:
    """Scores of good vs defective images with the stored threshold as a vertical line."""
    figure = Figure(figsize=(5.5, 3.8), dpi=100)
    axes = figure.add_subplot()
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    low = min(0.0, float(s.min())) if s.size else 0.0
    high = max(1.0, float(s.max())) if s.size else 1.0
    bins = np.linspace(low, high, 41)
    counts: list[np.ndarray] = []
    for value, name, colour in ((0, "good", "tab:green"), (1, "defective", "tab:red")):
        group = s[y == value]
        if group.size:
            counts.append(np.histogram(group, bins)[0])
            axes.hist(group, bins=bins.tolist(), alpha=0.55, color=colour, label=f"{name} ({group.size})")
    axes.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.3g}")
    nonzero = np.concatenate(counts)[np.concatenate(counts) > 0] if counts else np.zeros(0)
    if nonzero.size and nonzero.max() >= max(LOG_Y_MIN, LOG_Y_RATIO * nonzero.min()):
        axes.set_yscale("log")
    axes.set_xlabel("defect score")
    axes.set_ylabel("images")
    axes.legend(fontsize=8)
    axes.set_title(f"{title}: image scores" if title else "image scores", fontsize=10)
    figure.tight_layout()
    return _png(figure)


def heat_tile(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """The image (grey) under the heat map in the ``inferno`` colour map, uint8 HxWx3.

    Blended rather than shown alone so a reviewer sees *where* on the part the model looked.
    """
    grey = convert_channels(np.asarray(image), 3).astype(np.float32)
    colours = colormaps["inferno"](np.clip(heatmap, 0.0, 1.0))[..., :3].astype(np.float32) * 255.0
    return ((1.0 - alpha) * grey + alpha * colours).clip(0, 255).astype(np.uint8)


@dataclass
class SheetSection:
    """One titled block of a :func:`sectioned_sheet`: loaded samples and a caption for each."""

    title: str
    samples: Sequence[Sample]
    captions: Sequence[str]


def sectioned_sheet(sections: Sequence[SheetSection], columns: int = 8, tile: int = 160) -> Image.Image:
    """Contact sheets (:func:`~defectkit.evaluation.contact_sheet.contact_sheet`) stacked under headers.

    An empty section still gets its header and a "(none)" line, so "no false negatives" is
    visible rather than a silently missing block.
    """
    blocks: list[Image.Image] = []
    width = columns * tile
    for section in sections:
        header = Image.new("RGB", (width, HEADER_PX), (16, 16, 16))
        ImageDraw.Draw(header).text((4, 3), section.title, fill=(255, 255, 255))
        blocks.append(header)
        if section.samples:
            blocks.append(contact_sheet(section.samples, section.captions, columns=columns, tile=tile))
        else:
            empty = Image.new("RGB", (width, HEADER_PX), (32, 32, 32))
            ImageDraw.Draw(empty).text((4, 3), "(none)", fill=(200, 200, 200))
            blocks.append(empty)
    sheet = Image.new("RGB", (width, sum(b.height for b in blocks)), (32, 32, 32))
    y = 0
    for block in blocks:
        sheet.paste(block, (0, y))
        y += block.height
    return sheet


def dice_iou_boxplot_png(
    dice: Mapping[str, np.ndarray], iou: Mapping[str, np.ndarray], title: str = ""
) -> bytes:
    """Paper 001's Fig. 4: per-image Dice and IoU of each run as box plots (median line, mean
    dot, box the 25-75 % range, whiskers the 2.5-97.5 % range)."""
    figure = Figure(figsize=(max(6.0, 1.1 * len(dice) + 2.0), 7.0), dpi=100)
    for row, (name, values) in enumerate((("Dice", dice), ("IoU", iou))):
        axes = figure.add_subplot(2, 1, row + 1)
        labels = list(values)
        data = [
            np.asarray(v, dtype=np.float64)[~np.isnan(np.asarray(v, dtype=np.float64))]
            for v in values.values()
        ]
        if labels:
            mean_style = {"marker": "o", "markerfacecolor": "black", "markeredgecolor": "black"}
            axes.boxplot(
                data,
                whis=(2.5, 97.5),
                showmeans=True,
                showfliers=False,
                tick_labels=labels,
                medianprops={"color": "tab:red"},
                meanprops=mean_style,
            )
        axes.set_ylabel(f"per-image {name}")
        axes.set_ylim(-0.02, 1.02)
        axes.grid(alpha=0.3, axis="y")
        axes.tick_params(axis="x", labelrotation=30, labelsize=8)
    figure.suptitle(f"{title}: per-image Dice and IoU" if title else "per-image Dice and IoU", fontsize=10)
    figure.tight_layout()
    return _png(figure)


def mla_bars_png(mla: Mapping[tuple[str, str, float], float], title: str = "") -> bytes:
    """Paper 001's Fig. 5: MLA per encoder and initialisation, grouped by training fraction."""
    figure = Figure(figsize=(6.5, 4.0), dpi=100)
    axes = figure.add_subplot()
    fractions = sorted({key[2] for key in mla}, reverse=True)
    runs = sorted({(key[0], key[1]) for key in mla})
    width = 0.8 / max(len(runs), 1)
    for index, (encoder, init) in enumerate(runs):
        heights = [mla.get((encoder, init, f), np.nan) for f in fractions]
        positions = np.arange(len(fractions)) + index * width
        bars = axes.bar(positions, heights, width, label=f"{encoder} ({init})")
        axes.bar_label(bars, fmt="%.3f", fontsize=7)
    axes.set_xticks(np.arange(len(fractions)) + width * (len(runs) - 1) / 2)
    axes.set_xticklabels([f"{f:.0%}" for f in fractions])
    axes.set_xlabel("share of the training data")
    low = min([v for v in mla.values() if np.isfinite(v)], default=0.0)
    axes.set_ylim(max(0.0, low - 0.05), 1.0)
    axes.set_ylabel("multi-label accuracy (MLA)")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3, axis="y")
    axes.set_title(f"{title}: MLA" if title else "MLA", fontsize=10)
    figure.tight_layout()
    return _png(figure)


def validation_curves_png(
    curves: Mapping[str, Sequence[Sequence[Mapping[str, float]]]], title: str = ""
) -> bytes:
    """Paper 001's Fig. 8: validation Dice and MLA after each epoch, one line per run and fold.

    ``curves`` maps a run's name to its folds' curves: a run's folds share a colour and a legend
    entry, since early stopping ends them at different epochs and a mean would jump where one stops.
    """
    figure = Figure(figsize=(10.0, 4.0), dpi=100)
    # One colour per run but for the initialisation: "x imagenet f" and "x random f" share it.
    groups = sorted({name.replace("random", "imagenet") for name in curves})
    folds = max((len(runs) for runs in curves.values()), default=1)
    for column, key in enumerate(("dice", "mla")):
        axes = figure.add_subplot(1, 2, column + 1)
        for name, runs in curves.items():
            colour = f"C{groups.index(name.replace('random', 'imagenet')) % 10}"
            style = "--" if "random" in name else "-"
            labelled = False
            for curve in runs:
                points = [(p["epoch"] + 1, p[key]) for p in curve if key in p and "epoch" in p]
                if not points:
                    continue
                epochs, values = zip(*points, strict=True)
                axes.plot(epochs, values, marker="o", markersize=3, linestyle=style, color=colour,
                          label=None if labelled else name)  # fmt: skip
                labelled = True
        axes.set_xlabel("epoch")
        axes.set_ylabel(f"validation {key.upper() if key == 'mla' else 'Dice'}")
        axes.grid(alpha=0.3)
        if column == 1:
            axes.legend(fontsize=7)
    heading = f"{title}: validation per epoch" if title else "validation per epoch"
    if folds > 1:
        heading += f" (one line per fold, {folds} folds)"
    figure.suptitle(heading, fontsize=10)
    figure.tight_layout()
    return _png(figure)


def dice_difference_png(difference: np.ndarray, title: str = "") -> bytes:
    """Paper 001's Fig. 9: histogram of per-image Dice (ImageNet minus random) with the share of
    images improved, unchanged and worse."""
    values = np.asarray(difference, dtype=np.float64)
    values = values[~np.isnan(values)]
    figure = Figure(figsize=(6.0, 3.8), dpi=100)
    axes = figure.add_subplot()
    axes.hist(values, bins=np.linspace(-1.0, 1.0, 41).tolist(), color="tab:blue", alpha=0.8)
    axes.axvline(0.0, color="tab:red", linewidth=1)
    if values.size:
        better, worse, equal = (float(np.mean(test)) for test in (values > 0, values < 0, values == 0))
        summary = f"improved {better:.0%}, worse {worse:.0%}, equal {equal:.0%} of {values.size}"
    else:
        summary = "no images"
    axes.set_xlabel("per-image Dice, ImageNet minus random")
    axes.set_ylabel("images")
    axes.set_title(f"{title}\n{summary}" if title else summary, fontsize=9)
    figure.tight_layout()
    return _png(figure)


def confusion_png(
    counts: Sequence[Sequence[int]], rows: Sequence[str], columns: Sequence[str], title: str = ""
) -> bytes:
    """A confusion matrix as a picture: counts in the cells, shaded by each row's share."""
    matrix = np.asarray(counts, dtype=float)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1.0)
    figure = Figure(figsize=(1.6 + 1.2 * len(columns), 1.2 + 0.7 * len(rows)), dpi=100)
    axes = figure.add_subplot()
    axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for r in range(len(rows)):
        for c in range(len(columns)):
            colour = "white" if shares[r, c] > 0.6 else "black"
            axes.text(c, r, f"{int(matrix[r, c])}\n{shares[r, c]:.1%}", ha="center", va="center",
                      color=colour, fontsize=8)  # fmt: skip
    axes.set_xticks(range(len(columns)), list(columns))
    axes.set_yticks(range(len(rows)), list(rows))
    axes.set_xlabel("verdict")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    return _png(figure)
