"""Masks by index and the on-disk store: purity, resume after SIGKILL, two writer processes."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from hooked_vlm.attribution import (
    AttributionConfig,
    LeaveOneOutMasks,
    MaskError,
    MaskStore,
    RandomMasks,
    Shard,
    StoreError,
    fit_store,
    open_store,
    run,
    run_unit,
    units,
)
from tests.attribution_fakes import run_store_worker, standard_planted


def test_masks_are_pure_functions_of_their_index():
    masks = RandomMasks(3, 5, n=200, alpha=0.3, seed=7)
    whole = masks.masks(0, 200)
    assert whole.shape == (200, 3, 5) and whole.dtype == bool
    np.testing.assert_array_equal(masks.masks(150, 160), whole[150:160])
    np.testing.assert_array_equal(masks.mask(42), whole[42])
    assert abs(1 - whole.mean() - 0.3) < 0.03  # P(ablate) = alpha
    other = RandomMasks(3, 5, n=200, alpha=0.3, seed=8).masks(0, 200)
    held = masks.held_out(200).masks(0, 200)
    for fresh in (other, held):  # another seed / the held-out stream: other masks
        assert (fresh != whole).any(axis=(1, 2)).mean() > 0.95
    exact = RandomMasks(3, 5, n=50, alpha=None, k=4).masks(0, 50)
    assert ((~exact).sum(axis=(1, 2)) == 4).all()
    loo = LeaveOneOutMasks(3, 5).masks(0, 15).reshape(15, 15)
    np.testing.assert_array_equal(loo, ~np.eye(15, dtype=bool))


def test_mask_errors():
    with pytest.raises(MaskError, match="exactly one of alpha"):
        RandomMasks(2, 2, 10, alpha=0.5, k=1)
    with pytest.raises(MaskError, match="strictly between"):
        RandomMasks(2, 2, 10, alpha=1.0)
    with pytest.raises(MaskError, match="outside"):
        RandomMasks(2, 2, 10).masks(5, 11)


def test_store_writes_by_key_and_refuses_another_run(tmp_path):
    store = MaskStore.open(tmp_path, {"a": 1}, {"train": (2, 10)}, chunk_size=4)
    assert store.n_chunks("train") == 3 and store.chunk_range("train", 2) == (8, 10)
    assert len(store.missing()) == 6
    # another run, and no unit done yet: the store is made anew for it (a failed first run)
    assert MaskStore.open(tmp_path, {"a": 2}, {"train": (2, 10)}, chunk_size=4).meta["run"] == {
        "a": 2}
    store = MaskStore.open(tmp_path, {"a": 1}, {"train": (2, 10)}, chunk_size=4)
    store.save("train/1/2", {"values": np.array([5.0, 6.0])}, seconds=0.5)
    store.save("train/1/2", {"values": np.array([5.0, 6.0])})  # idempotent
    assert store.done("train/1/2") and not store.done("train/0/2")
    assert store.load("train/1/2")["values"].tolist() == [5.0, 6.0]
    with pytest.raises(StoreError, match="not done"):
        store.targets("train")
    partial = store.targets("train", allow_missing=True)
    assert partial[1, 8:].tolist() == [5.0, 6.0] and np.isnan(partial[0]).all()
    with pytest.raises(StoreError, match="expected 2 values"):
        store.save("train/0/2", {"values": np.zeros(4)})
    reopened = MaskStore.open(tmp_path, {"a": 1}, {"train": (2, 10)}, chunk_size=4)
    assert reopened.targets("train", allow_missing=True)[1, 9] == 6.0
    readonly = MaskStore.from_path(tmp_path)
    assert readonly.missing() == reopened.missing()
    with pytest.raises(StoreError, match="read-only"):
        readonly.save("train/0/0", {"values": np.zeros(4)})
    with pytest.raises(StoreError, match="run.a: stored 1, now 2"):
        MaskStore.open(tmp_path, {"a": 2}, {"train": (2, 10)}, chunk_size=4)
    assert json.loads((tmp_path / "meta.json").read_text())["run"] == {"a": 1}
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_units_shards_and_resume_give_the_uninterrupted_result(tmp_path):
    evaluator = standard_planted()
    work = units(evaluator)
    assert len(work) == 3 * (15 + 3 + 1)  # examples x (train, heldout, reference chunks)
    assert sorted(sum((Shard(i, 4).of(work) for i in range(4)), []), key=work.index) == work
    assert Shard.parse("2/4") == Shard(2, 4) and str(Shard(2, 4)) == "2/4"
    with pytest.raises(ValueError, match="i/N"):
        Shard.parse("2-4")
    whole = open_store(tmp_path / "whole", evaluator)
    assert run(evaluator, whole) == len(work)
    assert run(evaluator, whole) == 0  # nothing left
    parts = open_store(tmp_path / "parts", evaluator)
    for i in (3, 0, 2):
        run(evaluator, parts, Shard(i, 4).of(work))
    assert len(parts.missing()) == len(Shard(1, 4).of(work))
    assert run(evaluator, parts) == len(Shard(1, 4).of(work))
    np.testing.assert_array_equal(parts.targets("train"), whole.targets("train"))
    assert not run_unit(evaluator, work[0], parts)


def _worker(path: Path, first: int, last: int, delay: float) -> multiprocessing.Process:
    """A separate process (forked: it starts with this one's imports) running units
    ``first .. last-1`` into the store at ``path``."""
    proc = multiprocessing.get_context("fork").Process(
        target=run_store_worker, args=(str(path), first, last, delay)
    )
    proc.start()
    return proc


def test_two_processes_and_a_sigkilled_one_give_the_single_process_result(tmp_path):
    evaluator = standard_planted()
    n = len(units(evaluator))
    reference = open_store(tmp_path / "single", evaluator)
    run(evaluator, reference)
    # two processes, disjoint halves, into one store, at the same time
    pair = [_worker(tmp_path / "pair", 0, n // 2, 0.01),
            _worker(tmp_path / "pair", n // 2, n, 0.01)]
    # a third process killed with SIGKILL part-way through its run
    killed = _worker(tmp_path / "killed", 0, n, 0.05)
    deadline = time.monotonic() + 120
    done_file = tmp_path / "killed" / "train.done.npy"
    while time.monotonic() < deadline and not (
        done_file.exists() and np.load(done_file).sum() >= 5
    ):
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.join()
    assert killed.exitcode == -signal.SIGKILL
    for proc in pair:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    both = MaskStore.from_path(tmp_path / "pair")
    assert not both.missing()
    interrupted = open_store(tmp_path / "killed", evaluator)
    left = len(interrupted.missing())
    assert 0 < left < n  # it was killed mid-way
    assert run(evaluator, interrupted) == left
    for store in (both, interrupted):
        for split in ("train", "heldout", "reference"):
            np.testing.assert_array_equal(store.targets(split), reference.targets(split))
    coef = fit_store(interrupted)[0].coef
    np.testing.assert_array_equal(coef, fit_store(reference)[0].coef)


def test_a_store_of_another_config_is_refused(tmp_path):
    evaluator = standard_planted()
    run(evaluator, open_store(tmp_path, evaluator), units(evaluator)[:1])
    evaluator.config = AttributionConfig(n_masks=300, n_heldout=60, alpha=0.25, seed=3,
                                         chunk_size=20)
    with pytest.raises(StoreError, match="config.alpha: stored 0.5, now 0.25"):
        open_store(tmp_path, evaluator)
