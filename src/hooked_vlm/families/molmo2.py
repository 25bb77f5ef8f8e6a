"""Molmo 2 (``Molmo2ForConditionalGeneration``): a ViT, an attention-pooling adapter, an
OLMo/Qwen-style decoder.

Layout of an image: ``<low_res_im_start>`` (BOI) + a low-resolution view of the whole picture
(rows of ``<im_patch>``, each closed by ``<im_col>``: end-of-line) + ``<im_end>`` ``<im_start>``
(image_meta) + the high-resolution crops as one grid of rows + ``<im_end>`` (EOI). The sizes
are the processor's ``image_grids`` (one ``(low_rows, low_cols, high_rows, high_cols)`` per
image). The pooled image features are *added* to the ``<im_patch>`` embeddings (not swapped in).

**Attention among image tokens is bidirectional**: ``mm_token_type_ids`` (1 on every image-side
token) put all image tokens of a sequence in one block on the first forward, as HF does;
``layout.attention_blocks`` names it, knockout and prefix reuse respect it. As for Qwen-VL,
``mm_token_type_ids`` are derived from the ids when a forward with images lacks them.

TransformerLens has no Molmo 2 adapter: this one maps the decoder (q/k RMS norms over the
whole projection or per head, post-norms when ``norm_after``, a scaled and an unscaled rotary
chosen per layer by HF) onto TL's recomputed attention, and the tower's layers onto
:class:`~hooked_vlm.adapters.vision.EditableVisionAttentionBridge` (patterns editable). The
adapter's pooling cross-attention (``model.multi_modal_projector``) is hooked as a whole.

Example:
    >>> tiny = build_tiny("molmo2")   # 2x2 low-res + 2x2 / 2x4 high-res tokens
"""

from __future__ import annotations

from typing import Any

import torch
from transformer_lens.model_bridge.architecture_adapter import ArchitectureAdapter
from transformer_lens.model_bridge.generalized_components import (
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
from transformer_lens.model_bridge.generalized_components.vision_encoder import (
    vision_attention_config,
)

from hooked_vlm.adapters.vision import EditableVisionAttentionBridge, VisionLayerBridge
from hooked_vlm.compat import get_cache
from hooked_vlm.families._tiny import TEXT_VOCAB, TinyModel, fill_zeros, seeded, tag, words
from hooked_vlm.families.base import Architecture, needs, roles, text_config, token_id
from hooked_vlm.layout import SpecialTokens
from hooked_vlm.layout.patch_grid import PooledViews

LM = "model.language_model."


class Molmo2ArchitectureAdapter(ArchitectureAdapter):
    """Molmo 2's decoder on TL's recomputed attention, its ViT with editable patterns."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.cfg.is_multimodal = True
        self._set_rms_rotary_defaults()
        self.cfg.attn_implementation = "eager"
        self._extract_vision_dims(cfg)
        post = bool(getattr(text_config(cfg), "norm_after", False))
        norms = ("ln1_post", "ln2_post") if post else ("ln1", "ln2")
        attention = PositionEmbeddingsAttentionBridge(
            name="self_attn",
            config=self.cfg,
            submodules={
                **{name: LinearBridge(name=f"{name}_proj") for name in ("q", "k", "v", "o")},
                "q_norm": RMSNormalizationBridge(name="q_norm", config=self.cfg),
                "k_norm": RMSNormalizationBridge(name="k_norm", config=self.cfg),
            },
        )
        vision_layer = VisionLayerBridge(
            name="layers",
            submodules={
                "ln1": GeneralizedComponent(name="layer_norm1"),
                "attn": EditableVisionAttentionBridge(
                    name="self_attn", config=vision_attention_config(self.cfg), out_proj="o_proj"
                ),
                "ln2": GeneralizedComponent(name="layer_norm2"),
                "mlp": GeneralizedComponent(
                    name="mlp",
                    submodules={"in": LinearBridge(name="fc1"), "out": LinearBridge(name="fc2")},
                ),
            },
        )
        self.component_mapping = {
            "vision_encoder": GeneralizedComponent(
                name="model.vision_tower", submodules={"encoder_layers": vision_layer}
            ),
            "vision_projector": VisionProjectionBridge(name="model.multi_modal_projector"),
            "embed": EmbeddingBridge(name=LM + "embed_tokens"),
            "rotary_emb": RotaryEmbeddingBridge(name=LM + "rotary_emb"),
            "blocks": BlockBridge(
                name=LM + "layers",
                submodules={
                    norms[0]: RMSNormalizationBridge(name="input_layernorm", config=self.cfg),
                    norms[1]: RMSNormalizationBridge(
                        name="post_attention_layernorm", config=self.cfg
                    ),
                    "attn": attention,
                    "mlp": self._gated_mlp(),
                },
            ),
            "ln_final": RMSNormalizationBridge(name=LM + "norm", config=self.cfg),
            "unembed": UnembeddingBridge(name="lm_head", config=self.cfg),
        }


def _tokens(config: Any) -> SpecialTokens:
    text = text_config(config)
    inner = (config.image_end_token_id, config.image_start_token_id)
    return SpecialTokens(
        image=config.image_patch_id,
        bos=text.bos_token_id,
        boi=config.low_res_image_start_token_id,
        eoi=config.image_end_token_id,
        row_break=token_id(config, "row_break", "image_col_token_id"),
        pad=text.pad_token_id,
        image_inner=inner,
    )


def _image_side_ids(config: Any) -> list[int]:
    """Every id the processor marks as image (``mm_token_type_ids`` 1)."""
    found = [config.image_patch_id, config.image_start_token_id, config.image_end_token_id,
             config.low_res_image_start_token_id, config.frame_start_token_id,
             config.frame_end_token_id, token_id(config, "row_break", "image_col_token_id")]
    return [i for i in found if i is not None]


def _type_ids(config: Any, ids: torch.Tensor) -> torch.Tensor:
    return torch.isin(ids, torch.tensor(_image_side_ids(config), device=ids.device)).long()


def _forward(hf_model: Any, ids: torch.Tensor, kw: dict[str, Any]) -> dict[str, Any]:
    """``mm_token_type_ids`` from the ids on a forward with images that lacks them."""
    past = get_cache(kw)
    first = past is None or past.get_seq_length() == 0
    if "mm_token_type_ids" in kw or kw.get("pixel_values") is None or not first:
        return kw
    return {**kw, "mm_token_type_ids": _type_ids(hf_model.config, ids)}


def image_block(config: Any, ids: torch.Tensor, extras: dict[str, Any]) -> torch.Tensor:
    """HF's ``block_sequence_ids``: every image-side token of a sequence in block 0."""
    types = extras.get("mm_token_type_ids")
    if types is None or types.shape != ids.shape:
        types = _type_ids(config, ids)
    return torch.where(types.to(ids.device) == 1, 0, -1)


def _placeholders(config: Any, extras: dict[str, Any]) -> list[int]:
    why = "one (low_rows, low_cols, high_rows, high_cols) per image"
    grids = needs(extras, "image_grids", "Molmo 2", why)
    return [int(a * b + c * d) for a, b, c, d in grids.tolist()]


# ------------------------------------------------------------------------- tiny instances

IDS = {"image_start_id": 56, "eoi_id": 57, "image_id": 58, "row_break_id": 59, "boi_id": 60,
       "frame_start_id": 61, "frame_end_id": 62}
PATCHES = 4  # ViT patches per crop side: 16 patches per crop, pooled 2x2 into 2x2 tokens


def _pooling(crop: int, rows: int, cols: int) -> list[list[int]]:
    """Indices of the 2x2 patch windows each token of a ``rows x cols`` token grid pools, in
    the crops from ``crop`` on (each crop covers 2 token columns), flattened over all crops."""
    out = []
    for r in range(rows):
        for c in range(cols):
            base = (crop + c // 2) * PATCHES**2
            top, left = 2 * r, 2 * (c % 2)
            out.append([base + (top + dr) * PATCHES + left + dc for dr in (0, 1) for dc in (0, 1)])
    return out


def _image_ids(grid: tuple[int, int, int, int]) -> list[int]:
    low_h, low_w, high_h, high_w = grid
    row = [IDS["image_id"]]
    low = [c for _ in range(low_h) for c in row * low_w + [IDS["row_break_id"]]]
    high = [c for _ in range(high_h) for c in row * high_w + [IDS["row_break_id"]]]
    return [IDS["boi_id"], *low, IDS["eoi_id"], IDS["image_start_id"], *high, IDS["eoi_id"]]


def tiny_molmo2(seed: int = 0, n_layers: int = 2) -> TinyModel:
    """Molmo2ForConditionalGeneration: 4 px patches, 16-patch crops pooled 2x2; image 0 is a
    2x2 low-res view + a 2x2 crop, image 1 a 2x2 low-res view + two crops side by side (2x4).
    Image-side ids live in the additional vocabulary (56..62), as in the real checkpoints.
    """
    from transformers import Molmo2Config, Molmo2ForConditionalGeneration

    torch.manual_seed(seed)
    first_word = 8
    vision = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 8,
              "patch_size": PATCHES, "image_size": [16, 16], "num_position_embeddings": 16}
    adapter = {"vision_feature_layer": [-1, -2], "hidden_size": 32, "num_attention_heads": 4,
               "num_key_value_heads": 4, "head_dim": 8, "intermediate_size": 37,
               "text_hidden_size": 32, "initializer_range": 0.1}
    text = {"hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 8, "vocab_size": first_word + TEXT_VOCAB, "additional_vocab_size": 8,
            "num_hidden_layers": n_layers, "intermediate_size": 37, "qk_norm_type": "qwen3",
            "max_position_embeddings": 256, "rope_scaling_layers": [0],
            "rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0},
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    config = Molmo2Config(
        vision_config=vision, adapter_config=adapter, text_config=text,
        image_start_token_id=IDS["image_start_id"], image_end_token_id=IDS["eoi_id"],
        image_patch_id=IDS["image_id"], low_res_image_start_token_id=IDS["boi_id"],
        frame_start_token_id=IDS["frame_start_id"], frame_end_token_id=IDS["frame_end_id"],
    )
    tag(config, row_break_token_id=IDS["row_break_id"])
    config._attn_implementation = "eager"
    for sub in ("text_config", "vision_config", "adapter_config"):
        getattr(config, sub)._attn_implementation = "eager"
    model = fill_zeros(Molmo2ForConditionalGeneration(config), seed)
    grids = [(2, 2, 2, 2), (2, 2, 2, 4)]
    crops = [[0, 1], [2, 3, 4]]  # the low-res crop, then the high-res ones, of each image
    pooling = [idx for g, c in zip(grids, crops, strict=True)
               for idx in _pooling(c[0], g[0], g[1]) + _pooling(c[1], g[2], g[3])]
    blocks = [_image_ids(g) for g in grids]
    gen = seeded(seed + 1)
    longest = max(len(b) for b in blocks)
    seqs, spans = [], []
    for block in blocks:
        head = [1, *words(3, first_word, gen)]
        spans.append((len(head), len(head) + len(block)))
        seqs.append([*head, *block, *words(5 + longest - len(block), first_word, gen)])
    ids = torch.tensor(seqs)
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(5, PATCHES**2, 3 * PATCHES**2, generator=gen),
        "image_token_pooling": torch.tensor(pooling),
        "image_grids": torch.tensor(grids),
        "image_num_crops": torch.tensor([2, 3]),
        "mm_token_type_ids": _type_ids(config, ids),
    }
    extras = {**IDS, "grids": grids, "image_spans": spans, "tiles": [2, 3],
              "forward_keys": ["image_token_pooling", "image_grids", "image_num_crops",
                               "mm_token_type_ids"]}
    return TinyModel("molmo2", model, inputs, 8, extras)


FAMILY = Architecture(
    "Molmo2ForConditionalGeneration",
    native=False,
    family="Molmo 2",
    special_tokens=_tokens,
    patch_rule=lambda _config: PooledViews(),
    notes="<low_res_im_start> (BOI) + low-res rows of <im_patch> closed by <im_col> (eol) + "
    "<im_end><im_start> (meta) + high-res rows + <im_end> (EOI); image features are added to "
    "the <im_patch> embeddings; bidirectional attention among all image tokens.",
    gate="`eoi` (the closing `<im_end>`, the last position of the bidirectional image "
    "block)",
    placeholders_per_image=_placeholders,
    prepare_forward=_forward,
    attention_blocks=image_block,
    roles=roles("row_break"),
    adapters={"Molmo2ForConditionalGeneration": Molmo2ArchitectureAdapter},
    tiny={"molmo2": tiny_molmo2},
)
