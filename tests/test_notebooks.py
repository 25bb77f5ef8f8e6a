"""Every notebook in notebooks/ runs top to bottom on the embedded tiny models.

Executed with nbclient in a python3 kernel of this interpreter (see
scripts/execute_notebooks.py, which also saves them with outputs); a failing cell fails the
test with the cell and its error.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_four_notebooks_are_there():
    names = [p.name for p in NOTEBOOKS]
    assert names == ["01_quickstart.ipynb", "02_custom_hooks.ipynb", "03_narrow_gate.ipynb",
                     "04_head_attribution.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_outputs_and_no_errors(path):
    """What GitHub shows: every code cell ran, in order, without an error, and each plotly
    figure carries a static PNG beside the interactive one."""
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in cells] == list(range(1, len(cells) + 1))
    outputs = [o for c in cells for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    figures = [o["data"] for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert all("image/png" in f for f in figures)
    assert all("execution" not in c["metadata"] for c in cells)  # no volatile timestamps


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path):
    notebook = load_script("execute_notebooks").execute(path)
    cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert cells and all(c.execution_count for c in cells)
