"""The runner stops a notebook whose cell hangs (papermill's per-cell execution timeout)."""
from __future__ import annotations

import json
import time

import pytest

from ltbench.runner import FAILED, ConfigError, run_notebooks


def _notebook(path, body):
    cells = [
        {"cell_type": "code", "id": "params", "metadata": {"tags": ["parameters"]}, "execution_count": None, "outputs": [],
         "source": 'profile = "interactive"\nfill_from_profile = True\nout_dir = "out"\nstore_dir = "store"\ndata_root = None\n'
                   'device = "auto"\nseeds = [0]'},
        {"cell_type": "code", "id": "body", "metadata": {}, "execution_count": None, "outputs": [], "source": body},
    ]
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))


@pytest.mark.slow
def test_a_hung_cell_is_stopped_and_the_batch_goes_on(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _notebook(nbs / "01_sleeps.ipynb", "import time\ntime.sleep(600)")
    _notebook(nbs / "02_fine.ipynb", "x = 1")
    t0 = time.monotonic()
    statuses = run_notebooks("smoke", results_dir=tmp_path / "results", notebooks_dir=nbs, cell_timeout=3,
                             verbose=False, progress=False)
    assert time.monotonic() - t0 < 120
    by = {s.notebook: s for s in statuses}
    assert by["01_sleeps"].status == FAILED and "Timeout" in (by["01_sleeps"].error or "")
    assert by["02_fine"].status == "ok"


def test_bad_cell_timeout_is_refused_before_anything(tmp_path):
    with pytest.raises(ConfigError, match="cell_timeout"):
        run_notebooks("smoke", results_dir=tmp_path / "r", notebooks_dir=tmp_path, cell_timeout=0, verbose=False)
    assert not (tmp_path / "r").exists()
