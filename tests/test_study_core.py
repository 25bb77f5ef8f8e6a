"""The study core: the unit store and its checksums, the results directory's claim, stage
plans and typed results (no model: each case is milliseconds)."""

from __future__ import annotations

import json
import multiprocessing
from dataclasses import dataclass, field

import numpy as np
import pytest

from hooked_vlm.settings import ConfigError
from hooked_vlm.storage import DamagedUnitError, StoreError, UnitStore
from hooked_vlm.studies import Result, Stage, Study
from hooked_vlm.studies.results import claim


def test_units_are_written_once_with_a_checksum_and_read_back(tmp_path):
    store = UnitStore(tmp_path)
    arrays = {"x": np.arange(3, dtype=np.float32), "words": np.array(["a", "bc"])}
    assert not store.done("stage/part/0001")
    store.save("stage/part/0001", arrays, seconds=0.25)
    assert store.done("stage/part/0001") and store.seconds("stage/part/0001") == 0.25
    loaded = store.load("stage/part/0001")
    assert loaded["x"].tolist() == [0.0, 1.0, 2.0] and loaded["words"].tolist() == ["a", "bc"]
    marker = json.loads((tmp_path / "stage/part/0001.done.json").read_text())
    assert marker["bytes"] == (tmp_path / "stage/part/0001.npz").stat().st_size


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete"])
def test_a_damaged_unit_is_not_done_and_its_load_names_the_file(tmp_path, damage):
    store = UnitStore(tmp_path)
    store.save("s/0000", {"x": np.ones(100)}, 0.0)
    path = tmp_path / "s" / "0000.npz"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(bytes(len(data)))
    else:
        path.unlink()
    assert not store.done("s/0000")  # the runner computes it again
    with pytest.raises(DamagedUnitError, match=r"s/0000.npz is damaged"):
        store.load("s/0000")
    store.save("s/0000", {"x": np.ones(100)}, 0.0)
    assert store.done("s/0000") and store.load("s/0000")["x"].sum() == 100


def test_arrays_without_marker_are_not_done(tmp_path):
    """A run killed after writing a unit's arrays but before its marker redoes that unit."""
    store = UnitStore(tmp_path)
    (tmp_path / "s").mkdir()
    np.savez(tmp_path / "s" / "0000.npz", x=np.zeros(3))
    assert not store.done("s/0000")
    with pytest.raises(StoreError, match="has not finished"):
        store.load("s/0000")


def test_object_arrays_and_odd_keys_are_refused(tmp_path):
    store = UnitStore(tmp_path)
    with pytest.raises(TypeError, match="only pickle can store"):
        store.save("a/b", {"x": np.array([{"a": 1}], dtype=object)}, 0.0)
    for key in ("../up", "a b", "/abs", ""):
        with pytest.raises(StoreError, match="unit key"):
            store.done(key)


# ---------------------------------------------------------------------- claiming a directory
def test_claim_refuses_another_identity_once_work_is_finished(tmp_path):
    made = {"n": 16, "model": "m", "fingerprint": {"weights": "a"}}
    with claim(tmp_path, made):
        UnitStore(tmp_path / "units").save("gap/0000", {"x": np.zeros(1)}, 0.0)
    with pytest.raises(ConfigError, match=r"n: 16 there, 32 now.*never mixed"):
        with claim(tmp_path, {**made, "n": 32}):
            pass
    with pytest.raises(ConfigError, match=r"fingerprint.weights: 'a' there, 'b' now.* another "
                                          "checkpoint"):
        with claim(tmp_path, {**made, "fingerprint": {"weights": "b"}}):
            pass


def test_claim_takes_over_a_directory_with_nothing_finished(tmp_path):
    with claim(tmp_path, {"n": 16}):
        (tmp_path / "session.json").write_text("{}")  # a first run that failed early
    with claim(tmp_path, {"n": 32}):
        pass
    assert json.loads((tmp_path / "config.json").read_text()) == {"n": 32}
    assert not (tmp_path / "session.json").exists()


def _claim_and_hold(root: str, n: int, start, done) -> None:
    start.wait()
    try:
        with claim(root, {"n": n}):
            done.put(("won", n))
            start.wait()  # hold the directory until both have tried
    except ConfigError as err:
        done.put(("lost", str(err)))
        start.wait()


def test_two_processes_claiming_one_directory_with_different_configs_one_wins(tmp_path):
    context = multiprocessing.get_context("fork")
    start, done = context.Barrier(2), context.Queue()
    procs = [context.Process(target=_claim_and_hold, args=(str(tmp_path), n, start, done))
             for n in (1, 2)]
    for proc in procs:
        proc.start()
    outcomes = sorted(done.get(timeout=60) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
    assert [o[0] for o in outcomes] == ["lost", "won"]
    assert "in use by a run of a different configuration" in outcomes[0][1]
    assert json.loads((tmp_path / "config.json").read_text()) == {"n": outcomes[1][1]}


# ---------------------------------------------------------------------- stages and results
@dataclass
class Counts(Result):
    STAGE = "b"
    n: int
    mean: list[float] = field(metadata={"name": "values"})
    values: np.ndarray
    per_example: dict[str, np.ndarray]
    extra: np.ndarray | None = None

    def headline(self) -> list[tuple[str, str]]:
        return [("n", str(self.n))]


def test_typed_results_round_trip_through_json_and_npz(tmp_path):
    result = Counts(2, [0.5], np.arange(2.0), {"0": np.ones(3), "1": np.zeros(2)})
    result.save(tmp_path, "B", 0.1)
    record = json.loads((tmp_path / "results" / "b.json").read_text())
    assert record["values"] == {"n": 2, "values": [0.5]} and record["headline"] == [["n", "2"]]
    assert sorted(np.load(tmp_path / "results" / "b.npz").files) == [
        "per_example.0", "per_example.1", "values"]
    back = Counts.load(tmp_path)
    assert back.n == 2 and back.mean == [0.5] and back.extra is None
    assert back.per_example["0"].tolist() == [1, 1, 1] and back.values.tolist() == [0, 1]
    with pytest.raises(TypeError, match="STAGE is 'b'"):
        Stage("a", "A", reduce=lambda s, st: result, result=Counts)


def test_plans_add_needs_and_name_why_a_stage_is_left_out():
    stages = (Stage("a", "A"), Stage("b", "B", needs=("a",)),
              Stage("c", "C", needs=("b",), skip=lambda session: "no data for c"))
    study = Study("s", object, lambda *a: None, stages)
    assert study.plan(None, None) == (["a", "b"], ["stage 'c' skipped: no data for c"])
    assert study.plan(None, ("b",)) == (["a", "b"], ["stage 'b' needs 'a': running it too"])
    with pytest.raises(ConfigError, match="stage 'c' cannot run: no data for c"):
        study.plan(None, "3")
    # the needs of the needs come too; a need the session skips is left out, not run
    deep = Study("d", object, lambda *a: None, (*stages, Stage("d", "D", needs=("b", "c"))))
    assert deep.plan(None, ("d",)) == (["a", "b", "d"], [
        "stage 'd' needs 'b': running it too", "stage 'b' needs 'a': running it too"])
    with pytest.raises(ConfigError, match="unknown stage 'd'; stages: 1=a, 2=b, 3=c"):
        study.select("d")
    with pytest.raises(TypeError, match="needs \\['b'\\], which do not come before it"):
        Study("t", object, lambda *a: None, (Stage("a", "A", needs=("b",)), Stage("b", "B")))

