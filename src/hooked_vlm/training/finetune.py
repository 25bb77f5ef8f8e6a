"""Fine-tuning toward distributed communication (Narrow Gate, NeurIPS version; no public code).

A native VLM's text reads the image mostly through one token, the end-of-image token (EOI):
cut text→EOI attention and answers collapse. The paper fine-tunes such a model with that
attention *masked during training*, so the model has to route image information to text
through the image tokens themselves; afterwards the EOI knockout hurts far less.

Here, on the synthetic shapes data of :mod:`hooked_vlm.training`:

- training batches, the text-answer loss and the optimisation loop are the tiny models' own
  (:func:`~hooked_vlm.training.train.step_batches`, :func:`~hooked_vlm.training.loop.run_loop`),
  on image conversations only (no image-generation rows: they have no text after the image);
- the training mask is the EOI knockout intervention itself,
  ``knockout(model, layout, "text_after_image", "eoi", mode="mask")`` built from each batch's
  token layout: every query after the image loses its key at EOI (−inf before the softmax),
  image tokens and every other edge are untouched, gradients flow through the rest;
- ``masked_keys="image"`` masks the other way round (the same knockout with the layout's
  ``"image"`` group: the image tokens between BOI and EOI, EOI itself excluded), so text can
  read the image only through EOI: it *plants* a narrow gate, a known ground truth on which
  the EOI-masked fine-tune can then be checked (``scripts/planted_gate.py``);
- the update is a LoRA (peft) on the decoder's attention and MLP projections, or every
  decoder weight (``full=True``); the VQ tokenizer stays frozen;
- before and after, on the same held-out images: :func:`~hooked_vlm.training.evaluate.evaluate`
  (greedy answers and captions) and :func:`knockout_probe` (first-token answers with text→EOI
  or text→image-token attention cut in every layer);
- the result is a plain ``save_pretrained`` checkpoint (LoRA merged into the weights) with a
  ``finetune.json`` report, loadable by ``HookedVLM.from_pretrained(path,
  model_config="tiny-native")``.

Example:
    >>> report = finetune("tiny-native", "out/tiny-native-ft", steps=200, seed=0)
    >>> report["before"]["probe"]["mean"], report["after"]["probe"]["mean"]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from torch import Tensor, nn

from hooked_vlm import loading
from hooked_vlm.data import synthetic
from hooked_vlm.interventions import knockout
from hooked_vlm.model import HookedVLM
from hooked_vlm.training.batches import BatchSpec
from hooked_vlm.training.evaluate import evaluate, vqa_accuracy
from hooked_vlm.training.loop import run_loop
from hooked_vlm.training.train import (
    TrainConfig,
    deterministic,
    loss_summary,
    save_checkpoint,
    step_batches,
)

# The decoder's attention and MLP projections (LLaMA-style names, as in Chameleon); the VQ
# tokenizer's modules never match.
LORA_TARGETS = r".*layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
QUERIES = "text_after_image"  # the masked queries: every text position after the image
PROBE_KEYS = ("eoi", "image")  # knockouts of the probe: text→EOI, text→image tokens
MASKED_KEYS = ("eoi", "image")  # keys the training mask may hide from text after the image
TURNS = ("classify", "vqa", "caption")  # conversation turns of a training row
PROBE_TASKS = ("classify", *(f"vqa_{q}" for q in synthetic.QUESTION_TYPES))


class FinetuneError(ValueError):
    """A fine-tuning request this model or these options cannot honour."""


@dataclass(frozen=True)
class FinetuneConfig:
    """Options of one fine-tuning run (``lr=None``: 2e-3 for LoRA, 3e-4 for ``full``)."""

    steps: int = 200
    full: bool = False
    rank: int = 8
    alpha: float = 16.0
    lr: float | None = None
    batch_size: int = 16
    warmup: int = 20
    weight_decay: float = 0.0
    turns: tuple[str, ...] = ("classify", "vqa", "vqa", "caption")
    n_train: int = 4000
    n_eval: int = 256
    mask: bool = True  # False: the same run without the mask (a control)
    masked_keys: str = "eoi"  # "eoi" (the paper's run) or "image" (plants a gate at EOI)
    log_every: int = 50

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (3e-4 if self.full else 2e-3)


def finetune_config(**overrides: Any) -> FinetuneConfig:
    """:class:`FinetuneConfig` with ``overrides``; unknown or out-of-range options raise."""
    known = {f.name for f in fields(FinetuneConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise FinetuneError(f"unknown fine-tuning options {unknown}; known: {sorted(known)}")
    cfg = replace(FinetuneConfig(), **overrides)
    lora_only = sorted({"rank", "alpha"} & set(overrides))
    if cfg.full and lora_only:
        raise FinetuneError(f"{lora_only} are LoRA options; drop them for a full fine-tune")
    flags = ("full", "mask")
    values = {f.name: getattr(cfg, f.name) for f in fields(FinetuneConfig)}
    odd = [f"{k}={v!r}" for k, v in values.items() if isinstance(v, (int, float))
           and (isinstance(v, bool) != (k in flags) or not math.isfinite(v))]
    if odd:
        raise FinetuneError(f"options {odd} must be finite numbers ({' and '.join(flags)}: "
                            "true or false)")
    positive = ("steps", "rank", "batch_size", "n_train", "n_eval")
    bad = [f"{k}={getattr(cfg, k)}" for k in positive if getattr(cfg, k) < 1]
    bad += [f"lr={cfg.lr}"] if cfg.lr is not None and cfg.lr <= 0 else []
    bad += [f"alpha={cfg.alpha}"] if cfg.alpha <= 0 else []
    if bad:
        raise FinetuneError(f"options {bad} must be positive")
    if cfg.warmup < 0:
        raise FinetuneError(f"warmup={cfg.warmup} must be >= 0")
    other = [t for t in cfg.turns if t not in TURNS]
    if other or not cfg.turns:
        raise FinetuneError(f"turns {other or '()'} refused; accepted: {TURNS} (no 'generate': "
                            "its rows have no text after the image to mask)")
    if cfg.masked_keys not in MASKED_KEYS:
        raise FinetuneError(f"masked_keys={cfg.masked_keys!r} refused; accepted: {MASKED_KEYS} "
                            "(text→EOI, the paper's run; text→image tokens, a planted gate)")
    if not cfg.mask and "masked_keys" in overrides:
        raise FinetuneError("masked_keys has no effect with mask=False (--no-mask, the "
                            "unmasked control); drop one of them")
    return cfg


@dataclass
class Trainable:
    """A HookedVLM ready to train: the parameters to update, and what merging needs."""

    vlm: HookedVLM
    source: loading.Source
    params: list[nn.Parameter]
    weights: dict[str, Tensor]  # HF parameter name (before bridging) -> the live tensor
    lora: dict[str, Any] = field(default_factory=dict)  # HF module name -> peft LoRA layer

    def merged_weights(self) -> dict[str, Tensor]:
        """Every HF weight by its plain name, each LoRA's delta (peft's own
        ``get_delta_weight``) added to its base weight."""
        out = {name.replace(".base_layer.", "."): w.detach().clone()
               for name, w in self.weights.items() if ".lora_" not in name}
        with torch.no_grad():
            for name, layer in self.lora.items():
                out[f"{name}.weight"] += layer.get_delta_weight("default")
        return out


def load_trainable(
    model: str | Path, model_config: str | None, cfg: FinetuneConfig, seed: int = 0
) -> Trainable:
    """Load ``model`` in float32, add LoRA layers (unless ``cfg.full``; their random init
    seeded by ``seed``), wrap it.

    LoRA goes in *before* the HookedVLM wraps the model, so the bridged and the bypass path of
    every layer (:mod:`hooked_vlm.fast_layers`) run the same LoRA modules.
    """
    source = loading.resolve_source(model, model_config)
    hf_model, _ = loading.load_hf_model(source, torch.float32, None)
    processor = loading.load_processor(source)
    if source.model_config is None or processor is None:
        raise FinetuneError(
            f"{model!r} has no model config or processor: give a model-config name (e.g. "
            "tiny-native) or a checkpoint directory with --model-config tiny-native; the "
            "training prompts come from the model config's templates."
        )
    lora: dict[str, Any] = {}
    hf_model.requires_grad_(False)
    if cfg.full:
        for name, p in hf_model.named_parameters():
            p.requires_grad_(not name.startswith("model.vqmodel."))
    else:
        from peft import LoraConfig, inject_adapter_in_model
        from peft.tuners.lora import LoraLayer

        config = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0,
                            target_modules=LORA_TARGETS)
        torch.manual_seed(seed)
        hf_model = inject_adapter_in_model(config, hf_model)
        lora = {n: m for n, m in hf_model.named_modules() if isinstance(m, LoraLayer)}
        if not lora:
            raise FinetuneError(f"no module of {type(hf_model).__name__} matches the LoRA "
                                f"targets {LORA_TARGETS!r}; use full=True (--full)")
        for name, p in hf_model.named_parameters():
            p.requires_grad_(".lora_" in name)
    weights = dict(hf_model.named_parameters())
    vlm = HookedVLM.from_hf(hf_model, processor, model_config=source.model_config)
    check_has_eoi(vlm)
    params = [p for p in weights.values() if p.requires_grad]
    return Trainable(vlm, source, params, weights, lora)


def check_has_eoi(vlm: HookedVLM) -> None:
    """Raise :class:`FinetuneError` unless ``vlm`` marks its images' end with an EOI token."""
    if vlm.architecture.tokens(vlm.hf_model.config).eoi is None:
        raise FinetuneError(
            f"{vlm.cfg.architecture} has no end-of-image (EOI) token, so there is no text→EOI "
            "attention to mask. Fine-tuning needs a native model with an EOI token: "
            "tiny-native (Chameleon), or a checkpoint directory of it with --model-config "
            "tiny-native."
        )


@contextmanager
def text_masked(vlm: HookedVLM, batch: dict[str, Tensor], keys: str = "eoi") -> Iterator[None]:
    """Within the block, every query after the image cannot attend to ``keys`` (a
    :data:`MASKED_KEYS` layout group: ``"eoi"`` or the ``"image"`` tokens), in every layer:
    the knockout intervention's ``"mask"`` hooks for this batch's token layout.

    Example:
        >>> with text_masked(vlm, batch, "eoi"):
        ...     loss = next_token_loss(vlm.hf_model, batch)
    """
    layout = vlm.layout(batch["input_ids"], attention_mask=batch["attention_mask"])
    with vlm.hooks(knockout(vlm, layout, QUERIES, keys, mode="mask")):
        yield


def knockout_probe(
    vlm: HookedVLM,
    rows: Sequence[dict[str, Any]],
    *,
    keys: Sequence[str] = PROBE_KEYS,
    batch_size: int = 64,
) -> dict[str, Any]:
    """First-token answers to every probe task, clean and with text→EOI or text→image-token
    attention cut (``"mask"`` mode, every layer, queries after the image); ``keys`` are the
    knockouts, layout groups (e.g. ``"image_and_eoi"``: no image reachable at all).

    Returns, per task and over all (``"mean"``): ``accuracy[condition]`` (VQA accuracy of the
    first predicted word, as :func:`evaluate` scores it) and ``logprob_change[key]``, the mean
    change of the correct answer's log-probability under that knockout.

    Example:
        >>> probe = knockout_probe(vlm, list(synthetic_dataset("test", 64)))
        >>> probe["mean"]["accuracy"]   # {'none': ..., 'eoi': ..., 'image': ...}
    """
    cfg, tok = vlm.model_config, vlm.tokenizer
    per_task: dict[str, dict[str, list[float]]] = {}
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        scenes = [synthetic.Scene.from_json(r["objects"]) for r in chunk]
        for task in PROBE_TASKS:
            if task == "classify":
                prompts = [cfg.prompt("classify")] * len(chunk)
                answers = [synthetic.answer_variants("shape", r["label"]) for r in chunk]
            else:
                qtype = task.removeprefix("vqa_")
                qa = [synthetic.ask(s, qtype, variant=(start + i) % 2)
                      for i, s in enumerate(scenes)]
                prompts = [cfg.prompt("vqa", question=q) for q, _ in qa]
                answers = [synthetic.answer_variants(qtype, a) for _, a in qa]
            target = torch.tensor(tok.convert_tokens_to_ids([a[0] for a in answers]))
            scores = per_task.setdefault(task, {})
            inputs = vlm.prepare([r["image"] for r in chunk], prompts)
            last = inputs.layout.mask("last")
            clean = None
            for condition in ("none", *keys):
                hooks = [] if condition == "none" else knockout(
                    vlm, inputs.layout, QUERIES, condition, mode="mask")
                with torch.no_grad():
                    logprobs = vlm.run_with_hooks(inputs, fwd_hooks=hooks)[last].log_softmax(-1)
                words = tok.convert_ids_to_tokens(logprobs.argmax(-1).tolist())
                scores.setdefault(condition, []).extend(
                    vqa_accuracy(w, a) for w, a in zip(words, answers, strict=True))
                correct = logprobs.gather(1, target[:, None])[:, 0]
                if clean is None:
                    clean = correct
                else:
                    scores.setdefault(f"d_{condition}", []).extend((correct - clean).tolist())
    out: dict[str, Any] = {t: _summary(s, keys) for t, s in per_task.items()}
    out["mean"] = {part: {k: float(np.mean([out[t][part][k] for t in PROBE_TASKS]))
                          for k in out[PROBE_TASKS[0]][part]}
                   for part in ("accuracy", "logprob_change")}
    out["n"] = len(rows)
    return out


def _summary(scores: dict[str, list[float]], keys: Sequence[str]) -> dict[str, dict[str, float]]:
    return {
        "accuracy": {c: float(np.mean(scores[c])) for c in ("none", *keys)},
        "logprob_change": {k: float(np.mean(scores[f"d_{k}"])) for k in keys},
    }


def measure(vlm: HookedVLM, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Held-out accuracy (:func:`evaluate`, greedy) and the :func:`knockout_probe`."""
    vlm.hf_model.eval()
    held_out = evaluate(vlm.hf_model, vlm.processor, vlm.model_config, rows)
    return {"eval": held_out, "probe": knockout_probe(vlm, rows)}


def finetune(
    model: str | Path,
    out_dir: str | Path,
    *,
    model_config: str | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = print,
    **overrides: Any,
) -> dict[str, Any]:
    """Fine-tune ``model`` with text→EOI (or text→image-token) attention masked; save the
    merged checkpoint.

    ``overrides`` are :class:`FinetuneConfig` fields (``steps``, ``full``, ``rank``, ``lr``,
    ``n_eval``, ``mask``, ``masked_keys``, ...). Same seed and options give the same weights.
    Returns the report also written to ``out_dir/finetune.json``: the config, ``masked`` (the
    keys hidden from text after the image, None for the unmasked control), losses, seconds
    per stage,
    ``before``/``after`` measurements (:func:`measure`, same held-out images) and
    ``merge_max_abs_logit_diff`` (saved checkpoint vs the trained model, on probe inputs).

    Example:
        >>> report = finetune("tiny-native", "/tmp/ft", steps=5, n_train=32, n_eval=8, log=None)
    """
    cfg = finetune_config(**overrides)
    out = _fresh_out_dir(out_dir)
    say = log or (lambda _msg: None)
    report: dict[str, Any] = {"model": str(model), "seed": seed, "config": asdict(cfg),
                              "masked": cfg.masked_keys if cfg.mask else None,
                              "lr": cfg.learning_rate, "seconds": {}}
    with deterministic():
        start = time.perf_counter()
        run = load_trainable(model, model_config, cfg, seed)
        vlm = run.vlm
        report["model_config"] = vlm.model_config.name
        report["trainable_parameters"] = sum(p.numel() for p in run.params)
        test = list(synthetic.synthetic_dataset("test", cfg.n_eval))
        report["before"] = measure(vlm, test)
        say(f"before: {_headline(report['before'])}")
        report["seconds"]["before"] = _lap(start)

        start = time.perf_counter()
        losses = train_masked(run, cfg, seed, log=say)
        report.update(loss_summary(losses, cfg.log_every))
        report["seconds"]["train"] = _lap(start)

        start = time.perf_counter()
        report["after"] = measure(vlm, test)
        say(f"after:  {_headline(report['after'])}")
        report["seconds"]["after"] = _lap(start)
        merged = merged_model(run)
        report["merge_max_abs_logit_diff"] = _merge_check(vlm, merged, test[:8])
    _check_finite(losses, merged)
    report["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    save_checkpoint(merged, vlm.processor, out, {"finetune.json": report})
    return report


def _fresh_out_dir(out_dir: str | Path) -> Path:
    """``out_dir`` if writing the checkpoint there destroys nothing (checked before training)."""
    out = Path(out_dir)
    if out.is_file():
        raise FinetuneError(f"--out {out} is a file: the checkpoint is a directory; give a new "
                            "directory path")
    if out.is_dir() and any(out.iterdir()):
        raise FinetuneError(f"--out {out} exists and is not empty: the checkpoint would replace "
                            "what is there; give a new directory, or delete it first")
    return out


def _check_finite(losses: Sequence[float], merged: nn.Module) -> None:
    """Refuse to save what diverged: a NaN/inf loss or weight."""
    bad_step = next((i for i, loss in enumerate(losses) if not math.isfinite(loss)), None)
    bad = [n for n, p in merged.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad_step is not None or bad:
        where = f"the loss is {losses[bad_step]} from step {bad_step + 1}" \
            if bad_step is not None else f"weights {bad[:3]} hold NaN/inf"
        raise FinetuneError(f"training diverged ({where}): nothing was saved. Lower the learning "
                            "rate (--lr), or check the data")


def train_masked(
    run: Trainable, cfg: FinetuneConfig, seed: int, log: Callable[[str], None] | None = None
) -> list[float]:
    """Train ``run`` in place for ``cfg.steps`` steps (text→``cfg.masked_keys`` masked unless
    ``cfg.mask`` is False) on the tiny models' seeded batches; returns every step's loss.

    Example:
        >>> losses = train_masked(load_trainable("tiny-native", None, cfg), cfg, seed=0)
    """
    vlm = run.vlm
    train = synthetic.synthetic_dataset("train", cfg.n_train)
    spec = BatchSpec(vlm.processor, vlm.model_config)
    batches = TrainConfig(steps=cfg.steps, turns=cfg.turns, batch_size=cfg.batch_size)
    with deterministic(), torch.enable_grad():  # whatever the caller's grad mode
        return run_loop(
            vlm.hf_model, run.params, step_batches(spec, train, batches, seed),
            steps=cfg.steps, lr=cfg.learning_rate, warmup=min(cfg.warmup, cfg.steps),
            weight_decay=cfg.weight_decay, log_every=cfg.log_every, log=log,
            around=(lambda batch: text_masked(vlm, batch, cfg.masked_keys)) if cfg.mask
            else None,
        )


def merged_model(run: Trainable) -> nn.Module:
    """A fresh copy of the base checkpoint holding the trained (LoRA-merged) weights."""
    fresh, _ = loading.load_hf_model(run.source, torch.float32, None)
    weights = run.merged_weights()
    with torch.no_grad():
        for name, p in fresh.named_parameters():
            p.copy_(weights[name])
    return fresh


def _merge_check(vlm: HookedVLM, merged: nn.Module, rows: Sequence[dict[str, Any]]) -> float:
    inputs = vlm.prepare([r["image"] for r in rows], task="classify")
    with torch.no_grad():
        ours = vlm(inputs)
        theirs = merged(**inputs).logits
    return float((ours - theirs).abs().max())


def summary_rows(measured: dict[str, Any]) -> dict[str, float]:
    """The figures of one :func:`measure` result by label: held-out accuracy, probe accuracy
    clean and under each knockout, and each knockout's mean Δ log p(answer).

    Example:
        >>> summary_rows(report["after"])["probe accuracy, text→EOI cut"]
    """
    evals = ("classify", "vqa", "vqa_color", "vqa_shape", "vqa_count", "vqa_position",
             "caption_cider")
    rows = {f"evaluate: {k}": measured["eval"][k] for k in evals}
    probe = measured["probe"]["mean"]
    labels = {"none": "clean", "eoi": "text→EOI cut", "image": "text→image cut"}
    rows.update({f"probe accuracy, {labels[c]}": probe["accuracy"][c]
                 for c in ("none", *PROBE_KEYS)})
    rows.update({f"probe Δ log p(answer), {labels[k]}": probe["logprob_change"][k]
                 for k in PROBE_KEYS})
    return {label: float(v) for label, v in rows.items()}


def _headline(measured: dict[str, Any]) -> str:
    acc = measured["probe"]["mean"]["accuracy"]
    return (f"classify {measured['eval']['classify']:.3f}  vqa {measured['eval']['vqa']:.3f}  "
            f"probe accuracy clean {acc['none']:.3f} / text→EOI cut {acc['eoi']:.3f} / "
            f"text→image cut {acc['image']:.3f}")


def _lap(start: float) -> float:
    return round(time.perf_counter() - start, 1)
