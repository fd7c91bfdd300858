"""Trace and Comparison I/O, frames and input normalization."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from lminf_diag.capture.comparison import Comparison, as_traces, common_train_len
from lminf_diag.capture.trace import ARRAY_FIELDS, Trace
from lminf_diag.errors import InvalidArgumentError, RunDirectoryError
from tests.synthetic import make_comparison, make_trace


def assert_same_trace(a: Trace, b: Trace) -> None:
    assert a.meta == b.meta
    for name in ARRAY_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        assert x.shape == y.shape, name
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name


def test_save_load_round_trip_is_exact(tmp_path):
    t = make_trace(n=96, train_len=32, kind="flat", label="lambda")
    t.meta.extra["note"] = np.float32(1.5)  # numpy scalars in meta come back as plain numbers
    t.save(tmp_path / "run")
    back = Trace.load(tmp_path / "run")
    assert back.meta.extra["note"] == 1.5
    assert_same_trace(t, back)
    assert back.dist_mass.dtype == np.float16 and back.hidden.dtype == np.float16
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["arrays.npz", "meta.json"]


def test_meta_json_lists_shapes(tmp_path):
    t = make_trace(n=64, layers=2, heads=3, train_len=16)
    t.save(tmp_path)
    info = json.loads((tmp_path / "meta.json").read_text())
    assert info["arrays"]["entropy"]["shape"] == [2, 3, 64]
    assert info["meta"]["train_len"] == 16


def test_save_overwrites_previous_trace(tmp_path):
    make_trace(n=64, train_len=16).save(tmp_path)
    t = make_trace(n=80, train_len=16, seed=3)
    t.save(tmp_path)
    assert_same_trace(t, Trace.load(tmp_path))


@pytest.mark.parametrize(
    "damage",
    ["no_dir", "no_meta", "no_arrays", "bad_json", "wrong_format", "unknown_meta", "missing_array", "shape"],
)
def test_bad_directory_raises(tmp_path, damage):
    d = tmp_path / "run"
    make_trace(n=64, train_len=16).save(d)
    meta = json.loads((d / "meta.json").read_text())
    if damage == "no_dir":
        d = tmp_path / "missing"
    elif damage == "no_meta":
        (d / "meta.json").unlink()
    elif damage == "no_arrays":
        (d / "arrays.npz").unlink()
    elif damage == "bad_json":
        (d / "meta.json").write_text("{not json")
    elif damage == "wrong_format":
        (d / "meta.json").write_text(json.dumps({"format": "other"}))
    elif damage == "unknown_meta":
        meta["meta"]["colour"] = "red"
        (d / "meta.json").write_text(json.dumps(meta))
    elif damage == "missing_array":
        with np.load(d / "arrays.npz") as z:
            arrays = {k: z[k] for k in z.files if k != "nll"}
        np.savez(d / "arrays.npz", **arrays)
    elif damage == "shape":
        meta["arrays"]["entropy"]["shape"] = [9, 9, 9]
        (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(RunDirectoryError):
        Trace.load(d)


def test_corrupt_npz_raises(tmp_path):
    make_trace(n=64, train_len=16).save(tmp_path)
    (tmp_path / "arrays.npz").write_bytes(b"not a zip file")
    with pytest.raises(RunDirectoryError, match="arrays.npz"):
        Trace.load(tmp_path)


def test_to_frame_shapes_and_values():
    t = make_trace(n=50, layers=2, heads=3, train_len=16)
    full = t.to_frame("entropy", reduce=None)
    assert list(full.columns) == ["layer", "head", "position", "value", "label"]
    assert len(full) == 2 * 3 * 50
    heads = t.to_frame("sink_mass", reduce="heads")
    assert list(heads.columns) == ["layer", "position", "value", "label"]
    assert len(heads) == 2 * 50
    flat = t.to_frame("entropy", reduce="all")
    assert list(flat.columns) == ["position", "value", "label"]
    assert len(flat) == 50
    np.testing.assert_allclose(flat["value"], np.log(np.arange(1, 51)), atol=1e-6)  # uniform: ln(p + 1)
    row = full[(full["layer"] == 1) & (full["head"] == 2) & (full["position"] == 9)]
    assert row["value"].item() == pytest.approx(np.log(10), abs=1e-6)
    assert set(full["label"]) == {"baseline"}


def test_to_frame_rejects_bad_arguments():
    t = make_trace(n=32, train_len=16)
    with pytest.raises(InvalidArgumentError):
        t.to_frame("dist_mass")
    with pytest.raises(InvalidArgumentError):
        t.to_frame("entropy", reduce="layers")


def test_summary_dict():
    s = make_trace(n=64, layers=3, train_len=16, label="x").summary_dict()
    assert s["n_tokens"] == 64 and s["label"] == "x" and s["layers"] == [0, 1, 2] and s["train_len"] == 16
    json.dumps(s)  # plain Python values


def test_comparison_order_and_properties():
    base, lam = make_trace(n=64, train_len=16), make_trace(n=64, train_len=16, kind="flat", label="lambda")
    cmp = Comparison({"lambda": lam, "baseline": base})
    assert cmp.labels == ["baseline", "lambda"]
    assert cmp.baseline is base and cmp.patched is lam and cmp.train_len == 16
    only = Comparison({"lambda": lam})
    assert only.baseline is None and only.patched is lam


def test_comparison_save_load(tmp_path):
    cmp = make_comparison(n=64, train_len=16)
    cmp.traces["my run/2"] = make_trace(n=64, train_len=16, label="my run/2", seed=1)
    cmp.save(tmp_path)
    back = Comparison.load(tmp_path)
    assert back.labels == cmp.labels
    for lab in cmp.labels:
        assert_same_trace(cmp.traces[lab], back.traces[lab])
    with pytest.raises(RunDirectoryError):
        Comparison.load(tmp_path / "baseline")  # a trace directory, not a comparison


def test_as_traces_accepts_all_forms():
    base, lam = make_trace(n=32, train_len=16), make_trace(n=32, train_len=16, kind="flat", label="lambda")
    assert list(as_traces(base)) == ["baseline"]
    assert list(as_traces([lam, base])) == ["baseline", "lambda"]
    assert list(as_traces((lam,))) == ["lambda"]
    assert list(as_traces({"b": base, "a": lam})) == ["b", "a"]  # dict keys are the labels
    assert as_traces(Comparison({"lambda": lam, "baseline": base}))["lambda"] is lam
    with pytest.raises(InvalidArgumentError):
        as_traces([base, base])
    with pytest.raises(InvalidArgumentError):
        as_traces([])
    with pytest.raises(InvalidArgumentError):
        as_traces("baseline")
    with pytest.raises(InvalidArgumentError):
        as_traces({"a": 3})


def test_common_train_len():
    a = make_trace(n=32, train_len=16)
    b = make_trace(n=32, train_len=8, label="other")
    assert common_train_len({"a": a}) == 16
    assert common_train_len({"a": a, "b": b}, train_len=12) == 12
    with pytest.raises(InvalidArgumentError):
        common_train_len({"a": a, "b": b})
    unknown = dataclasses.replace(a, meta=dataclasses.replace(a.meta, train_len=0))
    assert common_train_len({"a": unknown}) is None
    with pytest.raises(InvalidArgumentError):
        common_train_len({"a": a}, train_len=0)


def test_save_into_a_file_path_raises(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunDirectoryError):
        make_trace(n=32, train_len=16).save(tmp_path / "f")
