"""Work units: arrays then done-marker, resume skips finished units, no pickle, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from hooked_vlm.studies.results import ResultsDir
from hooked_vlm.studies.units import Unit, UnitStore, run_units


def test_units_are_computed_once_and_read_back(tmp_path):
    store = UnitStore(tmp_path)
    calls = []

    def work(j):
        calls.append(j)
        return {"x": np.arange(j + 1, dtype=np.float32), "words": np.array(["a", "bc"][: j + 1])}

    units = [Unit(f"stage/part/{j:04d}", lambda j=j: work(j)) for j in range(2)]
    seen = []
    assert run_units(store, units, lambda u, fresh: seen.append((u.key, fresh))) == (2, 0)
    assert run_units(store, units) == (0, 2) and calls == [0, 1]
    assert seen == [("stage/part/0000", True), ("stage/part/0001", True)]
    loaded = store.load("stage/part/0001")
    assert loaded["x"].tolist() == [0.0, 1.0] and loaded["words"].tolist() == ["a", "bc"]
    assert store.seconds("stage/part/0000") >= 0.0


def test_arrays_without_marker_are_recomputed(tmp_path):
    """A run killed after writing a unit's arrays but before its marker redoes that unit."""
    store = UnitStore(tmp_path)
    (tmp_path / "s").mkdir()
    np.savez(tmp_path / "s" / "0000.npz", x=np.zeros(3))  # a half-finished unit
    assert not store.done("s/0000")
    with pytest.raises(FileNotFoundError, match="has not finished"):
        store.load("s/0000")
    run_units(store, [Unit("s/0000", lambda: {"x": np.ones(3)})])
    assert store.load("s/0000")["x"].tolist() == [1.0, 1.0, 1.0]


def test_object_arrays_and_odd_keys_are_refused(tmp_path):
    store = UnitStore(tmp_path)
    with pytest.raises(TypeError, match="only pickle can store"):
        store.save("a/b", {"x": np.array([{"a": 1}], dtype=object)}, 0.0)
    for key in ("../up", "a b", "/abs", ""):
        with pytest.raises(ValueError, match="unit key"):
            store.done(key)


def test_results_dir_names_the_changed_fields(tmp_path):
    ResultsDir(tmp_path, {"n": 16, "model": "m", "seed": 0})
    with pytest.raises(ValueError, match=r"n: 16 there, 32 now.*never mixed"):
        ResultsDir(tmp_path, {"n": 32, "model": "m", "seed": 0})


def test_with_needs_adds_the_missing_needs_after_the_stages_asked_for():
    from hooked_vlm.studies.common import with_needs

    needs = {"curves": ("fit", "baselines"), "baselines": ("fit",)}
    assert with_needs(["curves"], needs) == (
        ["curves", "fit", "baselines"],
        ["stage 'curves' needs 'fit': running it too",
         "stage 'curves' needs 'baselines': running it too"],
    )
    assert with_needs(("fit", "baselines"), needs) == (["fit", "baselines"], [])
