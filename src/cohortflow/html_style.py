"""The plain style and the skeleton shared by cohortflow's offline HTML pages: the study
report (:mod:`cohortflow.report`) and a data mart's de-identification report
(:mod:`cohortflow.mart`).

A module of its own, importing nothing but the standard library: the report package loads
its plotting stack (matplotlib, scikit-learn) on import, which a page that draws nothing
should not pay for.
"""

from __future__ import annotations

BASE_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; display: inline; }
h3 { font-size: 1.05rem; margin-top: 1.5rem; }
section > h2, body > h2 { display: block; }
table { border-collapse: collapse; } td, th { padding: .3rem .8rem; border-bottom: 1px solid #ddd; }
th { text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #666; font-size: .9rem; }
"""
"""The rules every page uses: text, headings (an ``h2`` inline only where a page puts it
in a ``<summary>``), tables with right-aligned numbers (``td.n``) and notes (``.note``).
A page adds its own rules after these."""


def document(title: str, css: str, body: str) -> str:
    """A whole self-contained page: ``title`` and ``body`` are HTML (escaped by the
    caller), ``css`` the page's inline style; no script, nothing loaded.

    >>> document("a &amp; b", "p { }", "<p>x</p>\\n").splitlines()[2:]
    ['<title>a &amp; b</title><style>p { }</style></head>', '<body>', '<p>x</p>', '</body></html>']
    """
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{title}</title><style>{css}</style></head>
<body>
{body}</body></html>
"""
