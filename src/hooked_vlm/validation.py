"""Checks that turn silently wrong runs into clear errors: inputs, image placeholders, hooks.

Every check says what was wrong, what is accepted and where to look. They run on the way into a
forward, so a failing call leaves the model exactly as it was (no hook attached, no cache
touched).

Example:
    >>> check_input_names({"pixel_value": x}, forward_input_names(model.hf_model), "Llava")
    Traceback (most recent call last):
    InputError: unknown input 'pixel_value' ... Did you mean 'pixel_values'? ...
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from hooked_vlm.compat import get_cache

if TYPE_CHECKING:
    from hooked_vlm.model import HookedVLM

# Inputs HookedVLM manages itself or cannot honour, with the reason given to the user.
REFUSED_INPUTS = {
    "inputs_embeds": "HookedVLM runs from input_ids (the token layout is read from them); to feed "
    "embeddings, hook blocks.0.hook_resid_pre and return yours",
    "use_cache": "HookedVLM manages the KV cache: pass cache= (or past_key_values=) to continue "
    "one, or use generate() / PrefixCache",
    "return_dict": "HookedVLM returns logits (and an ActivationCache from run_with_cache)",
}


class InputError(ValueError):
    """An input the model does not take, or an option that would be silently ignored."""


class ImageInputError(ValueError):
    """Image placeholders and image inputs do not go together (e.g. placeholders, no pixels)."""


class ImageTokenMismatchError(ImageInputError):
    """The prompt's image placeholders do not match the number of image features."""


class HookOutputError(TypeError):
    """A hook function returned something that cannot replace the activation it was given."""


def forward_input_names(hf_model: torch.nn.Module) -> frozenset[str]:
    """The keyword inputs ``hf_model.forward`` names (its ``**kwargs`` excluded), plus every
    name of the KV cache.

    Example:
        >>> "pixel_values" in forward_input_names(model.hf_model)
        True
    """
    params = inspect.signature(hf_model.forward).parameters.values()
    named = {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return frozenset(named | {"cache", "past_key_values"})


def check_input_names(
    inputs: Mapping[str, Any], accepted: Collection[str], model_name: str
) -> None:
    """Raise :class:`InputError` for any key of ``inputs`` the model does not take."""
    for key in inputs:
        if key in REFUSED_INPUTS:
            raise InputError(f"input {key!r} is not accepted: {REFUSED_INPUTS[key]}.")
        if key in accepted:
            continue
        close = difflib.get_close_matches(key, list(accepted), n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        usable = sorted(set(accepted) - set(REFUSED_INPUTS) - {"input_ids"})
        raise InputError(
            f"unknown input {key!r} for {model_name}.{hint} It takes input_ids and "
            f"{', '.join(usable)} (the keyword arguments of its HF forward); an unknown key "
            "would be ignored silently, so it is refused."
        )


def _runs_of(tokens: Tensor, real: Tensor) -> list[int]:
    """Lengths of the runs of ``tokens & real`` in reading order (example by example): the
    per-image placeholder counts whenever no two images' placeholders touch. A few tensor
    operations, where the layout that settles every other case costs a millisecond per call."""
    flags = torch.nn.functional.pad((tokens & real).to(torch.int8), (1, 1))
    step = flags[:, 1:] - flags[:, :-1]
    starts, ends = (step == 1).nonzero(), (step == -1).nonzero()
    return (ends[:, 1] - starts[:, 1]).tolist()


def check_image_inputs(model: HookedVLM, ids: Tensor, kw: Mapping[str, Any]) -> None:
    """Refuse placeholders without pixels, and per-image placeholder counts that differ from
    what each image yields (HF checks only the batch total: features would shift between
    examples whenever the totals agree).

    Runs only where the check is decidable: a continuation of a KV cache (a decode step, a
    suffix on a reused prefix) carries no pixels by design, and families whose per-image
    feature count the inputs do not give (``Architecture.placeholders_per_image`` is ``None``:
    InternVL tiles, Idefics3) keep HF's batch-total check.
    """
    arch, config = model.architecture, model.hf_model.config
    image_id = arch.special_tokens(config).image
    mask = kw.get("attention_mask")
    # with a cache the mask also covers the cached positions: the last columns are the ids'
    real = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask[:, -ids.shape[1] :]
    real = real.bool()
    per_example = ((ids == image_id) & real).sum(1).tolist()
    cache = get_cache(kw)
    continuing = cache is not None and cache.get_seq_length() > 0
    if kw.get("pixel_values") is None:
        if any(per_example) and not continuing:
            raise ImageInputError(
                f"the prompts hold {per_example} image placeholder tokens (id {image_id}) per "
                "example but no pixel_values were given, so the placeholders would run as "
                "plain text tokens. Pass the images (model.prepare(images, prompts) builds "
                "both), or remove the placeholders for a text-only run."
            )
        return
    if continuing or arch.placeholders_per_image is None:
        return
    expected = arch.placeholders_per_image(config, dict(kw))
    if _runs_of(ids == image_id, real) == expected:
        return  # each image's placeholders form one run of its size: nothing to look up
    from hooked_vlm.layout import LayoutError

    try:
        layout = model.layout(ids, mask, **{k: v for k, v in kw.items() if k != "attention_mask"})
    except LayoutError as err:
        raise ImageTokenMismatchError(
            f"the image placeholder tokens (id {image_id}) do not fit the images given: {err} "
            f"{_WHERE}"
        ) from None
    found = [  # still images only: video frames have inputs of their own
        (b, k, int((ids[b, s.start : s.end + 1] == image_id).sum()))
        for b, spans in enumerate(layout.spans)
        for k, s in enumerate(spans)
        if s.frame is None
    ]
    if len(found) != len(expected):
        raise ImageTokenMismatchError(
            f"the prompts hold {per_example} image placeholder tokens (id {image_id}) per "
            f"example, in {layout.n_images()} runs, but the {len(expected)} image(s) given "
            f"yield {expected} features each. {_WHERE}"
        )
    for (b, k, count), want in zip(found, expected, strict=True):
        if count != want:
            raise ImageTokenMismatchError(
                f"example {b}'s image {k} holds {count} image placeholder tokens (id "
                f"{image_id}), but the image given for it yields {want} features (images are "
                f"matched to placeholders in order; per-image counts: {expected}). Without "
                f"this check another example's features would fill its positions. {_WHERE}"
            )


_WHERE = (
    "Each image must be expanded to exactly as many placeholders as the vision side produces "
    "features: build inputs with model.prepare(images, prompts) (the processor expands "
    "<image>), or see README 'Token layouts' for each model's count."
)


def checked_hook(fn: Callable[..., Any], label: str | None = None) -> Callable[..., Any]:
    """``fn`` wrapped so that a wrong return value raises :class:`HookOutputError` naming the
    hook point and the expected shape and dtype (instead of failing deep in torch, or being
    cast silently).

    A hook may return ``None`` (observe, or edit in place) or a tensor of the activation's exact
    shape, dtype and device. ``label`` is the hook name as the user gave it (an alias such as
    ``hook_resid_post`` fires as TL's canonical ``hook_out``).

    Example:
        >>> model.run_with_hooks(inputs, fwd_hooks=[("blocks.0.hook_resid_post", checked_hook(f))])
    """

    def hook_fn(tensor: Any, hook: Any) -> Any:
        out = fn(tensor, hook=hook)
        if out is None or not isinstance(tensor, Tensor):
            return out
        same = (
            isinstance(out, Tensor)
            and _fits(out.shape, tensor.shape, hook.name)
            and out.dtype == tensor.dtype
            and out.device == tensor.device
        )
        if not same:
            got = (
                f"a {out.dtype} tensor of shape {tuple(out.shape)} on {out.device}"
                if isinstance(out, Tensor)
                else f"a {type(out).__name__}"
            )
            raise HookOutputError(
                f"hook function {getattr(fn, '__name__', fn)!r} on {label or hook.name} "
                f"returned {got}; "
                f"it must return None (observe, or edit in place) or a {tensor.dtype} tensor "
                f"of shape {tuple(tensor.shape)} on {tensor.device}, like the activation it "
                "was given."
            )
        return out

    hook_fn.__name__ = getattr(fn, "__name__", "hook_fn")
    hook_fn.__wrapped__ = fn  # type: ignore[attr-defined]
    return hook_fn


def _fits(out: torch.Size, given: torch.Size, name: str) -> bool:
    """Same shape; an additive attention mask (``hook_attn_mask``, ``[batch, 1, q, k]``) may
    also widen to one mask per head."""
    if out == given:
        return True
    return (
        name.endswith("hook_attn_mask") and len(out) == 4 and given[1] == 1
        and (out[0], out[2], out[3]) == (given[0], given[2], given[3])
    )


def check_finite(tensor: Tensor, what: str) -> Tensor:
    """Return ``tensor``; raise ``ValueError`` naming ``what`` if it holds NaN or inf.

    Example:
        >>> check_finite(vector, "steering vector")
    """
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(
            f"the {what} holds {bad} NaN/inf value(s) of {tensor.numel()}: they would spread "
            "through every later position and layer. Check how it was computed (pass "
            "check_finite=False only if you mean it)."
        )
    return tensor


def check_pos_slice(pos_slice: Any, seq_len: int) -> None:
    """Refuse positions outside a sequence of ``seq_len`` (an int or a list of ints; a slice
    is clipped by Python, as ever).

    Example:
        >>> check_pos_slice(1000, 75)
        Traceback (most recent call last):
        InputError: pos_slice 1000 is outside the 75 positions of these inputs ...
    """
    if pos_slice is None or isinstance(pos_slice, slice):
        return
    positions = [pos_slice] if isinstance(pos_slice, int) else list(pos_slice)
    bad = [p for p in positions if isinstance(p, bool) or not isinstance(p, int)
           or not -seq_len <= p < seq_len]
    if bad:
        raise InputError(f"pos_slice {bad[0]!r} is outside the {seq_len} positions of these "
                         f"inputs: give ints in -{seq_len}..{seq_len - 1}, a list of them, or a "
                         "slice")


def check_new_tokens(max_new_tokens: Any) -> None:
    """``max_new_tokens`` must be an int >= 0."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
            or max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be an int >= 0 (the tokens to generate), got "
                         f"{max_new_tokens!r}")
