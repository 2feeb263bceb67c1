"""The report's figures: ROC curves (one implementation, for the page and ``figures/roc.png``)
and calibration plots, as PNG bytes.  What a figure may show goes through the gate: a ROC
curve of a small group is not drawn (:meth:`Disclosure.curve_shown`)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from cohortflow.disclosure import Disclosure

NOT_DRAWN = ("<p class=note>Not drawn: the test split has fewer than {min_cell_count} persons "
             "with or without the outcome, and a curve would show how many.</p>")


def _test_split(predictions: pl.DataFrame) -> pl.DataFrame:
    return predictions.filter(pl.col("split") == "test")


def roc_shown(predictions: pl.DataFrame, disclosure: Disclosure) -> bool:
    """Whether the ROC curve of the test split may be drawn: enough persons with, and
    without, the outcome (:meth:`Disclosure.curve_shown`)."""
    return disclosure.curve_shown(_test_split(predictions)["label"].cast(pl.Int64).to_list())


def roc_points(predictions: pl.DataFrame, disclosure: Disclosure
               ) -> tuple[np.ndarray, np.ndarray] | None:
    """The ROC curve of the test split (false, true positive rates); None when drawing it
    would show a small count."""
    if not roc_shown(predictions, disclosure):
        return None
    test = _test_split(predictions)
    fpr, tpr, _ = roc_curve(test["label"].to_numpy(), test["prediction"].to_numpy())
    return np.asarray(fpr), np.asarray(tpr)


def roc_plot(predictions: Mapping[str, pl.DataFrame], disclosure: Disclosure) -> Figure:
    """ROC curves of the test split, one per named model (:func:`roc_points`); a curve of a
    small group is left out, with a note in the legend.  The caller closes the figure."""
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    for name, frame in predictions.items():
        points = roc_points(frame, disclosure)
        if points is None:
            ax.plot([], [], lw=0, label=f"{name}: not drawn (fewer than "
                                        f"{disclosure.min_cell_count} persons with or without "
                                        "the outcome)")
        else:
            ax.plot(*points, lw=1.5, label=name)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="chance")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC (test split)",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right", fontsize=7)
    return fig


def roc_figure(predictions: Mapping[str, pl.DataFrame], disclosure: Disclosure) -> bytes:
    """:func:`roc_plot` as PNG bytes: the page's ROC curve and ``figures/roc.png``."""
    return png(roc_plot(predictions, disclosure))


def calibration_figure(curves: Mapping[str, list[dict[str, float]]]) -> bytes:
    """Observed against predicted risk in (pooled) deciles of the prediction, per named
    model, as PNG bytes."""
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    top = 0.05
    for name, points in curves.items():
        p = [pt["predicted"] for pt in points]
        o = [pt["observed"] for pt in points]
        top = max(top, *p, *o)
        ax.plot(p, o, marker="o", ms=3, lw=1, label=name)
    top = min(1.0, top * 1.05)
    ax.plot([0, top], [0, top], ls="--", c="grey", lw=1, label="perfect calibration")
    ax.set(xlabel="predicted risk", ylabel="observed risk", title="Calibration (test split)",
           xlim=(0, top), ylim=(0, top))
    ax.legend(loc="upper left", fontsize=7)
    return png(fig)


def png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes (no software stamp: same figure, same bytes); closes
    the figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def img(alt: str, data: bytes) -> str:
    """An inline ``<img>`` of PNG bytes (the page needs no other file).

    >>> img("a <b>", b"x")
    '<img alt="a &lt;b&gt;" src="data:image/png;base64,eA==">'
    """
    return (f'<img alt="{html.escape(alt)}" src="data:image/png;base64,'
            f'{base64.b64encode(data).decode()}">')
