"""What hooked-vlm knows about each supported Hugging Face VLM class.

One :class:`Architecture` per HF class: the TransformerLens adapter that wraps it, whether the
model is *native* multimodal (images as discrete tokens in the decoder's own vocabulary), and how
to read its special token ids from the HF config. The token *layout* logic itself is generic
(:mod:`hooked_vlm.layout`); this module only says which ids play which role.

Example:
    >>> arch = get_architecture("LlavaForConditionalGeneration")
    >>> arch.native
    False
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from hooked_vlm.compat import get_cache, without_cache
from hooked_vlm.layout import ImageGrid, LayoutError, SpecialTokens
from hooked_vlm.layout.patch_grid import (
    AnyresPatches,
    MergedPatches,
    PatchRule,
    RowPatches,
    SquarePatches,
    TiledPatches,
)

# Where the HF config lacks a role's id, hooked-vlm stores it as ``<role>_token_id`` on the
# config (tiny test models set them; loading fills them from the tokenizer and the model
# config's special-token strings, see hooked_vlm.loading.attach_token_ids).
TOKEN_ROLES = ("bos", "boi", "eoi", "row_break", "eof")


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
    tokens_per_image: Callable[[Any], int] | None = None
    notes: str = ""
    family: str = ""  # README table group (a model config's `family:` overrides it)
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

    def tokens(self, config: Any) -> SpecialTokens:
        """The special tokens of a model with ``config``, naming roles whose id is unknown."""
        found = self.special_tokens(config)
        unknown = tuple(r for r in self.roles(config) if getattr(found, r) is None)
        return dataclasses.replace(found, unknown=unknown) if unknown else found

    def adapter_name(self, config: Any) -> str:
        """The TL adapter key that wraps a model of this class with ``config``."""
        return self.tl_adapter(config) if self.tl_adapter else self.hf_class


def _text_config(config: Any) -> Any:
    return getattr(config, "text_config", None) or config


def _token_id(config: Any, role: str, *names: str) -> int | None:
    """The first of ``names`` (then ``<role>_token_id``) set on ``config``, else ``None``."""
    for name in (*names, f"{role}_token_id"):
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    return None


def _decoder_tokens(config: Any, **roles: tuple[str, ...]) -> SpecialTokens:
    """Special tokens of an encoder-based VLM: ``image_token_id`` plus ``roles`` read from
    the config (``boi=("vision_start_token_id",)`` tries that attribute, then
    ``boi_token_id``); BOS and PAD come from the text config."""
    text = _text_config(config)
    found = {role: _token_id(config, role, *names) for role, names in roles.items()}
    return SpecialTokens(
        image=config.image_token_id,
        bos=text.bos_token_id,
        pad=text.pad_token_id,
        image_inner=tuple(getattr(config, "image_inner_token_ids", None) or ()),
        **found,
    )


def _llava_tokens(config: Any) -> SpecialTokens:
    """LLaVA-1.5: ``<image>`` only. Pixtral tower: ``[IMG_BREAK]`` rows, ``[IMG_END]`` EOI."""
    return _decoder_tokens(
        config, row_break=("image_break_token_id",), eoi=("image_end_token_id",)
    )


def _boi_eoi_tokens(config: Any) -> SpecialTokens:
    """``boi`` + placeholders + ``eoi`` (Janus, InternVL, Qwen2-VL's vision start/end)."""
    return _decoder_tokens(
        config, boi=("vision_start_token_id", "image_start_token_id"),
        eoi=("vision_end_token_id", "image_end_token_id"),
    )


def _idefics3_tokens(config: Any) -> SpecialTokens:
    """``<image>`` runs with in-span tile tags; ``\\n`` between tile rows as row breaks."""
    return _decoder_tokens(config, row_break=())


def _is_pixtral(config: Any) -> bool:
    return getattr(getattr(config, "vision_config", None), "model_type", "") == "pixtral"


def _fixed(name: str) -> Callable[[Any], str]:
    return lambda _config: name


def _llava_adapter(config: Any) -> str:
    return "hooked_vlm.Pixtral" if _is_pixtral(config) else "hooked_vlm.Llava"


def _llava_tokens_per_image(config: Any) -> int | None:
    if _is_pixtral(config):  # size-dependent rows of [IMG]: split by [IMG_END] instead
        return None
    vision = config.vision_config
    n = (vision.image_size // vision.patch_size) ** 2
    return n + (1 if config.vision_feature_select_strategy == "full" else 0)


def _vocab(config: Any, name: str) -> int | None:
    return (config.vocabulary_map or {}).get(name)


def _chameleon_tokens(config: Any) -> SpecialTokens:
    return SpecialTokens(
        image=_vocab(config, "<image>"),
        bos=config.bos_token_id,
        boi=_vocab(config, "<racm3:break>"),
        eoi=_vocab(config, "<eoss>"),
        pad=config.pad_token_id,
    )


def _emu3_tokens(config: Any) -> SpecialTokens:
    text = _text_config(config)
    return SpecialTokens(
        image=_vocab(config, "<image>"),
        bos=text.bos_token_id,
        boi=_vocab(config, "<|image start|>"),
        eoi=_vocab(config, "<|image end|>"),
        eof=_vocab(config, "<|extra_201|>"),
        pad=text.pad_token_id,
    )


def _needs(extras: dict[str, Any], key: str, family: str, why: str) -> Any:
    value = extras.get(key)
    if value is None:
        raise LayoutError(
            f"{family}'s token layout needs `{key}` ({why}). Pass {key}=... as the processor "
            "returns it, or use model.prepare(images, prompts)."
        )
    return value


def _emu3_grid(config: Any, extras: dict[str, Any]) -> list[ImageGrid]:
    why = "one (height, width) per image, to find the end-of-line token closing each row"
    sizes = _needs(extras, "image_sizes", "Emu3", why)
    factor = 2 ** (len(config.vq_config.channel_multiplier) - 1)
    return [ImageGrid.rows(int(h) // factor, int(w) // factor) for h, w in sizes.tolist()]


def _anyres_grid(config: Any, extras: dict[str, Any]) -> list[ImageGrid]:
    """LLaVA-NeXT / OneVision: base-image features, then the unpadded high-res grid row by
    row, each row closed by the learned ``image_newline`` (an ``<image>`` placeholder too).

    Mirrors HF's ``pack_image_features``: anyres tile grid, ``unpad_image``, OneVision's
    ``anyres_max_N`` down-scaling; images of multi-image prompts (``batch_num_images`` > 1,
    OneVision) are one tile plus one newline.
    """
    from transformers.models.llava_next.modeling_llava_next import (
        get_anyres_image_grid_shape,
        unpad_image,
    )

    why = "one (height, width) per image, to find the image_newline closing each row"
    sizes = _needs(extras, "image_sizes", config.model_type, why).tolist()
    tile = config.vision_config.image_size
    side = tile // config.vision_config.patch_size
    counts = extras.get("batch_num_images")
    tiled = [n == 1 for n in counts.tolist() for _ in range(n)] if counts is not None else None
    max_tiles = getattr(config, "vision_aspect_ratio", None)
    grids = []
    for i, size in enumerate(sizes):
        if tiled is not None and not tiled[i]:
            grids.append(ImageGrid(side * side + 1, (side * side,)))
            continue
        tiles_h, tiles_w = get_anyres_image_grid_shape(size, config.image_grid_pinpoints, tile)
        rows, cols = unpad_image(torch.empty(0, tiles_h * side, tiles_w * side), size).shape[1:]
        if max_tiles is not None:
            ratio = math.sqrt(rows * cols / (int(max_tiles.removeprefix("anyres_max_")) * side**2))
            if ratio > 1.1:
                rows, cols = int(rows // ratio), int(cols // ratio)
        grids.append(ImageGrid.rows(rows, cols, offset=side * side))
    return grids


def _llava_patches(config: Any) -> PatchRule:
    """Pixtral tower: rows split by [IMG_BREAK]; CLIP/SigLIP: a square after any CLS."""
    if _is_pixtral(config):
        return RowPatches()
    vision = config.vision_config
    side = vision.image_size // vision.patch_size
    return SquarePatches(side, leading=_llava_tokens_per_image(config) - side**2)


def _anyres_patches(config: Any) -> PatchRule:
    return AnyresPatches(config.vision_config.image_size // config.vision_config.patch_size)


def _square_side(n_tokens: int, what: str) -> int:
    side = math.isqrt(n_tokens)
    if side * side != n_tokens:
        raise LayoutError(f"{what} is {n_tokens} tokens, not a square grid")
    return side


def _chameleon_patches(config: Any) -> PatchRule:
    """VQ codes of the ``resolution`` px crop, downsampled once per level but the last."""
    vq = config.vq_config
    return SquarePatches(vq.resolution // 2 ** (len(vq.channel_multiplier) - 1))


def _janus_patches(config: Any) -> PatchRule:
    side = _square_side(config.vision_config.num_image_tokens, "Janus's num_image_tokens")
    return SquarePatches(side)


def _internvl_patches(config: Any) -> PatchRule:
    side = _square_side(config.image_seq_length, "InternVL's image_seq_length (per tile)")
    return TiledPatches(side, overview="thumbnail", rows_from_eol=False)


def _idefics3_patches(config: Any) -> PatchRule:
    vision = config.vision_config
    side = vision.image_size // vision.patch_size // config.scale_factor
    return TiledPatches(side, overview="global", rows_from_eol=True)


def _qwen2_vl_positions(hf_model: Any, ids: torch.Tensor, kw: dict[str, Any]) -> torch.Tensor:
    """Qwen2-VL's 3-D M-RoPE positions ``[3, batch, pos]`` of a whole prompt, as HF computes
    them on the first forward (image tokens at their grid positions)."""
    kw = _qwen2_vl_forward(hf_model, ids, without_cache(kw))
    positions, _ = hf_model.model.get_rope_index(
        ids, mm_token_type_ids=kw.get("mm_token_type_ids"), image_grid_thw=kw.get("image_grid_thw"),
        video_grid_thw=kw.get("video_grid_thw"), attention_mask=kw.get("attention_mask"),
    )
    return positions


def _qwen2_vl_forward(hf_model: Any, ids: torch.Tensor, kw: dict[str, Any]) -> dict[str, Any]:
    """Qwen2-VL: ``mm_token_type_ids`` from the ids when missing; on a cached step (a suffix
    after a prefix, a generation step) the 3D M-RoPE positions HF's ``generate`` would pass:
    text positions ``+ rope_deltas`` of the prefix, for the three streams."""
    config = hf_model.config
    if "mm_token_type_ids" not in kw and kw.get("image_grid_thw") is not None:
        video = getattr(config, "video_token_id", None)
        kw = {**kw, "mm_token_type_ids": (ids == config.image_token_id).long()
              + 2 * (ids == video).long()}
    past = get_cache(kw)
    deltas = hf_model.model.rope_deltas
    if past is None or "position_ids" in kw or deltas is None or past.get_seq_length() == 0:
        return kw
    start, n = past.get_seq_length(), ids.shape[1]
    mask = kw.get("attention_mask")
    if mask is not None and mask.shape[1] == start + n:
        text = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -n:]
    else:
        text = torch.arange(start, start + n, device=ids.device).expand(ids.shape[0], -1)
    return {**kw, "position_ids": (text + deltas.to(ids.device)).expand(3, -1, -1)}


def _n_images(extras: dict[str, Any]) -> int:
    return int(extras["pixel_values"].shape[0])


def _llava_placeholders(config: Any, extras: dict[str, Any]) -> list[int]:
    """LLaVA-1.5: a fixed count per image. Pixtral towers (LLaVA-Pixtral, Mistral3): one
    ``[IMG]`` per (merged) patch of each image's real size, rows separated by other ids."""
    if not _is_pixtral(config):
        return [_llava_tokens_per_image(config)] * _n_images(extras)
    why = "one (height, width) per image, to count each image's [IMG] tokens"
    sizes = _needs(extras, "image_sizes", config.model_type, why).tolist()
    side = config.vision_config.patch_size * getattr(config, "spatial_merge_size", 1)
    return [(int(h) // side) * (int(w) // side) for h, w in sizes]


def _chameleon_placeholders(config: Any, extras: dict[str, Any]) -> list[int]:
    vq = config.vq_config
    side = vq.resolution // 2 ** (len(vq.channel_multiplier) - 1)
    return [side * side] * _n_images(extras)


def _janus_placeholders(config: Any, extras: dict[str, Any]) -> list[int]:
    vision = config.vision_config
    return [(vision.image_size // vision.patch_size) ** 2] * _n_images(extras)


def _qwen2_vl_placeholders(config: Any, extras: dict[str, Any]) -> list[int]:
    grid = _needs(extras, "image_grid_thw", "Qwen2-VL", "one (t, h, w) patch grid per image")
    merge = config.vision_config.spatial_merge_size
    return [int(n) // merge**2 for n in grid.prod(-1).tolist()]


def _grid_placeholders(
    grids: Callable[[Any, dict[str, Any]], list[ImageGrid]],
) -> Callable[[Any, dict[str, Any]], list[int]]:
    return lambda config, extras: [g.n_tokens for g in grids(config, extras)]


def _roles(*names: str) -> Callable[[Any], tuple[str, ...]]:
    return lambda _config: names


def _llava_roles(config: Any) -> tuple[str, ...]:
    return ("row_break", "eoi") if _is_pixtral(config) else ()


ARCHITECTURES: dict[str, Architecture] = {
    a.hf_class: a
    for a in [
        Architecture(
            "LlavaForConditionalGeneration",
            native=False,
            family="LLaVA",
            special_tokens=_llava_tokens,
            patch_rule=_llava_patches,
            tokens_per_image=_llava_tokens_per_image,
            tl_adapter=_llava_adapter,
            notes="LLaVA-1.5 has no BOI/EOI of its own: the image is a run of <image> features. "
            "With a Pixtral tower (pixtral-12b): rows of [IMG] separated by [IMG_BREAK] (eol), "
            "[IMG_END] as EOI; needs image_sizes.",
            placeholders_per_image=_llava_placeholders,
            roles=_llava_roles,
        ),
        Architecture(
            "Mistral3ForConditionalGeneration",
            native=False,
            family="Mistral3",
            special_tokens=_llava_tokens,
            patch_rule=lambda _config: RowPatches(),
            tl_adapter=_fixed("hooked_vlm.Pixtral"),
            notes="Pixtral layout after a 2x2 patch merger: rows of [IMG], [IMG_BREAK] between "
            "rows (eol), [IMG_END] (EOI); no BOI.",
            placeholders_per_image=_llava_placeholders,
            roles=_roles("row_break", "eoi"),
        ),
        Architecture(
            "LlavaNextForConditionalGeneration",
            native=False,
            family="LLaVA-NeXT",
            special_tokens=_llava_tokens,
            patch_rule=_anyres_patches,
            grid_from_inputs=_anyres_grid,
            tl_adapter=_fixed("hooked_vlm.LlavaNext"),
            notes="No BOI/EOI: <image> features of the base image, then the unpadded high-res "
            "grid row by row, each row closed by the learned image_newline (eol).",
            placeholders_per_image=_grid_placeholders(_anyres_grid),
        ),
        Architecture(
            "LlavaOnevisionForConditionalGeneration",
            native=False,
            family="LLaVA-OneVision",
            special_tokens=_llava_tokens,
            patch_rule=_anyres_patches,
            grid_from_inputs=_anyres_grid,
            tl_adapter=_fixed("hooked_vlm.LlavaOnevision"),
            notes="As LLaVA-NeXT (base image + rows closed by image_newline, eol), with "
            "anyres_max down-scaling; no BOI/EOI.",
            placeholders_per_image=_grid_placeholders(_anyres_grid),
        ),
        Architecture(
            "JanusForConditionalGeneration",
            native=False,
            family="Janus",
            special_tokens=_boi_eoi_tokens,
            patch_rule=_janus_patches,
            notes="<begin_of_image> (BOI) + 576 <image_placeholder> features + <end_of_image> "
            "(EOI); understanding path (SigLIP + aligner) only.",
            placeholders_per_image=_janus_placeholders,
            roles=_roles("boi", "eoi"),
        ),
        Architecture(
            "Qwen2VLForConditionalGeneration",
            native=False,
            family="Qwen2-VL",
            vision_hooks="vision_encoder.blocks.{l}",
            special_tokens=_boi_eoi_tokens,
            patch_rule=lambda config: MergedPatches(config.vision_config.spatial_merge_size),
            prepare_forward=_qwen2_vl_forward,
            prompt_positions=_qwen2_vl_positions,
            notes="<|vision_start|> (BOI) + <|image_pad|> x (h*w/4) + <|vision_end|> (EOI); "
            "M-RoPE positions.",
            placeholders_per_image=_qwen2_vl_placeholders,
            roles=_roles("boi", "eoi"),
        ),
        Architecture(
            "InternVLForConditionalGeneration",
            native=False,
            family="InternVL",
            special_tokens=_boi_eoi_tokens,
            patch_rule=_internvl_patches,
            notes="<img> (BOI) + <IMG_CONTEXT> x 256 per tile (thumbnail last) + </img> (EOI).",
            roles=_roles("boi", "eoi"),
        ),
        Architecture(
            "Idefics3ForConditionalGeneration",
            native=False,
            family="Idefics3",
            special_tokens=_idefics3_tokens,
            patch_rule=_idefics3_patches,
            tl_adapter=_fixed("hooked_vlm.Idefics3"),
            notes="No BOI/EOI: per tile <fake_token_around_image> <row_r_col_c> <image> x k "
            "(tags: image_meta), tile rows end in \\n (eol), then the global image "
            "<fake_token_around_image> <global-img> <image> x k <fake_token_around_image>; the "
            "span runs from the first to the last <fake_token_around_image>. Adjacent images "
            "with no text between them form one span.",
            roles=_roles("row_break"),
        ),
        Architecture(
            "ChameleonForConditionalGeneration",
            native=True,
            family="Chameleon",
            special_tokens=_chameleon_tokens,
            patch_rule=_chameleon_patches,
            vision_hooks="",
            config_passthrough=("swin_norm",),
            notes="<racm3:break> (BOI) + VQ codes + <eoss> (EOI).",
            placeholders_per_image=_chameleon_placeholders,
            roles=_roles("boi", "eoi"),
        ),
        Architecture(
            "Emu3ForConditionalGeneration",
            native=True,
            family="Emu3",
            special_tokens=_emu3_tokens,
            patch_rule=lambda _config: RowPatches(),
            vision_hooks="",
            grid_from_inputs=_emu3_grid,
            notes="<|image start|>{h}*{w}<|image token|> + rows of codes ending in "
            "<|extra_200|> (EOL) + <|extra_201|> (EOF) + <|image end|> (EOI).",
            placeholders_per_image=_grid_placeholders(_emu3_grid),
            roles=_roles("boi", "eoi", "eof"),
        ),
    ]
}


class UnsupportedArchitectureError(ValueError):
    """The HF model class has no hooked-vlm support."""


def get_architecture(hf_class: str) -> Architecture:
    """Look up a supported HF class; a clear error lists the supported ones."""
    if hf_class in ARCHITECTURES:
        return ARCHITECTURES[hf_class]
    close = difflib.get_close_matches(hf_class, ARCHITECTURES, n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    raise UnsupportedArchitectureError(
        f"{hf_class} is not supported by hooked-vlm.{hint} Supported architectures: "
        f"{', '.join(sorted(ARCHITECTURES))}. See README 'Supported models' for the checkpoints "
        "of each, and hooked_vlm/architectures.py to add one."
    )
