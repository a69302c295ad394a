"""Every notebook in notebooks/ runs top to bottom headless (nbclient, kernel python3, CPU)."""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 120


def test_there_are_notebooks():
    names = {p.name for p in NOTEBOOKS}
    assert {"01_play.ipynb", "02_how_sampling_works.ipynb", "03_propagation_classes.ipynb",
            "04_control_mappings.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: outputs are not stripped"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    started = time.monotonic()
    NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    elapsed = time.monotonic() - started
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code_cells)
    print(f"{path.name}: {elapsed:.1f} s")


EXECUTED_LIMIT_BYTES = 5 * 1024 * 1024   # audio clips and widget state stay small enough to commit and diff


@pytest.mark.slow
@pytest.mark.parametrize("name", ["02_how_sampling_works.ipynb", "03_propagation_classes.ipynb"])
def test_executed_notebook_is_small(name, tmp_path):
    path = next(p for p in NOTEBOOKS if p.name == name)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    size = len(nbformat.writes(nb).encode())
    print(f"{name}: {size / 1e6:.2f} MB executed")
    assert size < EXECUTED_LIMIT_BYTES, f"{name}: {size / 1e6:.2f} MB executed (limit {EXECUTED_LIMIT_BYTES / 1e6:.1f} MB)"
