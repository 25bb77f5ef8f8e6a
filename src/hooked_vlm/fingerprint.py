"""What a result was computed with: cheap fingerprints of a model's weights and processor.

Every store and results directory records these next to its config (DESIGN.md: "a result knows
what made it"), so reopening it with another checkpoint of the same architecture (a fine-tuned
model, say) is refused instead of silently reusing the old model's numbers.

- **weights**: per parameter, its name, dtype and shape and 64 of its values spread evenly over
  it (gathered where the parameter lives, no arithmetic: the same bytes on any device), hashed
  with BLAKE2b. A fine-tune changes nearly every value of each matrix it touches (a merged LoRA
  delta ``B @ A`` is dense), so any touched parameter changes the fingerprint; reading 64
  values per parameter costs milliseconds even for a 7B model (hashing every byte would take
  a minute).
- **processor**: the tokenizer's full specification (vocabulary, merges, normalisation; its
  padding and truncation settings left out: they are per-call choices) and the image
  processor's settings.

Example:
    >>> model_fingerprint(HookedVLM.from_pretrained("tiny-llava"))
    {'weights': 'blake2b:3f0c…', 'processor': 'blake2b:a81e…'}
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from hooked_vlm.model import HookedVLM

SAMPLES = 64  # values read per parameter


def weights_fingerprint(module: torch.nn.Module) -> str:
    """BLAKE2b of every parameter's name, dtype, shape and ``SAMPLES`` evenly spaced values.

    Example:
        >>> weights_fingerprint(model.hf_model)
        'blake2b:…'
    """
    digest = hashlib.blake2b(digest_size=16)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.device.type == "meta":
                raise ValueError(f"parameter {name} has no values (meta device): load the "
                                 "weights to fingerprint them")
            flat = param.detach().reshape(-1)
            index = torch.linspace(0, flat.numel() - 1, min(SAMPLES, flat.numel()),
                                   device=flat.device).round().long()
            values = flat[index].cpu().contiguous()
            digest.update(f"{name}|{values.dtype}|{tuple(param.shape)}|".encode())
            digest.update(values.view(torch.uint8).numpy().tobytes())
    return "blake2b:" + digest.hexdigest()


def processor_fingerprint(processor: Any) -> str | None:
    """BLAKE2b of the tokenizer's specification and the image processor's settings (None
    without a processor).

    Example:
        >>> processor_fingerprint(model.processor)
        'blake2b:…'
    """
    if processor is None:
        return None
    tokenizer = getattr(processor, "tokenizer", processor)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec: Any = json.loads(backend.to_str())
        spec.pop("padding", None)
        spec.pop("truncation", None)
    else:
        spec = sorted(tokenizer.get_vocab().items())
    parts: dict[str, Any] = {"tokenizer": spec,
                             "special": sorted(map(str, getattr(tokenizer, "all_special_tokens",
                                                                [])))}
    images = getattr(processor, "image_processor", None)
    if images is not None:
        parts["images"] = {k: v for k, v in images.to_dict().items() if not k.startswith("_")}
    text = json.dumps(parts, sort_keys=True, default=str)
    return "blake2b:" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def model_fingerprint(model: HookedVLM) -> dict[str, str | None]:
    """``{"weights": ..., "processor": ...}`` of a loaded :class:`~hooked_vlm.HookedVLM`."""
    return {"weights": weights_fingerprint(model.hf_model),
            "processor": processor_fingerprint(model.processor)}
