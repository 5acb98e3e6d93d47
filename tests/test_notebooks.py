"""The notebooks in ``notebooks/`` run top to bottom (tiny random models, real data from ``../shared/data``)
and are stored without outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_notebooks_are_stored_without_outputs():
    assert {"01_quickstart.ipynb", "02_finetune.ipynb", "03_variant_effects.ipynb"} <= {p.name for p in NOTEBOOKS}
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} has stored outputs"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, shared_data, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    # The kernel inherits this environment: real data, a tiny random model, a short fine-tuning run.
    monkeypatch.setenv("GENOLM_DATA", str(shared_data))
    monkeypatch.delenv("GENOLM_MODEL", raising=False)
    monkeypatch.setenv("GENOLM_FINETUNE_STEPS", "20")
    monkeypatch.setenv("GENOLM_WINDOW_TOKENS", "64")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()  # raises CellExecutionError naming the failing cell
