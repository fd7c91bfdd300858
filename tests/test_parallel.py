"""Independent units in worker processes (and Ray): the same results and files as a serial run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lminf_diag.errors import InvalidArgumentError
from lminf_diag.parallel import Unit, run_units


def test_local_workers_deliver_every_result_in_the_main_process():
    units = [Unit(f"u{i}", math.comb, (20, i)) for i in range(6)]
    got: dict[str, int] = {}
    run_units(units, workers=2, on_done=got.__setitem__)
    assert got == {f"u{i}": math.comb(20, i) for i in range(6)}


def test_a_failing_unit_stops_the_run_after_saving_the_finished_ones():
    got: dict[str, int] = {}
    units = [Unit("ok", math.factorial, (5,)), Unit("bad", math.factorial, (-1,))]
    with pytest.raises(ValueError):
        run_units(units, workers=1, on_done=got.__setitem__)
    assert got == {"ok": 120}
    with pytest.raises(InvalidArgumentError, match="workers"):
        run_units(units, workers=0)


def _records(folder):
    """Every saved cell's data and array, by relative path (the files a run leaves behind)."""
    out = {}
    for f in sorted(folder.rglob("*.json")):
        if f.parent == folder:
            continue  # run.json: timings differ
        out[str(f.relative_to(folder))] = json.loads(f.read_text())["data"]
    for f in sorted(folder.rglob("*.npy")):
        out[str(f.relative_to(folder))] = np.load(f)
    return out


@pytest.mark.parametrize("workers", [2])
def test_lab_units_in_two_workers_write_the_files_a_serial_run_writes(tmp_path, workers, require_lab):
    from lminf_diag.lab.run import LabSettings, run_lab

    require_lab("lab-nope")
    s = LabSettings(models=("lab-nope",), seeds=1, multiples=(2,), windows=2, fluency_multiple=2,
                    copy_trials=2, copy_distances=(0.25,))
    serial = run_lab(s, tmp_path / "serial")
    parallel = run_lab(s, tmp_path / "parallel", workers=workers)
    a, b = _records(tmp_path / "serial"), _records(tmp_path / "parallel")
    assert a.keys() == b.keys() and len(a) == 5  # cell, loss (json + npy), copy (json + npy)
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-5, equal_nan=True)
        else:
            assert json.dumps(a[k], sort_keys=True) == json.dumps(b[k], sort_keys=True), k
    assert [v.to_dict() for v in serial.verdicts()] == [v.to_dict() for v in parallel.verdicts()]
    # resuming: every unit is in the folder, so nothing is computed again
    steps = []

    class Spy:
        def __init__(self, total):
            pass

        def skip(self, name, why=""):
            steps.append(why)

        def step(self, name):  # pragma: no cover - must not be called
            raise AssertionError(f"recomputed {name}")

    run_lab(s, tmp_path / "parallel", progress=Spy, workers=workers)
    assert len(steps) == 3


def test_ray_tasks_when_ray_is_installed():
    pytest.importorskip("ray")
    got: dict[str, int] = {}
    run_units([Unit("a", pow, (2, 10)), Unit("b", pow, (3, 3))], ray_address="local", on_done=got.__setitem__)
    assert got == {"a": 1024, "b": 27}


def test_analysis_windows_in_two_workers_equal_a_serial_run(tmp_path, capsys):
    """`diag entropy --workers 2`: one unit per window, saved by the main process; the traces and
    the key figures equal a serial run's, and a rerun resumes from the saved traces."""
    from lminf_diag.cli.main import main
    from lminf_diag.runs import RunDir
    from tests.tiny import save_tiny_llama_folder

    folder = str(save_tiny_llama_folder(tmp_path / "tiny-llama"))
    common = ["entropy", "--model", folder, "--length", "96", "--n-local", "32", "--n-global", "2",
              "--train-len", "32", "--windows", "3", "--json"]
    assert main([*common, "--out", str(tmp_path / "serial")]) == 0
    serial = json.loads(capsys.readouterr().out)
    assert main([*common, "--workers", "2", "--out", str(tmp_path / "par")]) == 0
    captured = capsys.readouterr()
    assert "capturing 3 window(s) in 2 worker processes" in captured.err
    par = json.loads(captured.out)
    np.testing.assert_allclose([k["estimate"] for k in par["key_figures"]],
                               [k["estimate"] for k in serial["key_figures"]], rtol=1e-4, atol=1e-5)
    a, b = RunDir.open_existing(tmp_path / "serial"), RunDir.open_existing(tmp_path / "par")
    assert sorted(a.trace_labels()) == sorted(b.trace_labels())
    for key in a.trace_labels():
        np.testing.assert_allclose(a.load_trace(key).entropy, b.load_trace(key).entropy, atol=1e-5)
    assert main([*common, "--workers", "2", "--out", str(tmp_path / "par")]) == 0
    assert "skipped 6 finished capture step(s)" in capsys.readouterr().err
