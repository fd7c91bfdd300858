"""The notebooks in notebooks/ run top to bottom in their QUICK setting, and are committed without outputs.

Each notebook's first code cell (tagged "parameters") holds `QUICK = False` and the real defaults;
the test sets `QUICK = True` there, which swaps in the lab model `lab-rope` (trained by the
toolkit at T = 128 tokens) at 1024-2048 tokens, so that "past the training length" runs in
seconds with no downloaded model. The kernel is "python3" started by jupyter_client with this
interpreter (its argv "python" is replaced by sys.executable), working directory notebooks/. The
kernel gets OMP_NUM_THREADS=1 unless the environment sets it: on a busy 2-core machine two torch
threads per process fight over the cores and the same notebook runs several times slower.
"""

from __future__ import annotations

import ast
import os
import re
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = ["01_quickstart.ipynb", "02_three_factors.ipynb", "03_ablations.ipynb", "04_schemes.ipynb",
             "05_methods.ipynb"]
DEFAULTS = {"QUICK": False, "MODEL": "smollm2-135m", "LENGTH": 16384, "N_LOCAL": None, "N_GLOBAL": 10,
            "STRIDE": None, "TRAIN_LEN": None}
WINDOWED = {"QUICK": False, "MODEL": "smollm2-135m", "LENGTH": 12288, "WINDOWS": 4, "N_LOCAL": None,
            "N_GLOBAL": 10, "STRIDE": None, "TRAIN_LEN": None}
# the lab notebook's own parameters: all four lab models at 8x/32x T, a loss pass to 64x T
LAB_DEFAULTS = {"QUICK": False, "MODELS": ["lab-rope", "lab-alibi", "lab-partial", "lab-nope"], "MULTIPLES": [8, 32],
                "FLUENCY_MULTIPLE": 64, "WINDOWS": 16, "TOLERANCE": 0.1}
PARAMS = {name: DEFAULTS for name in NOTEBOOKS} | {"04_schemes.ipynb": LAB_DEFAULTS}
PARAMS |= {name: WINDOWED for name in ("02_three_factors.ipynb", "03_ablations.ipynb")}
PARAMS["05_methods.ipynb"] = {"QUICK": False, "MODEL": "smollm2-135m", "LENGTH": 12288, "WINDOWS": 4,
                              "METHODS": ["lambda", "streaming", "dynamic"], "TRAIN_LEN": None}
QUICK_RE = re.compile(r"^QUICK = False\b", re.MULTILINE)
CELL_TIMEOUT_S = 600
FIGURE_MIMES = ("application/vnd.plotly.v1+json", "text/html")


def _read(name: str):
    return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


def _parameters_cell(nb):
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected exactly one cell tagged 'parameters', found {len(cells)}"
    return cells[0]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stripped_and_parameterised(name):
    """Committed notebooks carry no outputs; the parameters cell holds the real defaults, after a title."""
    nb = _read(name)
    nbformat.validate(nb)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: outputs not stripped"
    params = {}
    for node in ast.parse(_parameters_cell(nb).source).body:
        assert isinstance(node, ast.Assign), "the parameters cell should hold plain assignments only"
        params[node.targets[0].id] = ast.literal_eval(node.value)
    assert params == PARAMS[name]
    assert next(c for c in nb.cells if c.cell_type == "code") is _parameters_cell(nb), "QUICK goes in the first code cell"
    for cell in nb.cells:  # public API only: `import lminf_diag as ld` and its documented attributes
        if cell.cell_type == "code":
            assert not re.search(r"from lminf_diag\b|import lminf_diag\.", cell.source), f"{name}: internal import"
    intro = nb.cells[0].source
    assert "QUICK" in intro and "Runtime" in intro, f"{name}: the first cell should state the runtime of both settings"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_quick(name):
    """Execute with QUICK = True: no cell errors, every `.show()` cell displays a figure."""
    nb = _read(name)
    cell = _parameters_cell(nb)
    assert QUICK_RE.search(cell.source), "the parameters cell should start from QUICK = False"
    cell.source = QUICK_RE.sub("QUICK = True", cell.source)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    t0 = time.perf_counter()
    client.execute(env=env)
    print(f"{name}: executed in {time.perf_counter() - t0:.1f} s")

    errors = [
        f"cell {i}: {out.get('ename')}: {out.get('evalue')}"
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "error"
    ]
    assert not errors, f"{name} raised:\n" + "\n".join(errors)

    figure_cells = [c for c in nb.cells if c.cell_type == "code" and ".show()" in c.source]
    assert figure_cells, f"{name} shows no figure"
    for cell in figure_cells:
        shown = [
            out
            for out in cell.outputs
            if out.output_type == "display_data" and any(m in out.get("data", {}) for m in FIGURE_MIMES)
        ]
        assert shown, f"{name}: a figure cell produced no figure output:\n{cell.source}"
