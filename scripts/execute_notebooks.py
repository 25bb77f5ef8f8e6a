"""Re-execute the notebooks in ``notebooks/`` and save them in place, with their outputs.

Each notebook runs top to bottom in a fresh ``python3`` kernel of this interpreter (nbclient),
with this checkout's ``src/`` first on ``PYTHONPATH`` and torch on one thread
(``OMP_NUM_THREADS=1``). The notebooks seed what they draw, so a re-run reproduces the same
numbers; volatile metadata (execution timestamps) is not written, so its diff stays small.

Plotly figures are saved twice in one output: as plotly's own mimetype (interactive in
JupyterLab and VS Code) and as a static PNG, which is what GitHub shows (it runs no
JavaScript). The PNG needs kaleido (``pip install kaleido``) and a Chrome or Chromium
(``BROWSER_PATH=/usr/bin/chromium`` if kaleido does not find it); without kaleido this script
refuses rather than saving notebooks that show no figures on GitHub. The test suite
(``tests/test_notebooks.py``) executes the same notebooks without PNGs.

Example:
    python scripts/execute_notebooks.py                                 # every notebook
    python scripts/execute_notebooks.py notebooks/01_quickstart.ipynb   # one
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
INTERACTIVE = "plotly_mimetype"  # figures as plotly JSON only (tests: nothing is saved)
WITH_STATIC = "plotly_mimetype+png"  # and a PNG beside it, for GitHub


def kernel_env(renderer: str = INTERACTIVE) -> dict[str, str]:
    """The kernel's environment: this checkout's package, one torch thread, quiet loaders."""
    env = dict(os.environ)
    path = [str(ROOT / "src"), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env.update({
        "PYTHONPATH": os.pathsep.join(str(Path(p).resolve()) for p in path),
        "OMP_NUM_THREADS": "1",
        "PLOTLY_RENDERER": renderer,
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" bar
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "PYTHONWARNINGS": "ignore:IProgress not found",  # tqdm, when ipywidgets is missing
    })
    return env


def execute(path: Path, renderer: str = INTERACTIVE, timeout: int = 600) -> nbformat.NotebookNode:
    """Run the notebook at ``path`` top to bottom (in its own folder); returns it with outputs.

    Raises nbclient's ``CellExecutionError`` (naming the cell and the error) if a cell fails.
    """
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute(env=kernel_env(renderer))
    return notebook


def strip_volatile(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop what changes on every run without the content changing: timestamps, versions."""
    notebook.metadata.pop("widgets", None)
    notebook.metadata.get("language_info", {}).pop("version", None)
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
    return notebook


def save(notebook: nbformat.NotebookNode, path: Path) -> None:
    """Write atomically: a unique temporary name beside ``path``, then ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    nbformat.write(notebook, tmp)
    os.replace(tmp, path)


def main(paths: list[str]) -> None:
    if importlib.util.find_spec("kaleido") is None:
        raise SystemExit(
            "kaleido is not installed: the saved notebooks would show no figures on GitHub. "
            "Install it (pip install kaleido; it drives a Chrome/Chromium, set BROWSER_PATH if "
            "it finds none) and run again."
        )
    targets = [Path(p).resolve() for p in paths] or sorted(NOTEBOOKS.glob("*.ipynb"))
    for path in targets:
        start = time.perf_counter()
        save(strip_volatile(execute(path, WITH_STATIC)), path)
        print(f"{path.relative_to(ROOT)}: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
