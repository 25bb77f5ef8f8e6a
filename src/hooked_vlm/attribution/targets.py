"""Examples and the target measured on each: a number per run from the last position's logits.

Kim et al. measure the logit of the answer's first token at the last position (``"logit"``,
the default). Also here: ``"logit_diff"`` (answer minus a foil, e.g. another class name),
``"logprob"`` (the answer's log-probability), or any callable on the last-position logits
(:meth:`Target.custom`).

Example:
    >>> ex = Example(inputs, answer=first_token(model.tokenizer, " dog"), label="dog")
    >>> TARGETS["logprob"](logits_at_last, ex)          # [batch]
    >>> top = Target.custom("top_logit", lambda logits, ex: logits.max(-1).values)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jaxtyping import Float
from torch import Tensor

from hooked_vlm.settings import ConfigError


@dataclass(frozen=True)
class Example:
    """One example: HF inputs of a single sequence, the answer's (first) token id, optionally
    a foil token id (for ``"logit_diff"``) and a label (class, for consistency analyses)."""

    inputs: Mapping[str, Any]
    answer: int
    foil: int | None = None
    label: Any = None

    def __post_init__(self) -> None:
        for name in ("answer", "foil"):
            value = getattr(self, name)
            if value is None and name == "foil":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"Example {name} must be a token id (an int >= 0), got "
                                  f"{value!r}: a negative id would read the vocabulary from "
                                  "its end")


TargetFn = Callable[[Float[Tensor, "batch vocab"], Example], Float[Tensor, " batch"]]


@dataclass(frozen=True)
class Target:
    """A named function ``(last-position logits [batch, vocab], example) -> [batch]``."""

    name: str
    fn: TargetFn

    def __call__(
        self, logits: Float[Tensor, "batch vocab"], example: Example
    ) -> Float[Tensor, " batch"]:
        return self.fn(logits, example)

    @classmethod
    def custom(cls, name: str, fn: TargetFn) -> Target:
        """A user target; its ``name`` goes into the run's config (pick a distinct one)."""
        if name in TARGETS:
            raise ValueError(f"{name!r} is a built-in target name; choose another.")
        return cls(name, fn)


def _logit(logits: Tensor, ex: Example) -> Tensor:
    return logits[:, ex.answer].float()


def _logit_diff(logits: Tensor, ex: Example) -> Tensor:
    if ex.foil is None:
        raise ValueError(
            "target 'logit_diff' needs each Example's foil token id (Example(..., foil=id))."
        )
    return (logits[:, ex.answer] - logits[:, ex.foil]).float()


def _logprob(logits: Tensor, ex: Example) -> Tensor:
    return logits.float().log_softmax(-1)[:, ex.answer]


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (Target("logit", _logit), Target("logit_diff", _logit_diff),
              Target("logprob", _logprob))
}


def get_target(target: str | Target) -> Target:
    """A built-in target by name, or ``target`` itself."""
    if isinstance(target, Target):
        return target
    if target not in TARGETS:
        raise ValueError(
            f"unknown target {target!r}; built in: {', '.join(TARGETS)}; or pass "
            "Target.custom(name, fn)."
        )
    return TARGETS[target]


def first_token(tokenizer: Any, text: str) -> int:
    """The first token id of ``text`` without special tokens (the answer's first sub-word).

    Mind the leading space: SentencePiece tokenizers encode " dog" and "dog" differently; pass
    the answer as it follows the prompt.

    Example:
        >>> first_token(model.tokenizer, " dog")
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"{text!r} tokenizes to nothing.")
    return int(ids[0])


def answer_token(tokenizer: Any, prompt: str, answer: str) -> int:
    """The first token of ``answer`` as it follows ``prompt`` (a space between them unless the
    prompt ends in whitespace): the token a model answering the prompt would produce first.

    Unlike :func:`first_token` on the bare answer, this holds for every tokenizer family
    (SentencePiece's "▁dog", byte-level BPE's "Ġdog", word-level "dog"). The prompt's own
    tokens must not merge with the answer's; if they do, the error says so.

    Example:
        >>> answer_token(model.tokenizer, "USER: <image> What is it? ASSISTANT:", "dog")
    """
    sep = "" if prompt[-1:].isspace() else " "
    alone = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    joined = tokenizer(prompt + sep + answer, add_special_tokens=False)["input_ids"]
    if len(joined) <= len(alone) or joined[: len(alone)] != alone:
        raise ValueError(
            f"the answer {answer!r} does not start a token of its own after the prompt "
            f"{prompt[-40:]!r} (the tokenizer merges them, or the answer is empty); give the "
            "answer token id yourself (Example(answer=...))."
        )
    return int(joined[len(alone)])
