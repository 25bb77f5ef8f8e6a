"""One self-contained HTML report: header, sections of figures with captions, tables.

plotly.js is inlined once in the page's head (no CDN: the file works offline and can be mailed
around); each figure's JSON sits in a ``<script type="application/json" class="plotly-json">``
block that a few lines of JavaScript hand to ``Plotly.newPlot``. The JSON blocks also let a
program read every figure back (:func:`figures_in_html`) without a browser.

Any study can use it: build :class:`Section` s of :class:`FigureItem` s and :class:`Table` s.

Example:
    >>> section = Section("Attention flow", "Where text reads the image from.",
    ...                   [FigureItem(fig, "Share of text->image attention per layer.")])
    >>> page = report_html("My study", {"model": "tiny-native", "n": "16"}, [section])
    >>> [f["data"][0]["type"] for f in figures_in_html(page)]
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

_JSON_BLOCK = re.compile(
    r'<script type="application/json" class="plotly-json"[^>]*>(.*?)</script>', re.S
)


@dataclass
class FigureItem:
    """A plotly figure and the plain-words caption under it."""

    figure: go.Figure
    caption: str


@dataclass
class Table:
    """A small table: column names, rows of cells (numbers are formatted), a caption."""

    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    caption: str = ""


@dataclass
class Section:
    """A titled part of the report: an introduction, then figures and tables."""

    title: str
    text: str = ""
    figures: list[FigureItem] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (label, relative href)


def report_html(
    title: str,
    header: Mapping[str, Any],
    sections: Sequence[Section],
    *,
    intro: str = "",
    details: Mapping[str, Any] | None = None,
    header_tables: Sequence[Table] = (),
) -> str:
    """The report as one HTML page (write it with e.g. ``hooked_vlm.storage.write_atomic``).

    ``header``: key facts shown at the top (model, data, n, ...); ``details``: anything longer
    (the full config) shown folded; ``header_tables``: e.g. the timings.
    """
    counter = iter(range(1_000_000))
    parts = [
        f"<h1>{_e(title)}</h1>",
        f"<p class='intro'>{_e(intro)}</p>" if intro else "",
        "<table class='facts'>" + "".join(
            f"<tr><th>{_e(k)}</th><td>{_e(_cell(v))}</td></tr>" for k, v in header.items()
        ) + "</table>",
        *(_table(t) for t in header_tables),
    ]
    if details:
        parts.append("<details><summary>full configuration</summary><pre>"
                     f"{_e(json.dumps(details, indent=2))}</pre></details>")
    parts.append("<nav><ul>" + "".join(
        f"<li><a href='#s{i}'>{_e(s.title)}</a></li>" for i, s in enumerate(sections)
    ) + "</ul></nav>")
    for i, section in enumerate(sections):
        parts.append(f"<section id='s{i}'><h2>{_e(section.title)}</h2>")
        if section.text:
            parts.append(f"<p>{_e(section.text)}</p>")
        parts += [f"<p class='note'>{_e(note)}</p>" for note in section.notes]
        for item in section.figures:
            parts.append(_figure(item, next(counter)))
        parts += [_table(t) for t in section.tables]
        if section.links:
            parts.append("<ul class='links'>" + "".join(
                f"<li><a href='{_e(href)}'>{_e(label)}</a></li>" for label, href in section.links
            ) + "</ul>")
        parts.append("</section>")
    return standalone_page(title, _STYLE, "\n".join(parts), _SCRIPT)


def standalone_page(title: str, style: str, body: str, script: str) -> str:
    """One HTML page with plotly.js inlined in its head: ``body``, then ``script`` run after it.

    Example:
        >>> standalone_page("t", "", "<div id='p'></div>", "Plotly.newPlot('p', [])")
    """
    return _PAGE.format(title=_e(title), plotly=get_plotlyjs(), body=body, style=style,
                        script=script)


def figures_in_html(page: str) -> list[dict[str, Any]]:
    """Every figure's plotly JSON (``{"data": [...], "layout": {...}}``) in a rendered report.

    Example:
        >>> all(f["data"] for f in figures_in_html(open("report.html").read()))
    """
    return [json.loads(block.replace("<\\/", "</")) for block in _JSON_BLOCK.findall(page)]


def _figure(item: FigureItem, index: int) -> str:
    # "</" may not appear inside a <script> block; "<\/" is the same string to JSON
    payload = item.figure.to_json().replace("</", "<\\/")
    return (f"<figure><div class='plot' id='plot{index}'></div>"
            f'<script type="application/json" class="plotly-json" data-target="plot{index}">'
            f"{payload}</script><figcaption>{_e(item.caption)}</figcaption></figure>")


def _table(table: Table) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(_cell(v))}</td>" for v in row) + "</tr>" for row in table.rows
    )
    caption = f"<caption>{_e(table.caption)}</caption>" if table.caption else ""
    return (f"<table class='data'>{caption}<thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.3e}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_cell(v)}" for k, v in value.items())
    return str(value)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1200px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em;
     margin-top: 2.2em; }
p.intro { color: #444; } p.note { background: #fff7e0; border-left: 4px solid #f0b400;
          padding: 0.4em 0.8em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
table.facts th { background: #f4f4f4; width: 11em; }
table.data thead th { background: #f4f4f4; } table.data td { font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; color: #555; padding-bottom: 0.3em; }
figure { margin: 1.2em 0; } figcaption { color: #444; font-size: 0.93em; max-width: 60em; }
nav ul { columns: 2; } details pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; }
"""

_SCRIPT = """
document.querySelectorAll('script.plotly-json').forEach(function (block) {
  var fig = JSON.parse(block.textContent);
  Plotly.newPlot(block.dataset.target, fig.data, fig.layout, {responsive: true});
});
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{style}</style>
<script type="text/javascript">{plotly}</script>
</head><body>
{body}
<script type="text/javascript">{script}</script>
</body></html>
"""
