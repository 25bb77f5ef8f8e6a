"""Held-out accuracy of a tiny trained model on the synthetic test split, greedy decoding.

Metrics (each in [0, 1], over ``n`` test images):

- ``classify``: the first generated word is the main object's shape (chance 1/6);
- ``vqa``: VQA accuracy, min(#matching answers / 3, 1), of the dataset's own question;
- ``vqa_<type>``: the same for a question of each type asked of every image (color 1/8,
  shape 1/6, count 1/3, position 1/4 by chance);
- ``caption_main``: the caption names the main object's colour and shape (chance 1/48);
  ``caption_background``: it names the background colour (1/3); ``caption_objects``: the set
  of "colour shape" pairs it names is exactly the image's; ``caption_cider``: CIDEr-D
  (pycocoevalcap) against the three reference captions.

Decoding uses the HF model's own ``generate`` (greedy, KV cache).

Example:
    >>> report = evaluate(model, processor, load_model_config("tiny-llava"), test_rows)
    >>> report["classify"], report["chance"]["classify"]
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from hooked_vlm.data import synthetic
from hooked_vlm.model_configs import ModelConfig

CHANCE = {
    "classify": 1 / len(synthetic.SHAPES),
    "vqa_color": 1 / len(synthetic.COLORS),
    "vqa_shape": 1 / len(synthetic.SHAPES),
    "vqa_count": 1 / 3,
    "vqa_position": 1 / len(synthetic.POSITIONS),
    "caption_main": 1 / (len(synthetic.COLORS) * len(synthetic.SHAPES)),
    "caption_background": 1 / len(synthetic.BACKGROUNDS),
}
_NUMBERS = {"one": "1", "two": "2", "three": "3"}


@torch.no_grad()
def greedy_answers(
    model: Any, processor: Any, model_config: ModelConfig, images: Sequence[Any],
    prompts: Sequence[str], max_new_tokens: int,
) -> list[str]:
    """Greedy continuations of ``prompts`` (one image each), special tokens removed."""
    batch = processor(images=list(images), text=list(prompts), return_tensors="pt",
                      padding=True, **model_config.processor_kwargs)
    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[:, batch["input_ids"].shape[1]:]
    return [t.strip() for t in processor.tokenizer.batch_decode(new, skip_special_tokens=True)]


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQAv2 accuracy min(#answers equal to the prediction / 3, 1), after normalisation
    (lower case, number words as digits, articles and punctuation dropped)."""
    pred = _normalise(prediction)
    return min(sum(_normalise(a) == pred for a in answers) / 3, 1.0)


def caption_scores(caption: str, scene: synthetic.Scene) -> dict[str, float]:
    """Key-word checks of one generated caption against its scene."""
    words = caption.split()
    named = {f"{a} {b}" for a, b in zip(words, words[1:], strict=False)
             if a in synthetic.COLORS and b in synthetic.SHAPES}
    truth = {f"{o.color} {o.shape}" for o in scene.objects}
    return {
        "caption_main": float(f"{scene.main.color} {scene.main.shape}" in named),
        "caption_background": float(scene.background in words),
        "caption_objects": float(named == truth),
    }


def evaluate(
    model: Any,
    processor: Any,
    model_config: ModelConfig,
    rows: Sequence[dict[str, Any]],
    *,
    batch_size: int = 64,
    caption_tokens: int = 24,
) -> dict[str, Any]:
    """Every metric of the module docstring on ``rows`` (synthetic test examples)."""
    scores: dict[str, list[float]] = {}
    references: dict[str, list[str]] = {}
    hypotheses: dict[str, list[str]] = {}
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        scenes = [synthetic.Scene.from_json(r["objects"]) for r in chunk]

        def answers(prompts: list[str], n_tokens: int, chunk: Sequence = chunk) -> list[str]:
            images = [r["image"] for r in chunk]
            return greedy_answers(model, processor, model_config, images, prompts, n_tokens)

        classify = answers([model_config.prompt("classify")] * len(chunk), 2)
        scores.setdefault("classify", []).extend(
            float(_first(p) == r["label"]) for p, r in zip(classify, chunk, strict=True))
        vqa = answers([model_config.prompt("vqa", question=r["question"]) for r in chunk], 3)
        scores.setdefault("vqa", []).extend(
            vqa_accuracy(p, r["answers"]) for p, r in zip(vqa, chunk, strict=True))
        for qtype in synthetic.QUESTION_TYPES:
            qa = [synthetic.ask(s, qtype, variant=(start + i) % 2) for i, s in enumerate(scenes)]
            preds = answers([model_config.prompt("vqa", question=q) for q, _ in qa], 3)
            scores.setdefault(f"vqa_{qtype}", []).extend(
                vqa_accuracy(p, synthetic.answer_variants(qtype, a))
                for p, (_, a) in zip(preds, qa, strict=True))
        captions = answers([model_config.prompt("caption")] * len(chunk), caption_tokens)
        for caption, row, scene in zip(captions, chunk, scenes, strict=True):
            for key, value in caption_scores(caption, scene).items():
                scores.setdefault(key, []).append(value)
            references[row["id"]], hypotheses[row["id"]] = list(row["captions"]), [caption]
    report: dict[str, Any] = {"n": len(rows)}
    report.update({k: sum(v) / len(v) for k, v in scores.items()})
    report["caption_cider"] = _cider(references, hypotheses)
    report["chance"] = CHANCE
    report["majority"] = _majority(rows)
    report["examples"] = [
        {"id": i, "generated": hypotheses[i][0], "reference": references[i][0]}
        for i in list(hypotheses)[:5]
    ]
    return report


def _cider(references: dict[str, list[str]], hypotheses: dict[str, list[str]]) -> float:
    from pycocoevalcap.cider.cider import Cider

    score, _ = Cider().compute_score(references, hypotheses)
    return float(score)


def _majority(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Accuracy of always giving the most frequent answer, per question type."""
    scenes = [synthetic.Scene.from_json(r["objects"]) for r in rows]
    out = {"classify": Counter(r["label"] for r in rows).most_common(1)[0][1] / len(rows)}
    for qtype in synthetic.QUESTION_TYPES:
        answers = Counter(synthetic.ask(s, qtype)[1] for s in scenes)
        out[f"vqa_{qtype}"] = answers.most_common(1)[0][1] / len(rows)
    return out


def _normalise(answer: str) -> str:
    words = re.sub(r"[^\w\s]", " ", answer.lower()).split()
    return " ".join(_NUMBERS.get(w, w) for w in words if w not in ("a", "an", "the"))


def _first(text: str) -> str:
    return text.split()[0] if text.split() else ""
