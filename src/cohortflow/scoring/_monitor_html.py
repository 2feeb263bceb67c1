"""The monitoring page of a series of scoring runs: one offline HTML file (no script, nothing
loaded, plots as inline SVG), the same bytes for the same runs.

A run is a mapping ``{"as_of": "2025-03-31", "drift": <drift()>, "prospective":
<prospective() or None>}`` (:mod:`cohortflow.scoring._drift`); its numbers are shown as
those functions gave them, so a count below the study's ``min_cell_count`` is never on the
page (they hold none).  The page: the latest run's flags first, then the score PSI, mean
score and prospective AUROC over the as-of dates, a table of the runs, and the latest run's
feature drift (the features of highest PSI, flagged rows marked), new and vanished codes and
the largest changes of missingness.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from cohortflow.errors import DriftError
from cohortflow.html_style import BASE_CSS, document

TOP = 20  # rows of the feature drift and missingness tables
WIDTH, HEIGHT, LEFT, RIGHT, TOP_MARGIN, BOTTOM = 370, 220, 48, 12, 24, 40  # three a row
COLOURS = {"line": "#1f5fa8", "drift": "#b3261e", "watch": "#b26a00", "ref": "#666"}

CSS = BASE_CSS + """
#flags { border: 2px solid #ccc; padding: .2rem 1rem 1rem; margin: 1rem 0; }
#flags.drift { border-color: #b3261e; } #flags.watch { border-color: #b26a00; }
#flags.clear { border-color: #2e7d32; }
tr.drift td { background: #fbe9e7; } tr.watch td { background: #fff4e0; }
.level { font-weight: 600; text-transform: uppercase; font-size: .8rem; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; } figcaption { font-size: .9rem; color: #444; max-width: 370px; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
ul.codes { columns: 3; font-family: ui-monospace, monospace; font-size: .85rem; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    """A number as shown: fixed decimals; a withheld or missing value as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _e(value)  # a suppressed count ("<11") or a word
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}"


def _score(run: Mapping[str, Any]) -> dict[str, Any]:
    return dict(run["drift"].get("score", {}))


def _auroc(run: Mapping[str, Any]) -> tuple[float, float, float] | None:
    found = run.get("prospective") or {}
    if found.get("auroc") is None:
        return None
    low, high = found["auroc_ci"]
    return found["auroc"], low, high


# ---- plots ---------------------------------------------------------------------------------

def _plot(caption: str, dates: Sequence[str], values: Sequence[float | None],
          lines: Sequence[tuple[str, float, str]] = (),
          bars: Sequence[tuple[float, float] | None] = ()) -> str:
    """One small line plot over the as-of dates (evenly spaced): the ``values`` (None: no
    point), horizontal reference ``lines`` (label, y, colour) and vertical ``bars`` (an
    interval per date, e.g. a confidence interval)."""
    shown = [v for v in values if v is not None]
    ys = shown + [y for _, y, _ in lines] + [b for bar in bars if bar for b in bar]
    low, high = (min(ys), max(ys)) if ys else (0.0, 1.0)
    pad = (high - low) * 0.1 or max(abs(high) * 0.1, 0.01)
    low, high = low - pad, high + pad
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP_MARGIN - BOTTOM

    def x_at(i: int) -> float:
        return LEFT + (inner_w * (i + 0.5) / len(dates) if dates else 0)

    def y_at(v: float) -> float:
        return TOP_MARGIN + inner_h * (high - v) / (high - low)

    parts = [f'<rect x="{LEFT}" y="{TOP_MARGIN}" width="{inner_w}" height="{inner_h}" '
             'fill="#fafafa" stroke="#ccc"/>']
    for tick in (low + pad, (low + high) / 2, high - pad):
        parts.append(f'<text x="{LEFT - 6}" y="{y_at(tick) + 4:.1f}" text-anchor="end">'
                     f"{tick:.3f}</text>")
    for i, date in enumerate(dates):
        parts.append(f'<text x="{x_at(i):.1f}" y="{HEIGHT - BOTTOM + 16}" '
                     f'text-anchor="middle">{_e(date)}</text>')
    for label, y, colour in lines:
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y_at(y):.1f}" '
                     f'y2="{y_at(y):.1f}" stroke="{colour}" stroke-dasharray="4 3"/>'
                     f'<text x="{WIDTH - RIGHT - 4}" y="{y_at(y) - 4:.1f}" text-anchor="end" '
                     f'style="fill:{colour}">{_e(label)}</text>')
    for i, bar in enumerate(bars):
        if bar:
            parts.append(f'<line x1="{x_at(i):.1f}" x2="{x_at(i):.1f}" y1="{y_at(bar[0]):.1f}"'
                         f' y2="{y_at(bar[1]):.1f}" stroke="{COLOURS["line"]}" '
                         'stroke-width="2" opacity=".5"/>')
    points = [(x_at(i), y_at(v), dates[i], v) for i, v in enumerate(values) if v is not None]
    if len(points) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{COLOURS["line"]}" '
                     'stroke-width="2"/>')
    for x, y, date, v in points:
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{COLOURS["line"]}">'
                     f"<title>{_e(date)}: {v:.4f}</title></circle>")
    if not points:
        parts.append(f'<text x="{WIDTH / 2:.1f}" y="{HEIGHT / 2:.1f}" text-anchor="middle">'
                     "nothing to show yet</text>")
    return (f'<figure><svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
            f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
            f'aria-label="{_e(caption)}"><title>{_e(caption)}</title>{"".join(parts)}</svg>'
            f"<figcaption>{_e(caption)}</figcaption></figure>\n")


def _plots(runs: Sequence[Mapping[str, Any]]) -> str:
    dates = [str(r["as_of"]) for r in runs]
    thresholds = runs[-1]["drift"].get("thresholds", {})
    psi_lines = [(f"{name} {thresholds[f'psi_{name}']}", thresholds[f"psi_{name}"],
                  COLOURS[name]) for name in ("watch", "drift") if f"psi_{name}" in thresholds]
    training_mean = next((_score(r)["training_mean"] for r in reversed(runs)
                          if _score(r).get("training_mean") is not None), None)
    aurocs = [_auroc(r) for r in runs]
    training_auroc = next((r["prospective"]["training_auroc"] for r in reversed(runs)
                           if (r.get("prospective") or {}).get("training_auroc") is not None),
                          None)
    return "".join([
        '<div class="plots">\n',
        _plot("Score PSI against training", dates, [_score(r).get("psi") for r in runs],
              psi_lines),
        _plot("Mean predicted risk", dates, [_score(r).get("mean") for r in runs],
              [("training", training_mean, COLOURS["ref"])] if training_mean is not None
              else []),
        _plot("Prospective AUROC (95% CI), where outcomes are known", dates,
              [a[0] if a else None for a in aurocs],
              [("training test", training_auroc, COLOURS["ref"])]
              if training_auroc is not None else [],
              [(a[1], a[2]) if a else None for a in aurocs]),
        "</div>\n"])


# ---- tables --------------------------------------------------------------------------------

def _flags(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [*run["drift"].get("flags", []), *(run.get("prospective") or {}).get("flags", [])]


def _flag_section(run: Mapping[str, Any]) -> str:
    flags = _flags(run)
    levels = {f["level"] for f in flags}
    worst = "drift" if "drift" in levels else "watch" if levels else "clear"
    head = (f'<section id="flags" class="{worst}"><h2>Flags of the latest run '
            f'({_e(run["as_of"])})</h2>\n')
    withheld = [f"{what}: {_e(part['withheld'])}" for what, part in
                (("drift", run["drift"]), ("prospective", run.get("prospective") or {}))
                if part.get("withheld")]
    note = "".join(f'<p class="note">Not shown, {w}.</p>\n' for w in withheld)
    if not flags:
        return head + ('<p class="level">No flags: no feature or score shifted past the '
                       "watch threshold, and the model's performance, where known, is as "
                       f"in training.</p>\n{note}</section>\n")
    counts = ", ".join(f"{sum(f['level'] == lv for f in flags)} {lv}" for lv in ("drift", "watch")
                       if lv in levels)
    rows = "".join(
        f'<tr class="{f["level"]}"><td class="level">{_e(f["level"])}</td>'
        f"<td>{_e(f['feature'])}</td><td>{_e(f['statistic'])}</td>"
        f'<td class=n>{_value(f)}</td><td class=n>{_threshold(f["threshold"])}</td>'
        "</tr>\n" for f in flags)
    return (head + f'<p class="level">{len(flags)} flags ({counts})</p>\n'
            "<table><tr><th>Level</th><th>Feature</th><th>Statistic</th><th>Value</th>"
            f"<th>Threshold</th></tr>\n{rows}</table>\n{note}</section>\n")


def _value(flag: Mapping[str, Any]) -> str:
    if flag["statistic"] == "new_codes":
        n = flag["value"]
        return f"{n:,} code{'' if n == 1 else 's'}"  # a number of codes, not of persons
    return _num(flag["value"])


def _threshold(value: Any) -> str:
    if isinstance(value, list):
        return " to ".join(_num(v, 2) for v in value)
    return _num(value, 2) if isinstance(value, float) else _num(value)


def _runs_table(runs: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for run in reversed(runs):
        score, found = _score(run), run.get("prospective") or {}
        auroc = _auroc(run)
        shown = f"{auroc[0]:.3f} ({auroc[1]:.3f}–{auroc[2]:.3f})" if auroc else "—"
        flags = _flags(run)
        rows.append(
            f"<tr><td>{_e(run['as_of'])}</td><td class=n>{_num(run['drift'].get('persons'))}"
            f'</td><td class=n>{_num(score.get("psi"))}</td>'
            f'<td class=n>{_num(score.get("mean"))}</td>'
            f'<td class=n>{_num(found.get("persons"))}</td>'
            f"<td class=n>{shown}</td>"
            f'<td class=n>{_num(found.get("calibration_intercept"))}</td>'
            f'<td class=n>{_num(found.get("calibration_slope"))}</td>'
            f'<td class=n>{_num(found.get("observed_rate"))} / '
            f'{_num(found.get("expected_rate"))}</td>'
            f'<td class=n>{sum(f["level"] == "drift" for f in flags)} / '
            f'{sum(f["level"] == "watch" for f in flags)}</td></tr>\n')
    return ('<table><tr><th>As of</th><th>Persons scored</th><th>Score PSI</th>'
            "<th>Mean risk</th><th>Persons with outcome known</th><th>AUROC (95% CI)</th>"
            "<th>Calibration in the large</th><th>Calibration slope</th>"
            "<th>Observed / expected rate</th><th>Flags (drift / watch)</th></tr>\n"
            + "".join(rows) + "</table>\n")


def _feature_table(run: Mapping[str, Any]) -> str:
    features = run["drift"].get("features", {})
    flagged = {(f["feature"]): f["level"] for f in reversed(run["drift"].get("flags", []))}
    ranked = sorted((f for f in features.items() if "psi" in f[1]),
                    key=lambda f: (-f[1]["psi"], f[0]))[:TOP]
    if not ranked:
        return '<p class="note">No feature compared (withheld).</p>\n'
    rows = "".join(
        f'<tr class="{flagged.get(name, "")}"><td>{_e(name)}</td>'
        f'<td class=n>{_num(found["psi"], 4)}</td>'
        f'<td class=n>{_num(found["missing"]["training"])}</td>'
        f'<td class=n>{_num(found["missing"]["now"])}</td>'
        f'<td class="level">{_e(flagged.get(name, ""))}</td></tr>\n' for name, found in ranked)
    return (f'<p class="note">The {len(ranked)} features of highest PSI of {len(features)}; '
            "a missing share is shown only where it holds enough persons (— otherwise).</p>\n"
            "<table><tr><th>Feature</th><th>PSI</th>"
            "<th>Missing, training</th><th>Missing, now</th><th>Flag</th></tr>\n"
            f"{rows}</table>\n")


def _missing_table(run: Mapping[str, Any]) -> str:
    changed = sorted(((name, f["missing"]) for name, f in run["drift"].get("features", {})
                      .items() if (f.get("missing") or {}).get("change")),
                     key=lambda item: (-abs(item[1]["change"]), item[0]))[:TOP]
    if not changed:
        return '<p class="note">No feature\'s missing share changed.</p>\n'
    rows = "".join(f'<tr><td>{_e(name)}</td><td class=n>{_num(m["training"])}</td>'
                   f'<td class=n>{_num(m["now"])}</td><td class=n>{m["change"]:+.3f}</td>'
                   "</tr>\n" for name, m in changed)
    return ("<table><tr><th>Feature</th><th>Training</th><th>Now</th><th>Change</th></tr>\n"
            f"{rows}</table>\n")


def _codes(run: Mapping[str, Any]) -> str:
    codes = run["drift"].get("codes", {"new": [], "vanished": []})
    k = run["drift"].get("min_cell_count")
    parts = []
    for kind, what in (("vanished", f"model feature codes fewer than {k} persons have now"),
                       ("new", f"codes at least {k} persons have that training did not")):
        listed = codes.get(kind, [])
        items = "".join(f"<li>{_e(c)}</li>" for c in listed)
        parts.append(f"<h3>{kind.capitalize()} ({len(listed)}): {_e(what)}</h3>\n"
                     + (f'<ul class="codes">{items}</ul>\n' if listed else
                        '<p class="note">None.</p>\n'))
    return "".join(parts)


def render(runs: Sequence[Mapping[str, Any]], title: str = "scoring runs") -> str:
    """The monitoring page of ``runs`` (any order; shown by as-of date) as one HTML text."""
    if not runs:
        raise DriftError("no scoring run to show; fix: give at least one run")
    runs = sorted(runs, key=lambda r: str(r["as_of"]))
    latest = runs[-1]
    k = latest["drift"].get("min_cell_count")
    body = "".join([
        f"<h1>Model monitoring: {_e(title)}</h1>\n",
        f'<p class="note">{len(runs)} scoring runs, {_e(runs[0]["as_of"])} to '
        f'{_e(latest["as_of"])}. Counts below {_e(k)} are shown as &lt;{_e(k)} or not at all; '
        f"bins holding fewer persons are pooled. PSI over the training bins, shares below "
        f'{_e(latest["drift"].get("epsilon"))} taken as that.</p>\n',
        _flag_section(latest),
        '<section id="trend"><h2>Over time</h2>\n', _plots(runs), _runs_table(runs),
        "</section>\n",
        f'<section id="features"><h2>Feature drift ({_e(latest["as_of"])})</h2>\n',
        _feature_table(latest), "</section>\n",
        f'<section id="codes"><h2>Codes ({_e(latest["as_of"])})</h2>\n', _codes(latest),
        "</section>\n",
        f'<section id="missing"><h2>Missingness ({_e(latest["as_of"])})</h2>\n',
        _missing_table(latest), "</section>\n",
    ])
    return document(f"Model monitoring: {_e(title)}", CSS, body)
