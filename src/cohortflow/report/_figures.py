"""The report's figures: ROC curves (one implementation, for the page and ``figures/roc.png``)
and calibration plots, as PNG bytes.  What a figure may show goes through the gate: a ROC
curve of a small group is not drawn (:meth:`Disclosure.curve_shown`).

A figure is first a :class:`Plot`, plain data (the curves' points, the axis limit), then
drawn; so a study of many analyses draws its plots in worker processes
(:class:`Drawer`) while the page is written, and the same plot gives the same bytes in any
process: every plot of a kind is drawn on one reused figure whose every varying part is
reset first, with fixed margins (no tight bounding box: a second layout pass) and no
software or date stamp."""

from __future__ import annotations

import base64
import html
import io
import multiprocessing
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import matplotlib

matplotlib.use("Agg")
import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from cohortflow.disclosure import Disclosure

NOT_DRAWN = ("<p class=note>Not drawn: the test split has fewer than {min_cell_count} persons "
             "with or without the outcome, and a curve would show how many.</p>")
NOT_SHOWN_METRICS = ("<p class=note>Not shown: the test split has fewer than {min_cell_count} "
                     "persons with or without the outcome, and metrics (AUROC, AUPRC, Brier "
                     "score) over so few would show how many had the outcome.</p>")
CALIBRATION_NOT_DRAWN = ("<p class=note>Calibration not drawn: the test split has fewer than "
                         "{min_cell_count} persons with or without the outcome, and a point "
                         "(an observed rate) would show how many.</p>")

Kind = Literal["roc", "calibration"]


@dataclass(frozen=True)
class Curve:
    """One named curve of a plot; no points: a legend entry alone (a curve not drawn)."""

    name: str
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()


@dataclass(frozen=True)
class Plot:
    """A figure as data: its kind, curves (in legend order) and the axes' upper limit."""

    kind: Kind
    curves: tuple[Curve, ...]
    top: float = 1.0


def _test_split(predictions: pl.DataFrame) -> pl.DataFrame:
    return predictions.filter(pl.col("split") == "test")


def roc_shown(predictions: pl.DataFrame, disclosure: Disclosure) -> bool:
    """Whether the ROC curve of the test split may be drawn: enough persons with, and
    without, the outcome (:meth:`Disclosure.curve_shown`)."""
    return disclosure.curve_shown(_test_split(predictions)["label"].cast(pl.Int64).to_list())


def metrics_shown(predictions: pl.DataFrame, disclosure: Disclosure) -> bool:
    """Whether a model's test metrics may be shown: its test split has enough persons with,
    and without, the outcome (:meth:`Disclosure.metrics_shown`, the rule the shared
    leaderboard follows too); else an AUROC over 2 × 6 persons is a multiple of 1/12, and a
    Brier score with its scaled Brier gives the outcome rate.

    >>> from cohortflow.layout import Layout
    >>> gate = Disclosure(Layout.of("results", "s"), 11)
    >>> split = lambda k, n: pl.DataFrame({"label": [1] * k + [0] * (n - k), "split": "test"})
    >>> metrics_shown(split(2, 8), gate), metrics_shown(split(4, 40), gate)
    (False, False)
    >>> metrics_shown(split(12, 40), gate)
    True
    """
    test = _test_split(predictions)
    return disclosure.metrics_shown(test.height, int(test["label"].cast(pl.Int64).sum()))


def calibration_shown(bins: list[dict[str, float]], disclosure: Disclosure) -> bool:
    """Whether a calibration plot of these (raw) test-split bins may be drawn: pooling
    reaches groups of at least ``min_cell_count`` persons with and without the outcome only
    when the whole split has that many; else its one pooled point gives the rate of a
    small group.

    >>> from cohortflow.layout import Layout
    >>> gate = Disclosure(Layout.of("results", "s"), 11)
    >>> [calibration_shown([{"persons": 40, "outcomes": k}], gate) for k in (5, 20, 35)]
    [False, True, False]
    """
    outcomes = int(sum(b["outcomes"] for b in bins))
    persons = int(sum(b["persons"] for b in bins))
    return disclosure.curve_shown([1] * outcomes + [0] * (persons - outcomes))


def roc_points(predictions: pl.DataFrame, disclosure: Disclosure
               ) -> tuple[np.ndarray, np.ndarray] | None:
    """The ROC curve of the test split (false, true positive rates); None when drawing it
    would show a small count."""
    if not roc_shown(predictions, disclosure):
        return None
    test = _test_split(predictions)
    fpr, tpr, _ = roc_curve(test["label"].to_numpy(), test["prediction"].to_numpy())
    return np.asarray(fpr), np.asarray(tpr)


def roc_spec(predictions: Mapping[str, pl.DataFrame], disclosure: Disclosure) -> Plot:
    """The ROC plot of the test split, one curve per named model (:func:`roc_points`); a
    curve of a small group is a legend note only."""
    curves = []
    for name, frame in predictions.items():
        points = roc_points(frame, disclosure)
        if points is None:
            curves.append(Curve(f"{name}: not drawn (fewer than {disclosure.min_cell_count} "
                                "persons with or without the outcome)"))
        else:
            curves.append(Curve(name, tuple(points[0].tolist()), tuple(points[1].tolist())))
    return Plot("roc", tuple(curves))


def calibration_spec(curves: Mapping[str, list[dict[str, float]]]) -> Plot:
    """Observed against predicted risk in (pooled) deciles of the prediction, per named
    model; the axes reach just past the highest point (at least 0.05, at most 1)."""
    top = 0.05
    drawn = []
    for name, points in curves.items():  # no points: a legend note only (not drawn)
        p = tuple(float(pt["predicted"]) for pt in points)
        o = tuple(float(pt["observed"]) for pt in points)
        top = max([top, *p, *o])
        drawn.append(Curve(name, p, o))
    return Plot("calibration", tuple(drawn), min(1.0, top * 1.05))


# Fixed margins (fractions of the 500 x 500 px figure) that hold the title, the axis labels
# and tick labels of four digits.
_MARGINS = {"left": 0.14, "right": 0.96, "bottom": 0.1, "top": 0.94}
_TEXT = {"roc": ("1 - specificity", "sensitivity", "ROC (test split)", "chance"),
         "calibration": ("predicted risk", "observed risk", "Calibration (test split)",
                         "perfect calibration")}


def draw(plot: Plot, fig: Figure | None = None) -> Figure:
    """``plot`` drawn on ``fig`` (cleared of any earlier plot of its kind), or on a new
    figure.  Not pyplot's: the caller owns it, no global state."""
    if fig is None:
        fig = Figure(figsize=(5, 5), dpi=100)
        FigureCanvasAgg(fig)
        fig.subplots_adjust(**_MARGINS)
        fig.add_subplot()
    ax = fig.axes[0]
    for line in list(ax.lines):
        line.remove()
    ax.set_prop_cycle(None)  # colours from the first again
    xlabel, ylabel, title, diagonal = _TEXT[plot.kind]
    for curve in plot.curves:
        if not curve.x:
            ax.plot([], [], lw=0, label=curve.name)
        elif plot.kind == "roc":
            ax.plot(curve.x, curve.y, lw=1.5, label=curve.name)
        else:
            ax.plot(curve.x, curve.y, marker="o", ms=3, lw=1, label=curve.name)
    ax.plot([0, plot.top], [0, plot.top], ls="--", c="grey", lw=1, label=diagonal)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xlim=(0, plot.top), ylim=(0, plot.top))
    ax.legend(loc="lower right" if plot.kind == "roc" else "upper left", fontsize=7)
    return fig


_reused = threading.local()


def to_png(plot: Plot) -> bytes:
    """``plot`` as PNG bytes, drawn on this thread's figure of its kind (made once)."""
    figures: dict[str, Figure] = _reused.__dict__.setdefault("figures", {})
    fig = draw(plot, figures.get(plot.kind))
    figures[plot.kind] = fig
    return png(fig)


def roc_plot(predictions: Mapping[str, pl.DataFrame], disclosure: Disclosure) -> Figure:
    """ROC curves of the test split, one per named model (:func:`roc_points`); a curve of a
    small group is left out, with a note in the legend.  A new figure, the caller's."""
    return draw(roc_spec(predictions, disclosure))


def roc_figure(predictions: Mapping[str, pl.DataFrame], disclosure: Disclosure) -> bytes:
    """:func:`roc_plot` as PNG bytes: the page's ROC curve and ``figures/roc.png``."""
    return to_png(roc_spec(predictions, disclosure))


def calibration_figure(curves: Mapping[str, list[dict[str, float]]]) -> bytes:
    """Observed against predicted risk in (pooled) deciles of the prediction, per named
    model, as PNG bytes."""
    return to_png(calibration_spec(curves))


def png(fig: Figure) -> bytes:
    """A matplotlib figure as PNG bytes (no software stamp: same figure, same bytes)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


class Drawer:
    """Draws plots to PNG bytes: in ``workers`` processes, or in this one when 1.

    The workers come from a fork server (a fresh process that imports this module once,
    then forks each worker): a Snakemake job is a thread of a multi-threaded process, and
    a child forked from one may deadlock on a lock another thread held."""

    def __init__(self, pool: ProcessPoolExecutor | None) -> None:
        self._pool = pool

    def submit(self, plot: Plot) -> Future[bytes]:
        """The PNG bytes of ``plot``, to come."""
        if self._pool is not None:
            return self._pool.submit(to_png, plot)
        done: Future[bytes] = Future()
        done.set_result(to_png(plot))
        return done


@contextmanager
def drawer(workers: int) -> Iterator[Drawer]:
    """A :class:`Drawer` of ``workers`` processes (none when 1), shut down on leaving."""
    if workers <= 1:
        yield Drawer(None)
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield Drawer(pool)


def img(alt: str, data: bytes) -> str:
    """An inline ``<img>`` of PNG bytes (the page needs no other file).

    >>> img("a <b>", b"x")
    '<img alt="a &lt;b&gt;" src="data:image/png;base64,eA==">'
    """
    return (f'<img alt="{html.escape(alt)}" src="data:image/png;base64,'
            f'{base64.b64encode(data).decode()}">')

