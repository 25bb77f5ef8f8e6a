"""Head attribution on any engine: each worker builds its evaluator once, then fills the store.

An :class:`AttributionJob` is what a worker process needs: ``build``, a picklable zero-argument
callable that loads the model and the examples and returns an
:class:`~hooked_vlm.attribution.evaluate.Evaluator` (a module-level function or a
``functools.partial`` of one; on Ray also a closure), and the store's path. Every worker opens
the same store (the first creates it; the dataset-mean baseline is computed once and read back
by everyone), so any engine's results equal one process's, bit for bit on identical hardware
and software.

One store, many writers: the store's arrays are memory-mapped, and each unit writes its own
slice, which is safe for processes on one node, and across nodes only on a filesystem whose
memory-mapped writes are coherent between nodes (NFS is not: a node flushing a whole page can
overwrite another's slice). Workers on several nodes without one: a store per node (or per
Slurm task), then :func:`~hooked_vlm.attribution.store.merge_stores`, as below.

Example:
    >>> def build():
    ...     model = HookedVLM.from_pretrained("llava-1.5-7b", device="cuda", dtype="bf16")
    ...     return Evaluator(model, load_examples(model), AttributionConfig(n_masks=2000))
    >>> store = run_job(AttributionJob(build, "runs/coco"), RayEngine(address="auto"))
    >>> attribution, quality = fit_store(store)
    >>> # a Slurm array task instead: its own store per machine, merged once all are in
    >>> run_job(AttributionJob(build, f"runs/coco/shard-{i}"), shard=(i, n))
    >>> fit_store(merge_stores([f"runs/coco/shard-{i}" for i in range(n)], "runs/coco/all"))
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

from hooked_vlm.attribution.evaluate import MaskEvaluator, open_store, run_unit
from hooked_vlm.attribution.store import MaskStore, Unit
from hooked_vlm.engines import Engine, LocalEngine, base, progress_bar


@dataclass
class StoreWorker:
    """One worker's session: an evaluator and the store it writes (an engine's ``Worker``)."""

    evaluator: MaskEvaluator
    store: MaskStore

    def __call__(self, unit: Unit) -> bool:
        return run_unit(self.evaluator, unit, self.store)


@dataclass(frozen=True)
class AttributionJob:
    """``build()`` -> an evaluator (model + examples + config); ``store``: the store's path."""

    build: Callable[[], MaskEvaluator]
    store: str | os.PathLike

    def __call__(self) -> StoreWorker:
        evaluator = self.build()
        return StoreWorker(evaluator, open_store(self.store, evaluator))


def run_job(
    job: AttributionJob,
    engine: Engine | None = None,
    shard: tuple[int, int] | None = None,
    progress: bool = False,
) -> MaskStore:
    """Fill ``job``'s store on ``engine`` (default: this process); returns the store.

    ``shard=(i, n)``: only block ``i`` of ``n`` of the run's units (a Slurm array task);
    ``progress``: a rich progress bar as units complete. Units already done are skipped, so
    a killed run resumes with the same call.

    Example:
        >>> run_job(job, RayEngine(address="auto"), progress=True)
    """
    with (engine or LocalEngine()).start(job) as pool:
        store = MaskStore.load(job.store)  # the workers created it
        work = store.units() if shard is None else base.shard(store.units(), *shard)
        todo = [unit for unit in work if not store.is_done(unit)]
        bar = progress_bar(len(todo), f"head masks ({pool.workers} workers)") if progress \
            else nullcontext(None)
        with bar as on_unit:
            pool.run(todo, on_unit)
    return MaskStore.load(job.store)
