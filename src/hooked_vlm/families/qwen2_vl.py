"""Qwen2-VL (``Qwen2VLForConditionalGeneration``), patterns editable in decoder and tower.

TL ships an adapter for Qwen2.5-VL only, and it keeps HF's attention (``hook_pattern`` observes,
edits are discarded). In transformers 5.x Qwen2-VL's text rotary module already folds the three
M-RoPE streams (temporal/height/width sections) into one ``(cos, sin)`` pair per position, so the
decoder layer hands its attention ordinary rotate-half cos/sin: TL's
``PositionEmbeddingsAttentionBridge`` (which recomputes attention, and so honours pattern edits)
reproduces it exactly. The q/k/v projections carry biases.

The vision tower (``model.visual``) runs all images as one patch sequence, attending within
each image (``cu_seqlens``) under a 2D rotary embedding. :class:`QwenVisionAttentionBridge`
recomputes it as one block-diagonal pattern ``[1, heads, patches, patches]`` (zero across
images), so ``vision_encoder.blocks.{l}.attn.hook_pattern`` is editable too. The patch merger
(``model.visual.merger``) is the ``vision_projector``.

Layout: ``<|vision_start|>`` (BOI) + ``<|image_pad|>`` x (h*w/4) + ``<|vision_end|>`` (EOI),
M-RoPE positions. HF stores M-RoPE deltas on the model (``model.model.rope_deltas``) during a
forward; the next call with ``input_ids`` recomputes them, a cached decode step reuses them.
:func:`qwen_forward` and :func:`qwen_positions` serve Qwen2.5-VL and Qwen3-VL too.

Example:
    >>> tiny = build_tiny("qwen2_vl")   # 16x16 and 16x24 px -> 2x2 and 2x3 merged tokens
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from transformer_lens.hook_points import HookPoint
from transformer_lens.model_bridge.architecture_adapter import ArchitectureAdapter
from transformer_lens.model_bridge.generalized_components import (
    AttentionBridge,
    BlockBridge,
    EmbeddingBridge,
    LinearBridge,
    RMSNormalizationBridge,
    RotaryEmbeddingBridge,
    UnembeddingBridge,
    VisionProjectionBridge,
)
from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent
from transformer_lens.model_bridge.generalized_components.position_embeddings_attention import (
    PositionEmbeddingsAttentionBridge,
)
from transformer_lens.model_bridge.generalized_components.qwen3_5_vision_encoder import (
    Qwen3_5VisionBlockBridge,
    Qwen3_5VisionEncoderBridge,
)
from transformer_lens.model_bridge.generalized_components.vision_encoder import (
    vision_attention_config,
)

from hooked_vlm.compat import get_cache, without_cache
from hooked_vlm.families._tiny import (
    LLAMA,
    TEXT_VOCAB,
    TinyModel,
    eager,
    finish,
    rows,
    seeded,
    words,
)
from hooked_vlm.families.base import Architecture, boi_eoi_tokens, needs, roles
from hooked_vlm.layout import SpecialTokens, VideoGrid
from hooked_vlm.layout.patch_grid import MergedPatches


class QwenVisionAttentionBridge(AttentionBridge):
    """Qwen-VL vision attention recomputed over all patches with a block-diagonal mask.

    ``hidden_states`` is ``[patches, d]`` (no batch axis). ``hook_q`` / ``hook_k`` / ``hook_v``
    fire on ``[patches, heads, d_head]`` before the 2D rotary; ``hook_attn_scores`` /
    ``hook_pattern`` are ``[1, heads, patches, patches]`` with scores of ``-inf`` (pattern 0)
    between patches of different images.
    """

    hook_aliases = {"hook_z": "o.hook_in"}

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(
            name,
            config,
            submodules={"qkv": LinearBridge(name="qkv"), "o": LinearBridge(name="proj")},
            is_causal=False,
            requires_attention_mask=False,
        )
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()

    def setup_hook_compatibility(self) -> None:
        """No per-head q/k/v reshaping: q, k and v come out of one fused ``qkv`` linear."""

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Attention of ``hidden_states`` ``[patches, d]`` within each image of ``cu_seqlens``."""
        from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision

        hf_attn: Any = self.original_component
        if hf_attn is None:
            raise RuntimeError(f"Original component not set for {self.name}.")
        hidden = kwargs.pop("hidden_states") if "hidden_states" in kwargs else args[0]
        cu_seqlens = kwargs["cu_seqlens"]
        cos, sin = kwargs["position_embeddings"]
        hidden = self.hook_in(hidden)
        n, n_heads = hidden.shape[0], hf_attn.num_heads
        q, k, v = self.qkv(hidden).reshape(n, 3, n_heads, -1).permute(1, 0, 2, 3).unbind(0)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
        q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))
        scores = torch.matmul(q, k.transpose(-1, -2)) * hf_attn.scaling
        image = torch.repeat_interleave(
            torch.arange(len(cu_seqlens) - 1, device=hidden.device), cu_seqlens.diff()
        )
        same_image = image[:, None] == image[None, :]
        scores = scores.masked_fill(~same_image, float("-inf"))
        scores = self.hook_attn_scores(scores)
        pattern = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        pattern = self.hook_pattern(pattern)
        z = torch.matmul(pattern, v)[0].transpose(0, 1).reshape(n, -1)
        return self.hook_out(self.o(z))


class Qwen2VLArchitectureAdapter(ArchitectureAdapter):
    """Qwen2-VL: Qwen2 decoder with recomputed M-RoPE attention, hooked vision tower.

    Qwen2.5-VL and Qwen3-VL subclass it: their towers differ in the MLP's module names, the
    position embedding module and (Qwen3-VL) DeepStack mergers; Qwen3-VL's decoder adds
    per-head q/k RMS norms and drops the q/k/v biases.
    """

    # vision block MLP: TL name -> HF module name
    vision_mlp: dict[str, str] = {"in": "fc1", "out": "fc2"}
    vision_pos_embed = "rotary_pos_emb"
    qk_norm = False
    qkv_bias = True

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.cfg.is_multimodal = True
        self._set_rms_rotary_defaults()
        self.cfg.attn_implementation = "eager"
        self.cfg.default_prepend_bos = False  # Qwen tokenizers have no BOS
        self._extract_vision_dims(cfg)
        vision_cfg = getattr(cfg, "vision_config", None)
        if getattr(vision_cfg, "embed_dim", None):  # Qwen2-VL: hidden_size is the LM's width
            self.cfg.vision_hidden_size = vision_cfg.embed_dim
        self.weight_processing_conversions = {
            **self._qkvo_weight_conversions(include_biases=self.qkv_bias),
        }
        self.component_mapping = {
            "vision_encoder": Qwen3_5VisionEncoderBridge(
                name="model.visual", config=self.cfg, submodules=self._vision_submodules()
            ),
            "vision_projector": VisionProjectionBridge(name="model.visual.merger"),
            "embed": EmbeddingBridge(name="model.language_model.embed_tokens"),
            "rotary_emb": RotaryEmbeddingBridge(name="model.language_model.rotary_emb"),
            "blocks": BlockBridge(
                name="model.language_model.layers",
                submodules={
                    "ln1": RMSNormalizationBridge(name="input_layernorm", config=self.cfg),
                    "ln2": RMSNormalizationBridge(name="post_attention_layernorm", config=self.cfg),
                    "attn": PositionEmbeddingsAttentionBridge(
                        name="self_attn", config=self.cfg, submodules=self._attention_parts()
                    ),
                    "mlp": self._gated_mlp(),
                },
            ),
            "ln_final": RMSNormalizationBridge(name="model.language_model.norm", config=self.cfg),
            "unembed": UnembeddingBridge(name="lm_head", config=self.cfg),
        }

    def _vision_submodules(self) -> dict[str, GeneralizedComponent]:
        mlp = {tl: LinearBridge(name=hf) for tl, hf in self.vision_mlp.items()}
        block = Qwen3_5VisionBlockBridge(
            name="blocks",
            submodules={
                "attn": QwenVisionAttentionBridge(
                    name="attn", config=vision_attention_config(self.cfg)
                ),
                "mlp": GeneralizedComponent(name="mlp", submodules=mlp),
            },
        )
        return {"pos_embed": GeneralizedComponent(name=self.vision_pos_embed), "blocks": block}

    def _attention_parts(self) -> dict[str, GeneralizedComponent]:
        parts: dict[str, GeneralizedComponent] = {
            name: LinearBridge(name=f"{name}_proj") for name in ("q", "k", "v", "o")
        }
        if self.qk_norm:
            for name in ("q_norm", "k_norm"):
                parts[name] = RMSNormalizationBridge(name=name, config=self.cfg)
        return parts


def qwen_positions(hf_model: Any, ids: torch.Tensor, kw: dict[str, Any]) -> torch.Tensor:
    """Qwen-VL's 3-D M-RoPE positions ``[3, batch, pos]`` of a whole prompt, as HF computes
    them on the first forward (image tokens at their grid positions)."""
    kw = qwen_forward(hf_model, ids, without_cache(kw))
    extra = {k: kw[k] for k in ("second_per_grid_ts",) if kw.get(k) is not None}
    positions, _ = hf_model.model.get_rope_index(
        ids, mm_token_type_ids=kw.get("mm_token_type_ids"), image_grid_thw=kw.get("image_grid_thw"),
        video_grid_thw=kw.get("video_grid_thw"), attention_mask=kw.get("attention_mask"), **extra,
    )
    return positions


def qwen_forward(hf_model: Any, ids: torch.Tensor, kw: dict[str, Any]) -> dict[str, Any]:
    """Qwen-VL: ``mm_token_type_ids`` from the ids when missing; on a cached step (a suffix
    after a prefix, a generation step) the 3D M-RoPE positions HF's ``generate`` would pass:
    text positions ``+ rope_deltas`` of the prefix, for the three streams."""
    config = hf_model.config
    has_grid = kw.get("image_grid_thw") is not None or kw.get("video_grid_thw") is not None
    if "mm_token_type_ids" not in kw and has_grid:
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


def qwen_tokens(config: Any) -> SpecialTokens:
    """BOI/EOI as ``<|vision_start|>`` / ``<|vision_end|>``, ``<|video_pad|>`` for videos."""
    return dataclasses.replace(
        boi_eoi_tokens(config), video=getattr(config, "video_token_id", None)
    )


def qwen_videos(config: Any, extras: dict[str, Any]) -> list[VideoGrid]:
    """One grid per row of ``video_grid_thw``: ``t`` frames (after the temporal patch) of
    ``h * w / merge**2`` tokens."""
    thw = extras.get("video_grid_thw")
    if thw is None:
        return []
    merge = config.vision_config.spatial_merge_size
    return [VideoGrid(int(t), int(h) * int(w) // merge**2) for t, h, w in thw.tolist()]


def qwen_placeholders(config: Any, extras: dict[str, Any]) -> list[int]:
    """Merged tokens of each still image: ``t * h * w / merge**2`` of its ``image_grid_thw``."""
    grid = needs(extras, "image_grid_thw", config.model_type, "one (t, h, w) patch grid per image")
    merge = config.vision_config.spatial_merge_size
    return [int(n) // merge**2 for n in grid.prod(-1).tolist()]


def qwen_patches(config: Any) -> MergedPatches:
    return MergedPatches(config.vision_config.spatial_merge_size)


# ------------------------------------------------------------------------- tiny instances

QWEN_IDS = {"image_id": 3, "boi_id": 4, "eoi_id": 5, "video_id": 6}
QWEN_GRIDS = [(1, 4, 4), (1, 4, 6)]  # (t, h, w) patches of the two tiny images


def qwen_batch(
    grids: list[tuple[int, int, int]], patch_dim: int, seed: int, merge: int = 2
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Two rows, each ``<|vision_start|> <|image_pad|> x (h w / merge**2) <|vision_end|>``,
    with flattened patches ``(sum t h w, patch_dim)`` and ``image_grid_thw``."""
    ids = QWEN_IDS
    first_word = 8
    blocks = [[ids["boi_id"], *[ids["image_id"]] * (h * w // merge**2), ids["eoi_id"]]
              for _, h, w in grids]
    gen = seeded(seed + 1)
    inputs, spans = rows(blocks, first_word, gen)
    n_patches = sum(t * h * w for t, h, w in grids)
    inputs["pixel_values"] = torch.randn(n_patches, patch_dim, generator=gen)
    inputs["image_grid_thw"] = torch.tensor(grids)
    inputs["mm_token_type_ids"] = (inputs["input_ids"] == ids["image_id"]).long()
    extras = {**ids, "grids": [(h // merge, w // merge) for _, h, w in grids],
              "image_spans": spans, "forward_keys": ["image_grid_thw", "mm_token_type_ids"]}
    return inputs, extras


def qwen_video_batch(
    patch_dim: int, seed: int, merge: int = 2, frame_spans: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Two rows with videos: row 0 holds an image (1, 4, 4), two words, then a video of
    (t, h, w) = (2, 4, 4) patches; row 1 a video (2, 4, 6). A video is one
    ``<|vision_start|> <|video_pad|> x (t h w / merge**2) <|vision_end|>`` span (Qwen2-VL,
    Qwen2.5-VL) or, with ``frame_spans``, one such span per frame after a timestamp word
    (Qwen3-VL). ``extras["frame_spans"]`` holds each frame's ``(start, stop)``, BOI/EOI
    included."""
    ids, first_word = QWEN_IDS, 8
    gen = seeded(seed + 1)
    videos = [(2, 4, 4), (2, 4, 6)]
    rows_, frame_spans_ = [], []
    for b, (t, h, w) in enumerate(videos):
        row = [1, *words(3, first_word, gen)]
        if b == 0:
            row += [ids["boi_id"], *[ids["image_id"]] * (16 // merge**2), ids["eoi_id"]]
            row += words(2, first_word, gen)
        per_frame, frames = h * w // merge**2, []
        if frame_spans:
            for _ in range(t):
                row.append(first_word + 47)  # the frame's timestamp
                frames.append((len(row), len(row) + per_frame + 2))
                row += [ids["boi_id"], *[ids["video_id"]] * per_frame, ids["eoi_id"]]
        else:
            start = len(row) + 1
            frames = [(start + k * per_frame, start + (k + 1) * per_frame) for k in range(t)]
            frames[0], frames[-1] = (frames[0][0] - 1, frames[0][1]), (frames[-1][0],
                                                                      frames[-1][1] + 1)
            row += [ids["boi_id"], *[ids["video_id"]] * (t * per_frame), ids["eoi_id"]]
        rows_.append(row)
        frame_spans_.append(frames)
    longest = max(len(r) for r in rows_)
    rows_ = [r + words(5 + longest - len(r), first_word, gen) for r in rows_]
    input_ids = torch.tensor(rows_)
    inputs = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values": torch.randn(16, patch_dim, generator=gen),
        "image_grid_thw": torch.tensor([[1, 4, 4]]),
        "pixel_values_videos": torch.randn(sum(t * h * w for t, h, w in videos), patch_dim,
                                           generator=gen),
        "video_grid_thw": torch.tensor(videos),
        "mm_token_type_ids": (input_ids == ids["image_id"]).long()
        + 2 * (input_ids == ids["video_id"]).long(),
    }
    extras = {**ids, "frame_spans": frame_spans_,
              "video_grids": [(h // merge, w // merge) for _, h, w in videos]}
    return inputs, extras


def qwen_text(n_layers: int, **overrides: Any) -> dict[str, Any]:
    """A tiny Qwen-VL text config (d_head 16, M-RoPE sections 2/3/3)."""
    return {
        **LLAMA, "hidden_size": 64, "intermediate_size": 67, "vocab_size": 8 + TEXT_VOCAB,
        "num_hidden_layers": n_layers, "rope_parameters": {
            "rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        **overrides,
    }


def tiny_qwen2_vl(seed: int = 0, n_layers: int = 2) -> TinyModel:
    """Qwen2VLForConditionalGeneration: 4 px patches, 2x2 merge, M-RoPE; d_head 16.

    Images of 16x16 and 16x24 px -> patch grids (t, h, w) = (1, 4, 4) and (1, 4, 6) -> 2x2 and
    2x3 merged tokens. Layout ``<|vision_start|>`` + ``<|image_pad|>`` x n + ``<|vision_end|>``;
    ``mm_token_type_ids`` is 1 on ``<|image_pad|>`` only. ``pixel_values`` are flattened patches
    ``(sum t*h*w, 3 * 2 * 4 * 4)``.
    """
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(seed)
    ids = QWEN_IDS
    patch, temporal, merge = 4, 2, 2
    vision = {"depth": 2, "embed_dim": 32, "hidden_size": 64, "num_heads": 4, "mlp_ratio": 2,
              "patch_size": patch, "spatial_merge_size": merge, "temporal_patch_size": temporal}
    config = Qwen2VLConfig(
        text_config=qwen_text(n_layers), vision_config=vision, image_token_id=ids["image_id"],
        video_token_id=ids["video_id"], vision_start_token_id=ids["boi_id"],
        vision_end_token_id=ids["eoi_id"],
    )
    model = finish(Qwen2VLForConditionalGeneration(eager(config)), seed)
    inputs, extras = qwen_batch(QWEN_GRIDS, 3 * temporal * patch**2, seed, merge)
    return TinyModel("qwen2_vl", model, inputs, 4, extras)


def qwen_family(
    hf_class: str,
    family: str,
    adapter: type,
    image_builder: Callable[..., TinyModel],
    notes: str,
    gate: str = "`eoi` (`<|vision_end|>`)",
    frame_spans: bool = False,
    **extra: Any,
) -> Architecture:
    """The :class:`Architecture` of a Qwen-VL family: Qwen2-VL's layout, M-RoPE and video
    rules; tiny instances ``image_builder`` and its video variant (:func:`qwen_video_batch`,
    one span per frame with ``frame_spans``). ``extra`` sets more fields (Qwen3-VL's
    DeepStack)."""
    name = image_builder.__name__.removeprefix("tiny_")

    def video(seed: int = 0, n_layers: int = 2) -> TinyModel:
        model = image_builder(seed, n_layers).model
        inputs, extras = qwen_video_batch(3 * 2 * 4**2, seed, frame_spans=frame_spans)
        return TinyModel(f"{name}_video", model, inputs, 4, extras)

    video.__doc__ = (f"The tiny {family} on videos (:func:`qwen_video_batch`): row 0 an image "
                     "and a video of 2 frames of 2x2 tokens, row 1 a video of 2 frames of 2x3.")
    return Architecture(
        hf_class,
        native=False,
        family=family,
        vision_hooks="vision_encoder.blocks.{l}",
        special_tokens=qwen_tokens,
        patch_rule=qwen_patches,
        video_grids=qwen_videos,
        prepare_forward=qwen_forward,
        prompt_positions=qwen_positions,
        notes=notes,
        gate=gate,
        placeholders_per_image=qwen_placeholders,
        roles=roles("boi", "eoi"),
        adapters={hf_class: adapter},
        tiny={name: image_builder, f"{name}_video": video},
        **extra,
    )


FAMILY = qwen_family(
    "Qwen2VLForConditionalGeneration", "Qwen2-VL", Qwen2VLArchitectureAdapter, tiny_qwen2_vl,
    notes="<|vision_start|> (BOI) + <|image_pad|> x (h*w/4) + <|vision_end|> (EOI); "
    "M-RoPE positions. A video is one <|vision_start|> <|video_pad|> x (t*h*w/4) "
    "<|vision_end|> span, split into t frames (BOI on the first, EOI on the last).",
)
