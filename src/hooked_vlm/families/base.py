"""What hooked-vlm knows about one Hugging Face VLM class: the :class:`Architecture` record.

Each family module (``hooked_vlm/families/<family>.py``) builds one record per HF class it
supports and registers it in :data:`hooked_vlm.families.ARCHITECTURES`. The token *layout*
logic itself is generic (:mod:`hooked_vlm.layout`); a record only says which ids play which
role, how an image's tokens form a grid, and what the forward needs on top of HF's inputs.

The helpers below read special-token ids from HF configs; several families share them.

Example:
    >>> arch = get_architecture("LlavaForConditionalGeneration")
    >>> arch.native, arch.family
    (False, 'LLaVA')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from hooked_vlm.layout import ImageGrid, Injection, LayoutError, SpecialTokens, VideoGrid
from hooked_vlm.layout.patch_grid import PatchRule

# Where the HF config lacks a role's id, hooked-vlm stores it as ``<role>_token_id`` on the
# config (tiny test models set them; loading fills them from the tokenizer and the model
# config's special-token strings, see hooked_vlm.loading.attach_token_ids).
TOKEN_ROLES = ("bos", "boi", "eoi", "row_break", "eof")


class UnsupportedArchitectureError(ValueError):
    """The HF model class has no hooked-vlm support."""


@dataclass(frozen=True)
class Architecture:
    """How one HF VLM class maps onto a TransformerLens bridge and a token layout."""

    hf_class: str
    native: bool
    special_tokens: Callable[[Any], SpecialTokens]
    # How each image's patch tokens form a grid over the picture (hooked_vlm.layout.patch_grid).
    patch_rule: Callable[[Any], PatchRule]
    # Extra HF config attributes the TL adapter needs (TL's config translation drops them).
    config_passthrough: tuple[str, ...] = ()
    # Layouts whose end-of-line tokens are image placeholders (Emu3, LLaVA-NeXT's
    # image_newline): one ImageGrid per image, computed from the forward's extras.
    grid_from_inputs: Callable[[Any, dict[str, Any]], list[ImageGrid]] | None = None
    # Placeholders per image when every image has the same count (splits adjacent images).
    tokens_per_image: Callable[[Any], int | None] | None = None
    notes: str = ""
    family: str = ""  # README table group (a model config's `family:` overrides it)
    # The family's gate candidate, the EOI analogue a Narrow Gate study reads, and why
    # (markdown, shown in README's models table).
    gate: str = "`eoi`"
    # Per-layer vision-tower hooks ("" for VQ tokenizers, which have none); every pattern
    # under them is editable.
    vision_hooks: str = "vision_encoder.encoder_layers.{l}"
    # The TransformerLens adapter key for a config (default: the HF class name).
    tl_adapter: Callable[[Any], str] | None = None
    # Completes forward kwargs HF needs but HookedVLM cannot expect callers to pass
    # (Qwen2-VL's mm_token_type_ids and 3D position ids on a cached step):
    # (hf_model, input_ids, kwargs) -> kwargs.
    prepare_forward: Callable[[Any, torch.Tensor, dict[str, Any]], dict[str, Any]] | None = None
    # Position ids of a whole prompt when they are not 0..n-1 by text order (Qwen2-VL's
    # M-RoPE gives image tokens grid positions): (hf_model, input_ids, kwargs) -> [.., batch,
    # pos]. A run that reuses a cached prefix slices them instead of guessing.
    prompt_positions: Callable[[Any, torch.Tensor, dict[str, Any]], torch.Tensor] | None = None
    # Image placeholders each image of the forward's inputs must have, in batch order:
    # (config, forward kwargs) -> [count per image]; None where the inputs do not tell
    # (InternVL's tiles per image, Idefics3), which keeps HF's batch-total check only.
    placeholders_per_image: Callable[[Any, dict[str, Any]], list[int]] | None = None
    # Token roles the family has (beyond the image placeholder): a role whose id is missing
    # is reported as unknown, not absent. (config) -> roles.
    roles: Callable[[Any], tuple[str, ...]] = lambda _config: ()
    # Bidirectional attention HF puts on top of causal attention, from the forward's inputs:
    # (config, input_ids, forward kwargs) -> block ids [batch, pos] (-1: causal) or None
    # (see TokenLayout.attention_blocks). Knockout, patching and prefix reuse respect it.
    attention_blocks: Callable[[Any, torch.Tensor, dict[str, Any]], torch.Tensor | None] | None = (
        None
    )
    # The videos of the forward's inputs, one per video in batch order, for families whose
    # frames have placeholders of their own (Qwen-VL's <|video_pad|>): (config, extras) ->
    # grids. Frames that are plain images (SmolVLM) are marked by layout(video_frames=...).
    video_grids: Callable[[Any, dict[str, Any]], list[VideoGrid]] | None = None
    # Where image features enter the residual stream outside attention (Qwen3-VL's
    # DeepStack): (config) -> injections, named in every layout.
    injections: Callable[[Any], tuple[Injection, ...]] = lambda _config: ()
    # Adds family-specific hook points to a freshly built bridge (the injections' hooks).
    install: Callable[[Any], None] | None = None
    # The processor takes one list of images per prompt (Gemma 3, Idefics3, SmolVLM): a flat
    # list would be read as every image in the first prompt.
    nested_images: bool = False
    # TransformerLens adapters this family adds, by registry key (registered on import).
    adapters: Mapping[str, type] = field(default_factory=dict)
    # Tiny random instances for tests and `hooked-vlm info tiny:NAME`: name -> builder.
    tiny: Mapping[str, Callable[..., Any]] = field(default_factory=dict)

    def tokens(self, config: Any) -> SpecialTokens:
        """The special tokens of a model with ``config``, naming roles whose id is unknown."""
        found = self.special_tokens(config)
        unknown = tuple(r for r in self.roles(config) if getattr(found, r) is None)
        return dataclasses.replace(found, unknown=unknown) if unknown else found

    def adapter_name(self, config: Any) -> str:
        """The TL adapter key that wraps a model of this class with ``config``."""
        return self.tl_adapter(config) if self.tl_adapter else self.hf_class


# ---------------------------------------------------------------------------- shared helpers


def text_config(config: Any) -> Any:
    """The decoder's config (``text_config`` of a composite config, else the config)."""
    return getattr(config, "text_config", None) or config


def token_id(config: Any, role: str, *names: str) -> int | None:
    """The first of ``names`` (then ``<role>_token_id``) set on ``config``, else ``None``."""
    for name in (*names, f"{role}_token_id"):
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    return None


def decoder_tokens(config: Any, **roles: tuple[str, ...]) -> SpecialTokens:
    """Special tokens of an encoder-based VLM: ``image_token_id`` plus ``roles`` read from
    the config (``boi=("vision_start_token_id",)`` tries that attribute, then
    ``boi_token_id``); BOS and PAD come from the text config.

    Example:
        >>> decoder_tokens(config, boi=("vision_start_token_id",), eoi=("vision_end_token_id",))
    """
    text = text_config(config)
    found = {role: token_id(config, role, *names) for role, names in roles.items()}
    return SpecialTokens(
        image=config.image_token_id,
        bos=text.bos_token_id,
        pad=text.pad_token_id,
        image_inner=tuple(getattr(config, "image_inner_token_ids", None) or ()),
        **found,
    )


def llava_tokens(config: Any) -> SpecialTokens:
    """LLaVA-family: ``<image>`` (no other role), plus Pixtral's ``[IMG_BREAK]`` rows and
    ``[IMG_END]`` EOI where the config has them."""
    return decoder_tokens(
        config, row_break=("image_break_token_id",), eoi=("image_end_token_id",)
    )


def boi_eoi_tokens(config: Any) -> SpecialTokens:
    """``boi`` + placeholders + ``eoi`` (Janus, InternVL, Qwen-VL's vision start/end)."""
    return decoder_tokens(
        config, boi=("vision_start_token_id", "image_start_token_id"),
        eoi=("vision_end_token_id", "image_end_token_id"),
    )


def needs(extras: dict[str, Any], key: str, family: str, why: str) -> Any:
    """``extras[key]``, or a :class:`LayoutError` saying why the layout needs it."""
    value = extras.get(key)
    if value is None:
        raise LayoutError(
            f"{family}'s token layout needs `{key}` ({why}). Pass {key}=... as the processor "
            "returns it, or use model.prepare(images, prompts)."
        )
    return value


def n_images(extras: dict[str, Any]) -> int:
    """Images in a forward whose ``pixel_values`` are batch-first, one image per row."""
    return int(extras["pixel_values"].shape[0])


def roles(*names: str) -> Callable[[Any], tuple[str, ...]]:
    """A ``roles`` callable naming the same roles for every config."""
    return lambda _config: names


def fixed(name: str) -> Callable[[Any], str]:
    """A ``tl_adapter`` callable naming the same adapter for every config."""
    return lambda _config: name


def grid_placeholders(
    grids: Callable[[Any, dict[str, Any]], list[ImageGrid]],
) -> Callable[[Any, dict[str, Any]], list[int]]:
    """``placeholders_per_image`` of a family whose images are :class:`ImageGrid` rows."""
    return lambda config, extras: [g.n_tokens for g in grids(config, extras)]

