"""Training sequences: synthetic examples -> conversations -> padded token batches.

Tasks (the prompt templates come from the model config, so training and ``HookedVLM.prepare``
build the same tokens):

- ``classify``: the classify prompt -> the main object's shape name;
- ``vqa``: the vqa prompt with a question of a random type (:func:`synthetic.ask`) -> answer;
- ``caption``: the caption prompt -> one of the three captions;
- ``generate`` (native models only): the generation prompt with a caption -> BOI, the 64 VQ
  code tokens of the image, EOI. This is the image-generation half of a native model.
- ``pretrain`` (native models only): the image alone, then one of its captions, the loss on
  every caption token: interleaved image->text pretraining data as Chameleon and Emu3 see it.
  The first caption word is predicted at the EOI position itself.

An image row is a conversation, as in LLaVA's instruction data: the first turn is a task's
prompt exactly as at inference (the image, then the question), later turns repeat the
template without the image and ask about the same image. Turn order is random, so each task
comes first equally often. This supervises several answers per 64 image tokens. A
``generate`` or ``pretrain`` row is a single turn. Every answer ends with ``</s>``; labels are
``-100`` on prompt and padding positions, so the loss covers answers only (image codes included
for ``generate``). With ``BatchSpec.image_modelling`` the image's own codes (and its EOI) are
targets too wherever an image is read (next-code prediction, "image modelling").

Image prompts go through the real processor (image placeholders expanded, pixels
normalised). For tiny-native the placeholders are then replaced by the image's VQ code tokens,
exactly what ``ChameleonModel.get_image_features`` scatters into the embeddings, so training
needs no pixels (the frozen VQ encoder ran once per image beforehand).

Example:
    >>> batch = make_batch(spec, rows, [("classify", "vqa"), ("generate",)], rng, [0, 1])
    >>> batch["input_ids"].shape, batch["labels"].shape
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hooked_vlm.data import synthetic
from hooked_vlm.model_configs import ModelConfig

TASKS = ("classify", "vqa", "caption", "generate", "pretrain")
SINGLE_TURN = ("generate", "pretrain")  # tasks that are a whole row on their own
IGNORE = -100


@dataclass
class BatchSpec:
    """What turns examples into token batches for one model."""

    processor: Any
    model_config: ModelConfig
    codes: Tensor | None = None  # [n_train, 64] VQ code token ids (native models), by row index
    image_modelling: bool = False  # the image codes and EOI of image prompts are targets too

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer


def conversation(
    spec: BatchSpec, turns: Sequence[str], scene: synthetic.Scene, rng: np.random.Generator
) -> list[tuple[str, str]]:
    """(prompt, answer) per turn; only the first prompt holds the image. ``vqa`` turns ask
    questions of distinct types. A ``generate`` turn has the answer "" (its target is the
    image's codes); a ``pretrain`` turn's prompt is the image alone."""
    cfg = spec.model_config
    qtypes = iter(rng.permutation(synthetic.QUESTION_TYPES))
    out = []
    for k, task in enumerate(turns):
        if task == "classify":
            prompt, answer = cfg.prompt("classify"), scene.main.shape
        elif task == "vqa":
            question, answer = synthetic.ask(scene, str(next(qtypes)), int(rng.integers(2)))
            prompt = cfg.prompt("vqa", question=question)
        elif task == "caption":
            prompt, answer = cfg.prompt("caption"), synthetic.captions(scene)[int(rng.integers(3))]
        elif task in SINGLE_TURN:
            if spec.codes is None or "generation_prompt" not in cfg.extra or len(turns) > 1:
                raise ValueError(f"{cfg.name}: {task} is a single turn of a VQ-code model")
            caption = synthetic.captions(scene)[int(rng.integers(3))]
            if task == "generate":
                prompt, answer = cfg.extra["generation_prompt"].format(caption=caption), ""
            else:
                prompt, answer = spec.processor.image_token, caption
        else:
            raise KeyError(f"unknown task {task!r}; known: {TASKS}")
        if k > 0:
            prompt = " ".join(prompt.replace(spec.processor.image_token, " ").split())
        out.append((prompt, answer))
    return out


def make_batch(
    spec: BatchSpec,
    rows: Sequence[dict[str, Any]],
    turns: Sequence[Sequence[str]],
    rng: np.random.Generator,
    indices: Sequence[int],
) -> dict[str, Tensor]:
    """A right-padded batch: ``input_ids``, ``attention_mask``, ``labels`` (+ ``pixel_values``
    for encoder models). ``rows`` are dataset rows, ``indices`` their row numbers (to look up
    VQ codes), ``turns[i]`` the tasks of row ``i`` in order."""
    tok = spec.tokenizer
    talks = [conversation(spec, t, synthetic.Scene.from_json(row["objects"]), rng)
             for t, row in zip(turns, rows, strict=True)]
    with_image = [i for i, t in enumerate(turns) if t[0] != "generate"]
    first = _image_prompts(spec, [rows[i]["image"] for i in with_image],
                           [talks[i][0][0] for i in with_image])
    seqs: list[list[int]] = []
    labels: list[list[int]] = []
    for i, talk in enumerate(talks):
        seq: list[int] = []
        lab: list[int] = []
        for k, (prompt, answer) in enumerate(talk):
            if k > 0:
                ids = _word_ids(tok, prompt)
            elif i in with_image:
                ids = first["ids"][with_image.index(i)]
                if spec.codes is not None:  # placeholders -> this image's VQ code tokens
                    ids = _fill_codes(ids, spec.codes[indices[i]].tolist(), spec.processor)
            else:
                ids = tok(prompt)["input_ids"]
            if turns[i][k] == "generate":
                codes = spec.codes[indices[i]].tolist()
                target = [_id(tok, "<racm3:break>"), *codes, _id(tok, "<eoss>"), tok.eos_token_id]
            else:
                target = [*_word_ids(tok, answer), tok.eos_token_id]
            seq += [*ids, *target]
            lab += _prompt_labels(spec, ids, read_image=k == 0 and i in with_image) + target
        seqs.append(seq)
        labels.append(lab)
    batch = _pad(seqs, labels, tok.pad_token_id)
    if spec.codes is None and with_image:
        batch["pixel_values"] = first["pixel_values"]
    return batch


def _prompt_labels(spec: BatchSpec, ids: list[int], read_image: bool) -> list[int]:
    """Labels of a prompt: ignored, except (``spec.image_modelling``) the image's codes and its
    EOI where the prompt holds an image: each code is predicted from the ones before it."""
    labels = [IGNORE] * len(ids)
    if spec.image_modelling and read_image:
        boi, eoi = _id(spec.tokenizer, "<racm3:break>"), _id(spec.tokenizer, "<eoss>")
        start, stop = ids.index(boi), ids.index(eoi)
        labels[start + 1:stop + 1] = ids[start + 1:stop + 1]
    return labels


def _image_prompts(spec: BatchSpec, images: list[Any], prompts: list[str]) -> dict[str, Any]:
    """Processor outputs for image prompts, as unpadded id lists (+ ``pixel_values``)."""
    if not prompts:
        return {"ids": []}
    out = spec.processor(
        images=images, text=prompts, return_tensors="pt", padding=True,
        **spec.model_config.processor_kwargs,
    )
    ids = [row[mask.bool()].tolist() for row, mask in zip(out["input_ids"],
                                                          out["attention_mask"], strict=True)]
    return {"ids": ids, "pixel_values": out["pixel_values"]}


def _fill_codes(ids: list[int], codes: list[int], processor: Any) -> list[int]:
    slots = [p for p, t in enumerate(ids) if t == processor.image_token_id]
    if len(slots) != len(codes):
        raise ValueError(f"{len(slots)} image placeholders for {len(codes)} VQ codes")
    out = list(ids)
    for p, code in zip(slots, codes, strict=True):
        out[p] = code
    return out


def _word_ids(tok: Any, text: str) -> list[int]:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    unknown = [w for w, i in zip(text.split(), ids, strict=True) if i == tok.unk_token_id]
    if unknown:
        raise ValueError(f"words {unknown} are not in the vocabulary (see training/vocab.py)")
    return ids


def _id(tok: Any, token: str) -> int:
    return tok.convert_tokens_to_ids(token)


def _pad(seqs: list[list[int]], labels: list[list[int]], pad_id: int) -> dict[str, Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    lab = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, y) in enumerate(zip(seqs, labels, strict=True)):
        ids[i, : len(s)] = torch.tensor(s)
        lab[i, : len(y)] = torch.tensor(y)
        mask[i, : len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}
