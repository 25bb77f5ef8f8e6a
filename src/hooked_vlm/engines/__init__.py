"""Engines: a study's work units in this process, on a Slurm array, or on a Ray cluster.

A study is a list of work units, each a pure function of (config, index) that a worker writes
idempotently into a shared store with a done-marker (DESIGN.md). An engine needs two things:

- a **job**: a zero-argument callable, run once per worker process, that builds the worker's
  session (loads the HookedVLM and the examples, opens the store) and returns
- a **worker**: ``worker(unit) -> bool`` computes one unit into the store unless it is done
  already (True when it computed it). Units are small picklable addresses, never closures.

The engines:

- :class:`LocalEngine`: this process; the session is built once, the units run in order.
- :class:`RayEngine` (``pip install "hooked-vlm[ray]"``): one actor per GPU (``num_gpus=1``),
  or CPU actors, each building its session once; units are pulled from a
  ``ray.util.ActorPool`` as actors free up; a worker process that dies mid-unit (killed,
  out of memory, node preempted) is restarted and its unit retried.
- sharding, :class:`Shard`: task ``i`` of ``N`` (a Slurm array task, ``submitit``'s
  ``map_array``) runs a contiguous block of the units with the local engine; once every shard
  is in, the same run without a shard computes what is still missing and reduces (every
  study, :func:`hooked_vlm.studies.run_study`; the attribution library with a store per task:
  ``merge_stores`` + ``fit_store``).

A model too big for one GPU stays accelerate's business inside each worker: the job loads it
with ``device_map="auto"`` and the Ray worker asks for that many GPUs (``gpus_per_worker``).

Engines know no study: :func:`hooked_vlm.studies.run_study` hands them a study's job (a
picklable :class:`~hooked_vlm.studies.StudyJob`) and the keys of its units.

Example:
    >>> with RayEngine(address="auto").start(job) as pool:       # models load once per worker
    ...     pool.run(units, on_unit=lambda unit, computed: print(unit, computed))
"""

from hooked_vlm.engines.base import Engine, EngineError, Job, OnUnit, Pool, Shard, Worker
from hooked_vlm.engines.local import LocalEngine
from hooked_vlm.engines.ray_engine import RayEngine

__all__ = [
    "Engine",
    "EngineError",
    "Job",
    "LocalEngine",
    "OnUnit",
    "Pool",
    "RayEngine",
    "Shard",
    "Worker",
]
