"""Stages 4 and 5: what text loses when it cannot read the gate or the image (analyses 5, 7).

Conditions (text queries; every layer and head unless a window is given):

- ``none``: no intervention;
- ``gate``: keys = the gate (EOI; the last image token without one);
- ``image``: keys = BOI and every image token, the gate kept (the paper's image->text cut);
- ``random-r``: ``random_k`` image tokens drawn per example (repeat ``r``; averaged);
- ``all``: every image-side key (gate included), a floor: text then sees no image at all.

each in every configured mode ("zero": post-softmax, the paper's code; "mask": -inf before
the softmax). Effects, per task: captioning (greedy, CIDEr-D), VQA (greedy, VQA accuracy) and
classification (label overlap chi of the last token after the last block; accuracy of the
answer's first token among the model config's class names, when it lists them).

Stage 5 (``progressive``) knocks out the gate or the image in the last ``w`` layers only, for
each window ``w``, on classification.

Classification reuses each chunk's clean prefix (everything before the first text token after
the image) across all conditions. Generation runs the whole prompt with the hooks active at
every decoding step, all conditions of one mode in one batch (``batch_size`` x the number of
conditions sequences: about 2x faster than one condition at a time on the tiny models).

Example:
    >>> [c.name for c in conditions(session)][:3]
    ['none', 'zero/gate', 'zero/image']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hooked_vlm.analysis import cider_d, label_overlap, mean_vqa_accuracy
from hooked_vlm.interventions import Hooks, Selector, knockout, resolve
from hooked_vlm.layout import TokenLayout
from hooked_vlm.storage import Store
from hooked_vlm.studies.narrow_gate.collect import LastPosition
from hooked_vlm.studies.narrow_gate.session import NarrowGateSession as Session
from hooked_vlm.studies.narrow_gate.session import unit_seed
from hooked_vlm.studies.narrow_gate.stage_representations import overlap_k
from hooked_vlm.studies.session import key_index, stacked
from hooked_vlm.studies.study import Result, Stage

GENERATION_TASKS = ("caption", "vqa")


@dataclass(frozen=True)
class Condition:
    """One knockout: which keys, in which mode, in which layers (None: all)."""

    name: str
    keys: str | None  # None: no intervention
    mode: str | None = None
    repeat: int = 0
    layers: tuple[int, ...] | None = None


NONE = Condition("none", None)


def conditions(session: Session) -> list[Condition]:
    """Stage 4's conditions: none, then gate / image / random repeats / all per mode."""
    out = [NONE]
    for mode in session.config.knockout_modes:
        out += [Condition(f"{mode}/gate", "gate", mode), Condition(f"{mode}/image", "image", mode)]
        out += [Condition(f"{mode}/random-{r}", "random", mode, r)
                for r in range(session.config.random_repeats)]
        out.append(Condition(f"{mode}/all", "all", mode))
    return out


def progressive_conditions(session: Session) -> list[Condition]:
    """Stage 5's: the gate or the image cut in the last ``w`` layers, per window and mode."""
    n = session.model.cfg.n_layers
    return [NONE] + [
        Condition(f"{mode}/{keys}/w{w}", keys, mode, layers=tuple(range(n - w, n)))
        for mode in session.config.knockout_modes for keys in ("gate", "image")
        for w in session.windows
    ]


def condition_keys(session: Session, layout: TokenLayout, condition: Condition) -> Selector:
    """The keys ``condition`` cuts, as a selector of ``layout``."""
    return {
        "gate": session.gate,
        "image": session.image_keys(layout),
        "all": session.all_image_keys(layout),
        "random": f"random_image:{session.config.random_k}",
    }[condition.keys]


def knockout_hooks(
    session: Session, layout: TokenLayout, condition: Condition, *seed_parts: object
) -> Hooks | None:
    """The hooks of ``condition`` (None for no intervention); random keys seeded by
    ``(config seed, repeat, *seed_parts)``."""
    if condition.keys is None:
        return None
    seed = unit_seed(session.config.seed, "random", condition.repeat, *seed_parts)
    return knockout(session.model, layout, "text", condition_keys(session, layout, condition),
                    layers=condition.layers, mode=condition.mode, seed=seed)


# ---------------------------------------------------------------------- units


def _classify_unit(
    session: Session, stage: str, conds: list[Condition], j: int
) -> dict[str, np.ndarray]:
    """Last-token residual and class logits under each condition, on one reused prefix."""
    inputs, _ = session.inputs("classify", session.chunks("classify")[j])
    layout = inputs.layout
    hooks = [knockout_hooks(session, layout, c, stage, "classify", j) for c in conds]
    start = min(h.start for h in hooks if h is not None)
    last = LastPosition(session.model, inputs, layout, start)
    residuals, class_logits = [], []
    tokens = [session.class_token(c) for c in session.class_names or []]
    for h in hooks:
        resid, logits = last.run(h)
        residuals.append(resid.numpy())
        class_logits.append(logits[:, tokens].numpy())
    return {"resid": np.stack(residuals), "class_logits": np.stack(class_logits)}


def _generation_unit(
    session: Session, task: str, mode: str | None, j: int
) -> dict[str, np.ndarray]:
    """Greedy generation of chunk ``j`` under every condition of ``mode`` at once: the chunk is
    repeated once per condition (condition-major) and each copy gets its own keys cut, in
    every layer and at every decoding step."""
    conds = [c for c in conditions(session) if c.mode == mode]  # [none], or one mode's
    rows = session.chunks(task)[j]
    inputs, _ = session.inputs(task, list(rows) * len(conds))
    layout, b = inputs.layout, len(rows)
    hooks = ()
    if mode is not None:
        keys = [
            resolve(layout, condition_keys(session, layout, c),
                    seed=unit_seed(session.config.seed, "random", c.repeat, "knockout", task, j)
                    ).mask[i * b:(i + 1) * b]
            for i, c in enumerate(conds)
        ]
        hooks = knockout(session.model, layout, "text", torch.cat(keys), mode=mode)
    new_tokens = session.config.caption_tokens if task == "caption" else session.config.vqa_tokens
    out = session.model.generate(inputs, max_new_tokens=new_tokens, fwd_hooks=hooks)
    prompt = inputs["input_ids"].shape[1]
    texts = session.model.tokenizer.batch_decode(out[:, prompt:], skip_special_tokens=True)
    texts = [" ".join(t.split()) for t in texts]
    return {"text": np.array(texts, dtype=str).reshape(len(conds), b),
            "conditions": np.array([c.name for c in conds])}


def _generation_key(task: str, mode: str | None, j: int) -> str:
    return f"knockout/{task}/{mode or 'none'}/{j:04d}"


def _classify_keys(session: Session) -> list[str]:
    return [f"knockout/classify/{j:04d}" for j in range(len(session.chunks("classify")))] \
        if session.has_task("classify") else []


def _keys(session: Session) -> list[str]:
    modes = [None, *session.config.knockout_modes]
    keys = [_generation_key(task, mode, j) for task in GENERATION_TASKS if session.has_task(task)
            for mode in modes for j in range(len(session.chunks(task)))]
    return keys + _classify_keys(session)


def _unit(session: Session, key: str) -> dict[str, np.ndarray]:
    """``knockout/classify/<j>`` or ``knockout/<task>/<mode or none>/<j>``."""
    _, task, *rest = key.split("/")
    if task == "classify":
        return _classify_unit(session, "knockout", conditions(session), key_index(key))
    mode = None if rest[0] == "none" else rest[0]
    return _generation_unit(session, task, mode, key_index(key))


def _progressive_keys(session: Session) -> list[str]:
    return [f"progressive/{j:04d}" for j in range(len(session.chunks("classify")))]


def _progressive_unit(session: Session, key: str) -> dict[str, np.ndarray]:
    return _classify_unit(session, "progressive", progressive_conditions(session),
                          key_index(key))


# ---------------------------------------------------------------------- reductions


def _classify_metrics(session: Session, store: Store, units: list[str]) -> dict[str, list]:
    """Per condition: overlap chi of the last token, and class accuracy (None without names)."""
    labels = session.labels
    k, _ = overlap_k(session, labels)
    resid = stacked(store, units, "resid", axis=1)  # [condition, n, d]
    chi = [label_overlap(r, labels, k, session.config.overlap_class_balanced) for r in resid]
    accuracy: list = [None] * len(resid)
    if session.class_names:
        names = np.array(session.class_names)
        predicted = names[stacked(store, units, "class_logits", axis=1).argmax(-1)]
        tokens = {name: session.class_token(name) for name in names}
        # a prediction is right when it starts with the label's first token
        right = np.vectorize(tokens.get)(predicted) == session.label_tokens[None]
        accuracy = right.mean(1).tolist()
    return {"chi": chi, "accuracy": accuracy}


def _generation_metrics(session: Session, store: Store, task: str) -> dict[str, float]:
    """CIDEr-D (caption) or VQA accuracy (vqa) of each condition's generated texts."""
    texts: dict[str, list[str]] = {}
    for mode in [None, *session.config.knockout_modes]:
        keys = [_generation_key(task, mode, j) for j in range(len(session.chunks(task)))]
        names = store.load(keys[0])["conditions"].tolist()
        for name, row in zip(names, stacked(store, keys, "text", axis=1).tolist(), strict=True):
            texts[name] = row
    if task == "caption":
        refs = session.column("caption", "captions")
        tokenizer = session.config.cider_tokenizer
        return {name: cider_d(t, refs, tokenizer=tokenizer).score for name, t in texts.items()}
    answers = session.column("vqa", "answers")
    return {name: mean_vqa_accuracy(t, answers)[0] for name, t in texts.items()}


@dataclass
class KnockoutResult(Result):
    """Per condition and metric (CIDEr-D, VQA accuracy, chi, accuracy), and a table with the
    random repeats folded into their mean and spread."""

    STAGE = "knockout"
    conditions: list[str]
    metrics: dict[str, list[float | None]]
    table: list[dict[str, Any]]
    gate: str
    gate_note: str
    random_k: int
    repeats: int

    def headline(self) -> list[tuple[str, str]]:
        short = {"cider": "CIDEr", "vqa_accuracy": "VQA", "chi": "chi", "accuracy": "acc"}
        return [(r["condition"], " · ".join(f"{short[m]} {r[m]:.2f}" for m in self.metrics
                                            if r[m] is not None)) for r in self.table]


def _reduce(session: Session, store: Store) -> KnockoutResult:
    conds = conditions(session)
    metrics: dict[str, list] = {}
    for task in GENERATION_TASKS:
        if session.has_task(task):
            name = "cider" if task == "caption" else "vqa_accuracy"
            scores = _generation_metrics(session, store, task)
            metrics[name] = [scores[c.name] for c in conds]
    if session.has_task("classify"):
        metrics.update(_classify_metrics(session, store, _classify_keys(session)))
    return KnockoutResult(
        conditions=[c.name for c in conds], metrics=metrics, table=_table(conds, metrics),
        gate=session.gate, gate_note=session.gate_note, random_k=session.config.random_k,
        repeats=session.config.random_repeats)


def _table(conds: list[Condition], metrics: dict[str, list]) -> list[dict]:
    """One row per condition; the random repeats folded into their mean (and spread)."""
    rows: dict[str, dict] = {}
    for i, c in enumerate(conds):
        name = c.name if c.keys != "random" else f"{c.mode}/random"
        row = rows.setdefault(name, {"condition": name, **{m: [] for m in metrics}})
        for metric, values in metrics.items():
            row[metric].append(values[i])
    out = []
    for row in rows.values():
        flat = {"condition": row["condition"]}
        for metric in metrics:
            values = [v for v in row[metric] if v is not None]
            flat[metric] = float(np.mean(values)) if values else None
            if len(row[metric]) > 1 and values:
                flat[f"{metric}_std"] = float(np.std(values))
        out.append(flat)
    return out


@dataclass
class ProgressiveResult(Result):
    """Chi and accuracy with the gate or the image cut in the last w layers, per window."""

    STAGE = "progressive"
    windows: list[int]
    curves: dict[str, dict[str, list]]
    gate: str
    none: dict[str, float | None]
    n_layers: int

    def headline(self) -> list[tuple[str, str]]:
        rows = [(f"{name}, chi at w = {curve['w'][-1]}", f"{curve['chi'][-1]:.2f}")
                for name, curve in self.curves.items()]
        return [("no knockout: chi", f"{self.none['chi']:.2f}"), *rows]


def _progressive_reduce(session: Session, store: Store) -> ProgressiveResult:
    conds = progressive_conditions(session)
    metrics = _classify_metrics(session, store, _progressive_keys(session))
    curves: dict[str, dict] = {}
    for i, c in enumerate(conds[1:], start=1):
        curve = curves.setdefault(f"{c.mode}/{c.keys}", {"w": [], "chi": [], "accuracy": []})
        curve["w"].append(len(c.layers))
        curve["chi"].append(metrics["chi"][i])
        curve["accuracy"].append(metrics["accuracy"][i])
    return ProgressiveResult(
        windows=session.windows, curves=curves, gate=session.gate,
        none={"chi": metrics["chi"][0], "accuracy": metrics["accuracy"][0]},
        n_layers=session.model.cfg.n_layers)


def _some_task(session: Session) -> str | None:
    """Knockout reads what it has: it needs data for at least one task."""
    if any(session.has_task(t) for t in ("caption", "vqa", "classify")):
        return None
    return session.missing("caption", "vqa", "classify")


KNOCKOUT = Stage("knockout", "4. Attention knockout", _keys, _unit, _reduce, KnockoutResult,
                 skip=_some_task)
PROGRESSIVE = Stage("progressive", "5. Progressive knockout of the last layers",
                    _progressive_keys, _progressive_unit, _progressive_reduce,
                    ProgressiveResult, skip=lambda session: session.missing("classify"))
