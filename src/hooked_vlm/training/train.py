"""``train_tiny``: train tiny-native or tiny-llava on the synthetic dataset and save it.

One run = build the processor and a seeded random model; train the image side on its own
(tiny-native: fit the VQ tokenizer, then encode every training image once; tiny-llava:
pretrain the CLIP tower); train the projector and decoder on a task mix with the image side
frozen; evaluate on the held-out test split; and write a ``save_pretrained`` directory
(weights, config, tokenizer, processor, ``training.json`` with the report) atomically.

Example:
    >>> report = train_tiny("tiny-llava", "out/tiny-llava", seed=0)
    >>> report["eval"]["classify"]
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from hooked_vlm.data.synthetic import synthetic_dataset
from hooked_vlm.model_configs import load_model_config
from hooked_vlm.training.batches import BatchSpec, make_batch
from hooked_vlm.training.evaluate import evaluate
from hooked_vlm.training.loop import run_loop
from hooked_vlm.training.models import build_model
from hooked_vlm.training.vision import pretrain_tower
from hooked_vlm.training.vocab import build_processor
from hooked_vlm.training.vq import code_embeddings, fit_vq


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one run.

    An image row is a conversation of ``turns`` in random order (see
    :mod:`hooked_vlm.training.batches`); a fraction ``generate`` of rows are text-to-image
    rows instead (tiny-native only).
    """

    steps: int
    turns: tuple[str, ...] = ("classify", "vqa", "vqa", "caption")
    generate: float = 0.0
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.01
    n_train: int = 20_000
    n_eval: int = 500  # held-out test examples evaluated at the end (0: no evaluation)
    vq_steps: int = 0  # autoencoder steps of the VQ tokenizer (tiny-native only)
    vq_images: int = 2048
    image_weight: float = 0.25  # loss weight of a VQ-code target relative to a text target
    tower_steps: int = 0  # supervised pretraining steps of the CLIP tower (tiny-llava only)
    log_every: int = 50


DEFAULTS = {
    "tiny-native": TrainConfig(steps=2000, generate=0.25, vq_steps=300),
    "tiny-llava": TrainConfig(steps=2000, tower_steps=800),
}


# options of one model's image side
ONLY_FOR = {"vq_steps": "tiny-native", "vq_images": "tiny-native", "generate": "tiny-native",
            "image_weight": "tiny-native", "tower_steps": "tiny-llava"}


def train_config(name: str, steps: int | None = None, **overrides: Any) -> TrainConfig:
    """The default :class:`TrainConfig` of ``name`` with ``steps`` and ``overrides`` applied."""
    if name not in DEFAULTS:
        raise KeyError(f"no tiny trained model {name!r}; available: {sorted(DEFAULTS)}")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown training options {unknown}; known: {sorted(known)}")
    foreign = sorted(k for k in overrides if ONLY_FOR.get(k, name) != name)
    if foreign:
        raise TypeError(f"options {foreign} do not apply to {name} (see ONLY_FOR)")
    if steps is not None:
        overrides["steps"] = steps
    return replace(DEFAULTS[name], **overrides)


def train_tiny(
    name: str,
    out_dir: str | Path,
    *,
    seed: int = 0,
    steps: int | None = None,
    log: Callable[[str], None] | None = print,
    **overrides: Any,
) -> dict[str, Any]:
    """Train ``name`` ("tiny-native" or "tiny-llava") and save it to ``out_dir``.

    ``overrides`` are :class:`TrainConfig` fields (``batch_size``, ``n_train``, ``n_eval``,
    ``vq_steps``, ...). Same ``seed`` and options give the same weights. Returns the report
    also written to ``out_dir/training.json``: config, seconds per stage, losses, the VQ
    report (tiny-native) and held-out accuracies with chance levels.

    Example:
        >>> report = train_tiny("tiny-native", "/tmp/tn", steps=20, n_train=16, n_eval=0,
        ...                     vq_steps=2, vq_images=16, log=None)
    """
    cfg = train_config(name, steps, **overrides)
    model_config = load_model_config(name)
    say = log or (lambda _msg: None)
    report: dict[str, Any] = {"name": name, "seed": seed, "config": asdict(cfg), "seconds": {}}
    clock = _Clock(report["seconds"])
    # gradients whatever the caller's grad mode (a test module may have switched it off)
    with deterministic(), torch.enable_grad():
        with clock("data"):
            processor = build_processor(name)
            train = synthetic_dataset("train", cfg.n_train)
            model = build_model(name, seed)
        codes = None
        if hasattr(model.model, "vqmodel"):  # tiny-native: images enter as VQ codes
            with clock("vq"):
                report["vq"], codes = _fit_codes(model, processor, train, cfg, seed)
            say(f"VQ tokenizer: {report['vq']}")
        if hasattr(model.model, "vision_tower"):  # tiny-llava: a pretrained, frozen tower
            with clock("tower"):
                held_out = list(synthetic_dataset("test", 300)) if cfg.n_eval else []
                report["tower"] = pretrain_tower(
                    model.model.vision_tower, processor, train, steps=cfg.tower_steps,
                    seed=seed, held_out=held_out,
                )
            say(f"vision tower: {report['tower']}")
        spec = BatchSpec(processor, model_config, codes)
        # the image side (VQ tokenizer, CLIP tower) had its own stage and stays frozen
        for part in ("vqmodel", "vision_tower"):
            if hasattr(model.model, part):
                getattr(model.model, part).requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        image_codes = None
        if codes is not None:
            image_codes = torch.tensor(model.model.vocabulary_mapping.image_tokens)
        with clock("train"):
            losses = run_loop(
                model, params, step_batches(spec, train, cfg, seed), steps=cfg.steps, lr=cfg.lr,
                warmup=min(cfg.warmup, cfg.steps), weight_decay=cfg.weight_decay,
                log_every=cfg.log_every, log=say, image_codes=image_codes,
                image_weight=cfg.image_weight,
            )
        report.update(loss_summary(losses, cfg.log_every))
        report["parameters"] = _parameter_counts(model)
        if cfg.n_eval:
            with clock("eval"):
                test = synthetic_dataset("test", cfg.n_eval)
                report["eval"] = evaluate(model, processor, model_config, list(test))
            say(f"held-out: { {k: v for k, v in report['eval'].items() if k != 'examples'} }")
    report["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    save_checkpoint(model, processor, Path(out_dir), {"training.json": report})
    return report


def step_batches(
    spec: BatchSpec, train: Any, cfg: TrainConfig, seed: int
) -> Callable[[int], dict[str, torch.Tensor]]:
    """``next_batch(step)``: rows, tasks and answers drawn from a generator seeded by
    ``(seed, step)``, so step ``s`` has the same batch whatever ran before it."""
    def next_batch(step: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([seed, step])
        indices = rng.integers(len(train), size=cfg.batch_size).tolist()
        turns = [("generate",) if rng.random() < cfg.generate
                 else tuple(str(t) for t in rng.permutation(cfg.turns)) for _ in indices]
        return make_batch(spec, [train[i] for i in indices], turns, rng, indices)

    return next_batch


def _fit_codes(
    model: Any, processor: Any, train: Any, cfg: TrainConfig, seed: int
) -> tuple[dict[str, float], torch.Tensor]:
    """Fit the VQ tokenizer, start the code tokens' embeddings and output rows from the
    codebook, then the code-token ids of every training image (HF's own
    ``get_image_tokens``), ``[n_train, 64]``."""
    def pixels(start: int, stop: int) -> torch.Tensor:
        images = train[start:stop]["image"]
        return processor.image_processor(images, return_tensors="pt")["pixel_values"]

    vqmodel = model.model.vqmodel
    vq_report = fit_vq(vqmodel, pixels(0, min(cfg.vq_images, len(train))),
                       steps=cfg.vq_steps, seed=seed)
    with torch.no_grad():
        codebook = vqmodel.quantize.embedding.weight
        token_ids = model.model.vocabulary_mapping.convert_img2bpe(torch.arange(len(codebook)))
        start = code_embeddings(codebook, model.config.hidden_size, seed)
        model.model.embed_tokens.weight[token_ids] = start
        model.lm_head.weight[token_ids] = start
        codes = [model.model.get_image_tokens(pixels(s, min(s + 512, len(train))))
                 for s in range(0, len(train), 512)]
    return vq_report, torch.cat(codes)


def loss_summary(losses: list[float], every: int) -> dict[str, Any]:
    every = max(1, min(every, len(losses)))
    curve = [float(np.mean(losses[i:i + every])) for i in range(0, len(losses), every)]
    return {
        "steps": len(losses),
        "first_loss": losses[0] if losses else None,
        "final_loss": curve[-1] if curve else None,
        "loss_curve": {"every": every, "mean_loss": curve},
    }


def _parameter_counts(model: Any) -> dict[str, int]:
    counts: dict[str, int] = {"total": sum(p.numel() for p in model.parameters())}
    for part in ("vqmodel", "vision_tower", "multi_modal_projector"):
        module = getattr(model.model, part, None)
        if module is not None:
            counts[part] = sum(p.numel() for p in module.parameters())
    return counts


def save_checkpoint(
    model: Any, processor: Any, out_dir: Path, reports: dict[str, dict[str, Any]]
) -> None:
    """``save_pretrained`` of ``model`` and ``processor`` plus JSON ``reports`` (file name ->
    dict) into ``out_dir``: written next to it under a temporary name, then swapped in."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    for name, report in reports.items():
        (tmp / name).write_text(json.dumps(report, indent=1) + "\n")
    old = None
    if out_dir.exists():
        old = out_dir.parent / f"{tmp.name}-old"
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old)


@contextmanager
def deterministic() -> Iterator[None]:
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


class _Clock:
    """``with clock("stage"):`` adds the stage's wall seconds to ``seconds[stage]``."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds = seconds

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = round(time.perf_counter() - start, 1)
