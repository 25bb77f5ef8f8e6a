"""Benchmark: one head-attribution run on three engines, side by side.

The tiny random LLaVA of hooked_vlm.testing.attribution_fixtures, ``--examples`` seeded
pictures, ``--masks`` random masks + ``--heldout`` held-out masks per example (+ the reference
masks), ``--chunk`` masks per unit, ``--batch`` masks per forward; each run fills a fresh store:

- local: this process (LocalEngine), one thread;
- Ray: ``--workers`` CPU actors of one thread each on a private local cluster (started first
  and timed apart: a real cluster is up before the study starts);
- shards: ``--workers`` processes at once, each ``--shard i/N`` into a store of its own (a Slurm
  array on one machine), then ``merge_stores``.

The job is the engines' protocol itself (what ``hooked_vlm.studies.run_study`` hands them for
the head-attribution study's masks stage): each worker builds an evaluator and opens the store
once, then computes unit keys.

Columns: ``setup`` (workers build their sessions: model, examples, store, baseline),
``units`` (computing the units), ``wall`` (both; shards: until the last process exits, plus the
merge), and masks/s over ``units`` and over ``wall``. Every store is checked bit for bit
against the local one. Each worker runs one torch thread, so on a machine with fewer free
cores than workers the speed-up is capped by the cores, not by the engine.

    python benchmarks/scale.py [--examples 8] [--masks 512] [--workers 2] [--chunk 64]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from hooked_vlm.attribution import (
    AttributionConfig,
    MaskStore,
    merge_stores,
    open_store,
    run_unit,
)
from hooked_vlm.engines import Engine, LocalEngine, RayEngine, Shard
from hooked_vlm.testing.attribution_fixtures import tiny_evaluator

SRC = Path(__file__).resolve().parents[1] / "src"


@dataclass(frozen=True)
class MasksJob:
    """A worker's session (picklable: Ray actors build it): the tiny evaluator and the store
    at ``store``; the worker computes a unit key into the store unless it is done."""

    examples: int
    config: AttributionConfig
    store: str

    def __call__(self):
        evaluator = tiny_evaluator(self.examples, self.config)
        return partial(run_unit, evaluator, store=open_store(self.store, evaluator))


def make_job(args: argparse.Namespace, store: Path) -> MasksJob:
    config = AttributionConfig(n_masks=args.masks, n_heldout=args.heldout,
                               chunk_size=args.chunk, batch_size=args.batch,
                               mode="baseline_kv", baseline="mean")
    return MasksJob(args.examples, config, str(store))


def timed_run(job: MasksJob, engine: Engine, part: Shard | None = None) -> dict[str, float]:
    """The job's units on ``engine``, its two phases timed: sessions built, then units."""
    start = time.perf_counter()
    with engine.start(job) as pool:
        ready = time.perf_counter()
        store = MaskStore.from_path(job.store)
        work = store.units() if part is None else part.of(store.units())
        pool.run([key for key in work if not store.done(key)])
        done = time.perf_counter()
    return {"setup": ready - start, "units": done - ready, "wall": done - start}


def run_shards(args: argparse.Namespace, root: Path) -> tuple[dict[str, float], Path]:
    """``--workers`` processes at once, one shard each, then the merge."""
    start = time.perf_counter()
    procs = [subprocess.Popen(
        [sys.executable, __file__, *sys.argv[1:], "--shard", f"{i}/{args.workers}",
         "--store", str(root / f"shard-{i}")],
        stdout=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"},
    ) for i in range(args.workers)]
    outputs = [proc.communicate()[0] for proc in procs]
    if any(proc.returncode for proc in procs):
        raise SystemExit(f"a shard failed: {[proc.returncode for proc in procs]}")
    shards = [json.loads(out.decode().splitlines()[-1]) for out in outputs]
    merge_start = time.perf_counter()
    merged = merge_stores([root / f"shard-{i}" for i in range(args.workers)], root / "merged")
    end = time.perf_counter()
    return {"setup": max(s["setup"] for s in shards), "units": max(s["units"] for s in shards),
            "merge": end - merge_start, "wall": end - start}, merged.path


def same_store(a: MaskStore, b: MaskStore) -> bool:
    return not b.missing() and all(
        a.targets(split).tobytes() == b.targets(split).tobytes() for split in a.shapes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--masks", type=int, default=512)
    parser.add_argument("--heldout", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard", help=argparse.SUPPRESS)  # one shard process of run_shards
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.shard is not None:
        print(json.dumps(timed_run(make_job(args, Path(args.store)), LocalEngine(),
                                   Shard.parse(args.shard))))
        return

    import ray

    root = Path(tempfile.mkdtemp(prefix="scale-"))
    rows = {"local (1 process)": timed_run(make_job(args, root / "local"), LocalEngine())}
    reference = MaskStore.from_path(root / "local")
    n_masks = sum(rows * cols for rows, cols in reference.shapes.values())
    units = len(reference.units())

    cluster_start = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, runtime_env={"env_vars": {
        "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [
            str(SRC), os.environ.get("PYTHONPATH")]))}})
    cluster_seconds = time.perf_counter() - cluster_start
    try:
        rows[f"Ray ({args.workers} actors)"] = timed_run(
            make_job(args, root / "ray"), RayEngine(workers=args.workers, gpus_per_worker=0))
    finally:
        ray.shutdown()
    rows[f"{args.workers} shards + merge"], merged = run_shards(args, root)

    stores = {"local (1 process)": root / "local", f"Ray ({args.workers} actors)": root / "ray",
              f"{args.workers} shards + merge": merged}
    print(f"tiny LLaVA, {args.examples} examples x ({args.masks} + {args.heldout} held-out + "
          f"reference) = {n_masks} masks in {units} units of <= {args.chunk}, {args.batch} per "
          f"forward; one torch thread per worker; {os.cpu_count()} CPU cores, load "
          f"{os.getloadavg()[0]:.1f}; Ray {ray.__version__} (cluster start "
          f"{cluster_seconds:.1f} s, not counted)\n")
    header = f"{'engine':<20}{'setup s':>9}{'units s':>9}{'wall s':>8}{'masks/s units':>15}" \
             f"{'masks/s wall':>14}{'speed-up':>10}  same as local"
    print(header)
    base = rows["local (1 process)"]["units"]
    for name, t in rows.items():
        same = same_store(reference, MaskStore.from_path(stores[name]))
        print(f"{name:<20}{t['setup']:>9.2f}{t['units']:>9.2f}{t['wall']:>8.2f}"
              f"{n_masks / t['units']:>15.0f}{n_masks / t['wall']:>14.0f}"
              f"{base / t['units']:>9.2f}x  {'yes' if same else 'NO'}")
    print(f"\n(shards: setup and units are the slowest shard's; wall includes starting the "
          f"processes and the merge, {rows[f'{args.workers} shards + merge']['merge']:.2f} s)")


if __name__ == "__main__":
    main()
