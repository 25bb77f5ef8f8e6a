"""The HTML report: plotly.js inline once, no CDN, every figure readable back as JSON."""

from __future__ import annotations

import plotly.graph_objects as go

from hooked_vlm.viz.report import FigureItem, Section, Table, figures_in_html, report_html


def test_report_round_trips_figures_and_escapes_script_ends():
    tricky = go.Figure(go.Scatter(x=[0, 1], y=[2, 3], name="</script><b>x</b>"))
    bars = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))
    sections = [
        Section("One", "intro", [FigureItem(tricky, "a caption with <html> & more")]),
        Section("Two", figures=[FigureItem(bars, "bars")],
                tables=[Table(["k", "v"], [["a", 0.123456], ["b", None]], "a table")],
                notes=["a note"]),
    ]
    page = report_html("Title <1>", {"model": "m", "n": 3}, sections, intro="hello",
                       details={"seed": 0})
    figures = figures_in_html(page)
    assert [f["data"][0]["type"] for f in figures] == ["scatter", "bar"]
    assert figures[0]["data"][0]["name"] == "</script><b>x</b>"  # survived intact
    assert page.count("</script>") == page.count("<script")  # no block closed early
    assert page.count("Plotly.newPlot(block.dataset.target") == 1  # one drawing loop
    assert "<script src" not in page and "<link" not in page  # nothing fetched: works offline
    assert page.count("plotly.js v") == 1  # the library's banner: inlined exactly once
    assert "a caption with &lt;html&gt; &amp; more" in page and "Title &lt;1&gt;" in page
    assert "0.123" in page and "–" in page and "a note" in page
