"""The Ray engine: workers that each load the model once, units pulled as workers free up.

One Ray actor per worker, asking for ``gpus_per_worker`` GPUs (1: one actor per GPU; more for
a model that accelerate's ``device_map="auto"`` spreads over several; 0: CPU actors) and
``cpus_per_worker`` CPUs (torch in the actor uses that many threads). Each actor runs the job
once, so the model and the examples load once per actor, then computes the units it is handed.

Why ``ray.util.ActorPool`` rather than Ray Data's ``map_batches``: units write their results
into the study's own store as a side effect (a done-marker per unit makes that idempotent), so
there is no output dataset to stream; the pool hands the next unit to whichever actor is free
(a slow GPU or a big example holds up no one), the actor keeps its state between units (model,
and the example's cached image prefix, reused when consecutive units share an example), and
retries come from Ray's actor fault tolerance: an actor whose process dies mid-unit (killed,
out of memory, its node preempted) is restarted (``max_restarts=-1``: the job runs again and
reloads the model) and the unit it held is resubmitted to it, up to ``max_retries`` times per
unit (``max_task_retries``). A Python exception in a unit is a bug, not bad luck: it stops the
run and names the unit.

Where the cluster comes from: ``address`` is Ray's own (``ray.init(address=...)``): ``"auto"``
joins the cluster this node belongs to (``ray start`` ran here, or ``RAY_ADDRESS`` is set),
``"local"`` starts a private one on this machine, ``"host:6379"`` / ``"ray://host:10001"`` joins
a remote one; ``None``: what ``ray.init()`` picks (``RAY_ADDRESS``, else a new local one). A
process already connected (its own ``ray.init(...)`` call) keeps its cluster, whatever the
address. A connection the engine made it closes at the end (a local cluster it started stops
with it); its own actors it kills either way.

Example:
    >>> engine = RayEngine(address="auto")                    # one worker per GPU of the cluster
    >>> with engine.start(job) as pool:
    ...     pool.run(units, on_unit)
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hooked_vlm.engines.base import EngineError, Job, OnUnit, Worker


class UnitError(RuntimeError):
    """A unit raised on a Ray worker (the message names the unit and the worker)."""


def import_ray() -> Any:
    """The ``ray`` module, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ImportError(
            "the Ray engine needs Ray, an optional dependency of hooked-vlm: "
            "pip install 'hooked-vlm[ray]' (or pip install 'ray[default]')."
        ) from None
    return ray


class _RayWorker:
    """The actor: builds the job's session once, then runs units.

    It works in the driver's directory ``cwd`` when this node has it (a shared filesystem),
    so a study's relative paths (``--out results/x``, ``--data data/``) mean the same files
    as for the driver; Ray would otherwise start it elsewhere."""

    def __init__(self, job: Job, threads: int, cwd: str) -> None:
        import torch

        torch.set_num_threads(threads)  # OpenMP threads spinning on shared cores cost ~30x
        if os.path.isdir(cwd):
            os.chdir(cwd)
        self.worker: Worker = job()

    def ready(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}"

    def fingerprint(self) -> Any:
        return getattr(self.worker, "fingerprint", None)

    def run(self, unit: Any) -> tuple[Any, bool]:
        try:
            return unit, bool(self.worker(unit))
        except Exception as err:
            raise UnitError(f"unit {unit!r} failed on Ray worker {self.ready()}: "
                            f"{type(err).__name__}: {err}") from err


@dataclass(frozen=True)
class RayEngine:
    """Ray actors holding a session each (see the module docstring).

    ``workers``: how many actors (default: the cluster's GPUs // ``gpus_per_worker``, or its
    CPUs // ``cpus_per_worker`` for CPU actors). ``env_vars``: extra environment of the
    workers (``OMP_NUM_THREADS`` is set to ``cpus_per_worker``).
    """

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float = 1
    cpus_per_worker: float = 1
    max_retries: int = 3
    env_vars: Mapping[str, str] = field(default_factory=dict)

    remote = True

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}.")
        if self.gpus_per_worker < 0 or self.cpus_per_worker <= 0 or self.max_retries < 0:
            raise ValueError(
                "need gpus_per_worker >= 0, cpus_per_worker > 0 and max_retries >= 0; got "
                f"{self.gpus_per_worker}, {self.cpus_per_worker}, {self.max_retries}."
            )

    @contextmanager
    def start(self, job: Job) -> Iterator[RayPool]:
        """Connect (or start a cluster), start the actors, wait until each built its session."""
        ray = import_ray()
        started = not ray.is_initialized()
        if started:
            ray.init(address=self.address)
        actors: list[Any] = []
        try:
            count = self._count(ray.cluster_resources())
            threads = max(1, int(self.cpus_per_worker))
            actor = ray.remote(_RayWorker).options(
                num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker,
                max_restarts=-1, max_task_retries=self.max_retries,
                runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads), **self.env_vars}},
            )
            actors = [actor.remote(job, threads, os.getcwd()) for _ in range(count)]
            try:
                ray.get([a.ready.remote() for a in actors])
                fingerprints = ray.get([a.fingerprint.remote() for a in actors])
            except ray.exceptions.RayError as err:
                raise EngineError(f"a Ray worker could not build its session: {err}") from None
            yield RayPool(ray, actors, fingerprints)
        finally:
            for a in actors:
                ray.kill(a)
            if started:
                ray.shutdown()

    def _count(self, resources: Mapping[str, float]) -> int:
        """Actors to start; an error when the cluster cannot hold them all."""
        gpus, cpus = resources.get("GPU", 0), resources.get("CPU", 0)
        if self.workers is not None:
            count = self.workers
        elif self.gpus_per_worker:
            count = int(gpus // self.gpus_per_worker)
        else:
            count = int(cpus // self.cpus_per_worker)
        if count < 1 or count * self.gpus_per_worker > gpus or count * self.cpus_per_worker > cpus:
            raise EngineError(
                f"the Ray cluster has {gpus:g} GPU(s) and {cpus:g} CPU(s); "
                f"{count} worker(s) of {self.gpus_per_worker:g} GPU(s) and "
                f"{self.cpus_per_worker:g} CPU(s) each do not fit. Start workers with GPUs "
                "(ray start --num-gpus), ask for fewer workers, or use CPU workers "
                "(gpus_per_worker=0)."
            )
        return count


class RayPool:
    """Started actors; ``run`` hands each unit to the next free actor."""

    def __init__(self, ray: Any, actors: list[Any], fingerprints: list[Any]) -> None:
        self.ray, self.actors, self.fingerprints = ray, actors, fingerprints
        self.workers = len(actors)

    def run(self, units: Sequence[Any], on_unit: OnUnit | None = None) -> int:
        from ray.util import ActorPool

        computed = 0
        results = ActorPool(self.actors).map_unordered(lambda a, u: a.run.remote(u), units)
        try:
            for unit, fresh in results:
                computed += fresh
                if on_unit is not None:
                    on_unit(unit, fresh)
        except self.ray.exceptions.RayActorError as err:
            raise EngineError(
                "a Ray worker died on the same unit more times than max_retries allows (or its "
                f"node left the cluster for good): {err}"
            ) from None
        return computed
