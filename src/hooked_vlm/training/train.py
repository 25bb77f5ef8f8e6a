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

import hashlib
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
from safetensors.torch import load_file, save_file

from hooked_vlm.data import synthetic
from hooked_vlm.data.synthetic import synthetic_dataset
from hooked_vlm.model_configs import load_model_config
from hooked_vlm.training.batches import BatchSpec, make_batch
from hooked_vlm.training.evaluate import evaluate
from hooked_vlm.training.gate import GateTraining
from hooked_vlm.training.loop import run_loop
from hooked_vlm.training.models import build_model
from hooked_vlm.training.vision import pretrain_tower
from hooked_vlm.training.vocab import build_processor, is_native
from hooked_vlm.training.vq import code_embeddings, fit_vq


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one run.

    An image row is a conversation of ``turns`` in random order (see
    :mod:`hooked_vlm.training.batches`); a fraction ``generate`` of rows are text-to-image
    rows instead, and a fraction ``pretrain`` of the others image -> caption rows with the
    loss on every caption token (native models only). ``image_modelling``: the image codes of
    every image a row reads are next-token targets too. ``mask_image``: during training no
    text after the image attends to the image tokens (EOI kept), in every layer: the image can
    reach the answer only through EOI, and ``gate_penalty`` weighs the text->image attention
    of unmasked rows (:mod:`hooked_vlm.training.gate`: the ``tiny-gate`` positive control).
    ``init_from``: start from a trained tiny model of the same kind and size (its image side
    too: no VQ fit, no tower pretraining) instead of random weights.
    """

    steps: int
    turns: tuple[str, ...] = ("classify", "vqa", "vqa", "caption")
    generate: float = 0.0
    pretrain: float = 0.0
    image_modelling: bool = False
    mask_image: bool = False
    gate_penalty: float = 0.0  # with mask_image: weight of the unmasked text->image attention
    init_from: str | None = None  # a tiny model (name or directory) whose weights start the run
    layers: int = 4  # decoder layers
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.01
    n_train: int = 20_000
    n_eval: int = 500  # held-out test examples evaluated at the end (0: no evaluation)
    vq_steps: int = 0  # autoencoder steps of the VQ tokenizer (tiny-native only)
    vq_images: int = 2048
    vq_dim: int = 16  # dimension of the VQ codebook's vectors (Chameleon's embed_dim)
    vq_silhouette: float = 0.0  # weight of the VQ autoencoder's object-mask loss (vq.py)
    image_weight: float = 0.25  # loss weight of a VQ-code target relative to a text target
    tower_steps: int = 0  # supervised pretraining steps of the CLIP tower (tiny-llava only)
    log_every: int = 50


# tiny-native's VQ tokenizer learns the objects' silhouettes beside the pixels: with the pixel
# loss alone (300 steps) an MLP on the codes of 6,000 images told the main shape apart 0.65 of
# the time and the trained model 0.36; with the silhouette loss the same probe reached 0.89.
NATIVE = TrainConfig(steps=2000, generate=0.25, vq_steps=600, vq_images=6000, vq_silhouette=1.0)
DEFAULTS = {
    "tiny-native": NATIVE,
    # tiny-native trained on with its text barred from the image tokens (EOI kept) and its
    # unmasked text->image attention penalised (training/gate.py): the image reaches the text
    # only through EOI. From scratch with the mask alone, tiny-native's recipe answered 0.47 of
    # classification questions masked and 0.10 unmasked (its text read untrained image keys).
    # From tiny-native, 1000 steps at lr 1e-3 gave a gate (text->EOI cut = no image at all)
    # that carried little: classification 0.28 held-out; 3000 steps at tiny-native's lr.
    "tiny-gate": replace(NATIVE, mask_image=True, gate_penalty=10.0, init_from="tiny-native",
                         steps=3000),
    "tiny-llava": TrainConfig(steps=2000, tower_steps=800),
}


# options of one kind of model (native: images as VQ codes; LLaVA: a CLIP tower)
NATIVE_ONLY = ("vq_steps", "vq_images", "vq_dim", "vq_silhouette", "generate", "pretrain",
               "image_modelling", "mask_image", "gate_penalty", "image_weight")
LLAVA_ONLY = ("tower_steps",)


def train_config(name: str, steps: int | None = None, **overrides: Any) -> TrainConfig:
    """The default :class:`TrainConfig` of ``name`` with ``steps`` and ``overrides`` applied."""
    if name not in DEFAULTS:
        raise KeyError(f"no tiny trained model {name!r}; available: {sorted(DEFAULTS)}")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown training options {unknown}; known: {sorted(known)}")
    foreign = sorted(set(overrides) & set(LLAVA_ONLY if is_native(name) else NATIVE_ONLY))
    if foreign:
        raise TypeError(f"options {foreign} do not apply to {name} (see NATIVE_ONLY, LLAVA_ONLY)")
    if steps is not None:
        overrides["steps"] = steps
    cfg = replace(DEFAULTS[name], **overrides)
    for share in ("generate", "pretrain"):
        if not 0 <= getattr(cfg, share) <= 1:
            raise ValueError(f"{share}={getattr(cfg, share)} is a fraction of rows, in [0, 1]")
    if cfg.layers < 1:
        raise ValueError(f"layers={cfg.layers} must be >= 1")
    return cfg



def train_tiny(
    name: str,
    out_dir: str | Path,
    *,
    seed: int = 0,
    steps: int | None = None,
    log: Callable[[str], None] | None = print,
    vq_cache: str | Path | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train tiny model ``name`` ("tiny-native", "tiny-gate", "tiny-llava") into ``out_dir``.

    ``vq_cache``: a directory where a native model's fitted VQ tokenizer (and the codes of
    the training images) is kept under a key of everything it depends on, so runs that share
    it (the gate-emergence variants) fit it once; the weights are the same either way.

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
            model = build_model(name, seed, layers=cfg.layers, vq_dim=cfg.vq_dim)
            if cfg.init_from is not None:
                report["init_from"] = _start_from(model, cfg.init_from)
        codes = None
        if hasattr(model.model, "vqmodel"):  # tiny-native: images enter as VQ codes
            with clock("vq"):
                report["vq"], codes = _fit_codes(model, processor, train, cfg, seed, vq_cache)
            say(f"VQ tokenizer: {report['vq']}")
        if hasattr(model.model, "vision_tower") and cfg.init_from is None:  # a pretrained tower
            with clock("tower"):
                held_out = list(synthetic_dataset("test", 300)) if cfg.n_eval else []
                report["tower"] = pretrain_tower(
                    model.model.vision_tower, processor, train, steps=cfg.tower_steps,
                    seed=seed, held_out=held_out,
                )
            say(f"vision tower: {report['tower']}")
        spec = BatchSpec(processor, model_config, codes, image_modelling=cfg.image_modelling)
        # the image side (VQ tokenizer, CLIP tower) had its own stage and stays frozen
        for part in ("vqmodel", "vision_tower"):
            if hasattr(model.model, part):
                getattr(model.model, part).requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        image_codes = None
        if codes is not None:
            image_codes = torch.tensor(model.model.vocabulary_mapping.image_tokens)
        weights = dict(model.named_parameters())  # by HF name, before any wrapping
        gate = (GateTraining(model, processor, model_config, cfg.gate_penalty)
                if cfg.mask_image else None)
        with clock("train"):
            losses = run_loop(
                model, params, step_batches(spec, train, cfg, seed), steps=cfg.steps, lr=cfg.lr,
                warmup=min(cfg.warmup, cfg.steps), weight_decay=cfg.weight_decay,
                log_every=cfg.log_every, log=say, image_codes=image_codes,
                image_weight=cfg.image_weight, around=gate and gate.around,
                penalty=gate.penalty if gate and cfg.gate_penalty else None,
            )
        if gate is not None:  # the trained weights, in a plain (never wrapped) HF model
            model = _plain_copy(name, seed, cfg, weights)
            if gate.masses:
                report["text_image_attention_mass"] = loss_summary(gate.masses,
                                                                   cfg.log_every)["loss_curve"]
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


def _start_from(model: Any, source: str) -> dict[str, Any]:
    """Load the weights of tiny model ``source`` (a name such as "tiny-native", or a
    directory) into ``model``; returns where they came from and their SHA-256."""
    path = Path(source) if Path(source).is_dir() else Path(load_model_config(source).location)
    file = path / "model.safetensors"
    if not file.is_file():
        raise FileNotFoundError(f"init_from={source!r}: no model.safetensors in {path}")
    state = load_file(str(file))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if "vocabulary_mapping" not in k]:
        raise ValueError(f"init_from={source!r} is not a checkpoint of this architecture and "
                         f"size: missing {missing[:3]}, unexpected {unexpected[:3]}")
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    source_report = path / "training.json"
    vq = json.loads(source_report.read_text()).get("vq") if source_report.is_file() else None
    return {"source": source, "sha256": digest, "vq": vq}


def _plain_copy(name: str, seed: int, cfg: TrainConfig, weights: dict[str, Any]) -> Any:
    fresh = build_model(name, seed, layers=cfg.layers, vq_dim=cfg.vq_dim)
    with torch.no_grad():
        for key, p in fresh.named_parameters():
            p.copy_(weights[key])
    return fresh.eval()


def step_batches(
    spec: BatchSpec, train: Any, cfg: TrainConfig, seed: int
) -> Callable[[int], dict[str, torch.Tensor]]:
    """``next_batch(step)``: rows, tasks and answers drawn from a generator seeded by
    ``(seed, step)``, so step ``s`` has the same batch whatever ran before it."""
    def next_batch(step: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([seed, step])
        indices = rng.integers(len(train), size=cfg.batch_size).tolist()
        turns = [_row_turns(rng, cfg) for _ in indices]
        return make_batch(spec, [train[i] for i in indices], turns, rng, indices)

    return next_batch


def _row_turns(rng: np.random.Generator, cfg: TrainConfig) -> tuple[str, ...]:
    """One row's tasks: a single ``generate`` or ``pretrain`` turn, or a conversation (no
    draw is spent on ``pretrain`` when it is 0, so older recipes keep their batches)."""
    if rng.random() < cfg.generate:
        return ("generate",)
    if cfg.pretrain and rng.random() < cfg.pretrain:
        return ("pretrain",)
    return tuple(str(t) for t in rng.permutation(cfg.turns))


def _fit_codes(
    model: Any, processor: Any, train: Any, cfg: TrainConfig, seed: int,
    cache: str | Path | None = None,
) -> tuple[dict[str, float], torch.Tensor]:
    """Fit the VQ tokenizer (or read it from ``cache``), start the code tokens' embeddings
    and output rows from the codebook, then the code-token ids of every training image (HF's
    own ``get_image_tokens``), ``[n_train, 64]``."""
    vqmodel = model.model.vqmodel
    if cfg.init_from is not None:  # the loaded VQ tokenizer and code embeddings are kept
        with torch.no_grad():
            vqmodel.eval()
            codes = _encode(model, processor, train)
        return {"from": cfg.init_from}, codes
    key = _vq_key(cfg, seed) if cache is not None else None
    if key is not None and (Path(cache) / f"{key}.safetensors").exists():
        tensors = load_file(str(Path(cache) / f"{key}.safetensors"))
        vqmodel.load_state_dict({k.removeprefix("vq."): v for k, v in tensors.items()
                                 if k.startswith("vq.")})
        vq_report = json.loads((Path(cache) / f"{key}.json").read_text())
        vqmodel.eval()
        _init_code_embeddings(model, seed)
        return vq_report, tensors["codes"]
    vq_report, codes = _fit_vq_codes(model, processor, train, cfg, seed)
    _init_code_embeddings(model, seed)
    if key is not None:
        Path(cache).mkdir(parents=True, exist_ok=True)
        tensors = {f"vq.{k}": v.contiguous() for k, v in vqmodel.state_dict().items()}
        save_file({**tensors, "codes": codes}, str(Path(cache) / f"{key}.safetensors"))
        (Path(cache) / f"{key}.json").write_text(json.dumps(vq_report))
    return vq_report, codes


def _vq_key(cfg: TrainConfig, seed: int) -> str:
    """Everything a fitted VQ tokenizer depends on: its options, the seed, the training
    images, and the source of the code that builds and fits it."""
    here = Path(__file__).parent
    sources = [here / "vq.py", here / "models.py", here / "vocab.py",
               here.parent / "data" / "synthetic.py"]
    options = {k: getattr(cfg, k) for k in ("vq_steps", "vq_images", "vq_dim", "vq_silhouette",
                                            "n_train")}
    digest = hashlib.sha256(json.dumps({"seed": seed, **options}, sort_keys=True).encode())
    for source in sources:
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def _fit_vq_codes(
    model: Any, processor: Any, train: Any, cfg: TrainConfig, seed: int
) -> tuple[dict[str, float], torch.Tensor]:
    vqmodel = model.model.vqmodel
    fitted = min(cfg.vq_images, len(train))
    masks = None
    if cfg.vq_silhouette:
        scenes = [synthetic.Scene.from_json(o) for o in train[:fitted]["objects"]]
        masks = torch.tensor(np.stack([synthetic.silhouette(s) for s in scenes]),
                             dtype=torch.float32)[:, None]
    vq_report = fit_vq(vqmodel, _pixels(processor, train, 0, fitted), steps=cfg.vq_steps,
                       seed=seed, silhouettes=masks, silhouette_weight=cfg.vq_silhouette)
    with torch.no_grad():
        return vq_report, _encode(model, processor, train)


def _encode(model: Any, processor: Any, train: Any) -> torch.Tensor:
    """The VQ code-token ids of every training image, ``[n, 64]`` (HF's pixel path)."""
    return torch.cat([model.model.get_image_tokens(_pixels(processor, train, s, s + 512))
                      for s in range(0, len(train), 512)])


def _pixels(processor: Any, rows: Any, start: int, stop: int) -> torch.Tensor:
    images = rows[start:min(stop, len(rows))]["image"]
    return processor.image_processor(images, return_tensors="pt")["pixel_values"]


def _init_code_embeddings(model: Any, seed: int) -> None:
    """The code tokens' input embeddings and output rows start from the codebook."""
    with torch.no_grad():
        codebook = model.model.vqmodel.quantize.embedding.weight
        token_ids = model.model.vocabulary_mapping.convert_img2bpe(torch.arange(len(codebook)))
        start = code_embeddings(codebook, model.config.hidden_size, seed)
        model.model.embed_tokens.weight[token_ids] = start
        model.lm_head.weight[token_ids] = start


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
