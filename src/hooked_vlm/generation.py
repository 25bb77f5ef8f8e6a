"""Next-token choice for :meth:`HookedVLM.generate`: greedy, or seeded sampling with HF's
own logits warpers (temperature, top-k, top-p), and a refusal of options it does not honour.

Example:
    >>> sampler = Sampler.build(do_sample=True, temperature=0.7, top_k=None, top_p=0.9,
    ...                         seed=0, device=torch.device("cpu"))
    >>> next_ids = sampler(ids_so_far, last_logits)        # [batch]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformers import GenerationConfig
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from hooked_vlm.validation import InputError

SUPPORTED = (
    "max_new_tokens", "fwd_hooks", "eos_token_id", "pad_token_id", "do_sample", "temperature",
    "top_k", "top_p", "seed",
)


def check_generation_options(kwargs: Mapping[str, Any]) -> None:
    """Refuse HF generation options that :meth:`HookedVLM.generate` does not implement
    (they would be ignored silently); other unknown keys are left to the input check.

    Example:
        >>> check_generation_options({"num_beams": 4})
        Traceback (most recent call last):
        InputError: generation option 'num_beams' is not implemented ...
    """
    options = set(GenerationConfig().to_dict())
    for key in kwargs:
        if key in options:
            raise InputError(
                f"generation option {key!r} is not implemented by HookedVLM.generate, which "
                f"supports {', '.join(SUPPORTED)}. For other strategies use "
                "model.hf_model.generate (hooks registered with model.hooks() still fire there "
                "on bridged layers, but state.query_start is not maintained)."
            )


@dataclass
class Sampler:
    """Chooses the next token from the last position's logits."""

    warpers: LogitsProcessorList | None  # None: greedy
    generator: torch.Generator | None = None

    @classmethod
    def build(
        cls,
        do_sample: bool,
        temperature: float | None,
        top_k: int | None,
        top_p: float | None,
        seed: int | None,
        device: torch.device,
    ) -> Sampler:
        """Check the options and build the sampler; sampling options need ``do_sample``."""
        given = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed}
        given = {k: v for k, v in given.items() if v is not None}
        if not do_sample:
            if given:
                raise InputError(
                    f"{', '.join(given)} given with do_sample=False: greedy decoding would "
                    "ignore them. Pass do_sample=True to sample, or drop them."
                )
            return cls(None)
        warpers = LogitsProcessorList()
        if temperature is not None:
            if not temperature > 0:
                raise InputError(f"temperature must be > 0, got {temperature}.")
            warpers.append(TemperatureLogitsWarper(float(temperature)))
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
                raise InputError(f"top_k must be a positive int, got {top_k!r}.")
            warpers.append(TopKLogitsWarper(top_k))
        if top_p is not None:
            if not 0 < top_p <= 1:
                raise InputError(f"top_p must be in (0, 1], got {top_p}.")
            warpers.append(TopPLogitsWarper(float(top_p)))
        generator = None
        if seed is not None:
            generator = torch.Generator(device=device).manual_seed(int(seed))
        return cls(warpers, generator)

    def __call__(
        self, ids: Int[Tensor, "batch pos"], logits: Float[Tensor, "batch vocab"]
    ) -> Int[Tensor, " batch"]:
        if self.warpers is None:
            return logits.argmax(-1)
        scores = self.warpers(ids, logits.float())
        probs = torch.softmax(scores, dim=-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(1)
