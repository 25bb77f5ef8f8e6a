"""Vision-tower bridges whose attention patterns can be *edited*, shared by every adapter.

TransformerLens' CLIP / SigLIP tower bridges keep HF's attention and fire ``hook_pattern``
after the fact: an edit is discarded (with a warning, or silently when the hook edits in
place). Here the tower's attention is recomputed step by step by
:class:`EditableVisionAttentionBridge`, so an edit of
``vision_encoder.encoder_layers.{l}.attn.hook_pattern`` changes the image features. The same
bridge serves CLIP, SigLIP, Idefics3, Janus (SigLIP), InternViT (q/k-norm) and Pixtral (2D
RoPE, block-diagonal mask across images).

:func:`guard_native_attention` is the safety net for anything left over: a bridge that still
only observes its pattern raises :class:`PatternEditError` when a hook edits it.

Example:
    >>> adapter = LlavaArchitectureAdapter(cfg)
    >>> make_vision_attention_editable(adapter)   # CLIP/SigLIP tower now editable
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from transformer_lens.model_bridge.architecture_adapter import ArchitectureAdapter
from transformer_lens.model_bridge.generalized_components import AttentionBridge, LinearBridge
from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent
from transformer_lens.model_bridge.generalized_components.vision_encoder import (
    vision_attention_config,
)

from hooked_vlm.compat import recorded_hidden_states
from hooked_vlm.fast_attention import internals_watched

Rotary = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple]


class PatternEditError(RuntimeError):
    """A hook edited an attention pattern that this bridge can only observe."""


class EditableVisionAttentionBridge(AttentionBridge):
    """Bidirectional ViT attention recomputed step by step so ``hook_pattern`` edits apply.

    Mirrors HF's eager ViT attention: ``q/k/v`` projections, the wrapped module's ``q_norm`` /
    ``k_norm`` over the full width where it has them (InternViT), an optional rotary on the
    heads (Pixtral's 2D RoPE, from ``position_embeddings``), ``softmax(q k^T * scale + mask)
    v`` and the output projection. ``hook_attn_scores`` fires before the softmax,
    ``hook_pattern`` ``[batch, heads, patches, patches]`` after it.

    Example:
        >>> EditableVisionAttentionBridge("self_attn", cfg, out_proj="projection_layer")
    """

    force_eager: bool = False  # set by HookedVLM.eager_attention()

    def __init__(
        self,
        name: str,
        config: Any,
        out_proj: str = "out_proj",
        rotary: Rotary | None = None,
    ) -> None:
        super().__init__(
            name,
            config,
            submodules={
                "q": LinearBridge(name="q_proj"),
                "k": LinearBridge(name="k_proj"),
                "v": LinearBridge(name="v_proj"),
                "o": LinearBridge(name=out_proj),
            },
            is_causal=False,
            requires_attention_mask=False,
        )
        self._rotary = rotary

    def forward(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention of ``hidden_states`` ``[batch, pos, d]``; returns ``(output, pattern)``.

        The pattern is computed (and returned) only while a hook watches this layer's scores
        or pattern; otherwise SDPA runs and the pattern is ``None``.
        """
        hf_attn: Any = self.original_component
        if hf_attn is None:
            raise RuntimeError(f"Original component not set for {self.name}.")
        hidden = kwargs.pop("hidden_states") if "hidden_states" in kwargs else args[0]
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        hidden = self.hook_in(hidden)
        batch, pos, _ = hidden.shape
        d_head = hf_attn.head_dim
        n_heads = getattr(hf_attn, "num_heads", None) or hf_attn.config.num_attention_heads

        def heads(x: torch.Tensor, norm: str | None = None) -> torch.Tensor:
            if norm is not None and getattr(hf_attn, norm, None) is not None:
                x = getattr(hf_attn, norm)(x)
            x = x.reshape(batch, pos, -1, d_head).transpose(1, 2)
            # grouped key/value heads (Molmo 2's tower may have fewer): repeat, as HF does
            return x.repeat_interleave(n_heads // x.shape[1], dim=1)

        q = heads(self.q(hidden), "q_norm")
        k = heads(self.k(hidden), "k_norm")
        v = heads(self.v(hidden))
        if self._rotary is not None:
            cos, sin = kwargs["position_embeddings"]
            q, k = self._rotary(q, k, cos, sin)
        scale = getattr(hf_attn, "scale", getattr(hf_attn, "scaling", d_head**-0.5))
        mask = None if mask is None else mask.to(q.dtype)
        if self.force_eager or internals_watched(self):
            scores = torch.matmul(q, k.transpose(-1, -2)) * scale
            if mask is not None:
                scores = scores + mask
            scores = self.hook_attn_scores(scores)
            pattern = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
            pattern = self.hook_pattern(pattern)
            z = torch.matmul(pattern, v)
        else:  # nobody watches scores or pattern: the fused kernel, as HF's SDPA path
            pattern = None
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        z = z.transpose(1, 2).reshape(batch, pos, n_heads * d_head)
        return self.hook_out(self.o(z)), pattern


class VisionLayerBridge(GeneralizedComponent):
    """One ViT layer computed by HF (layer scales, norms), hooks around it and its parts."""

    is_list_item: bool = True
    hook_aliases = {
        "hook_resid_pre": "hook_in",
        "hook_resid_post": "hook_out",
        "hook_attn_out": "attn.hook_out",
        "hook_mlp_out": "mlp.hook_out",
    }


def _pixtral_rotary(q: torch.Tensor, k: torch.Tensor, cos: Any, sin: Any) -> tuple:
    from transformers.models.pixtral.modeling_pixtral import apply_rotary_pos_emb

    return apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=0)


def pixtral_tower(cfg: Any, name: str = "model.vision_tower") -> GeneralizedComponent:
    """Hooked Pixtral tower: per-layer residual, editable 2D-RoPE attention, gated MLP.

    All images run as one patch sequence (batch 1) with a block-diagonal mask, so
    ``vision_encoder.encoder_layers.{l}.attn.hook_pattern`` is ``[1, heads, patches, patches]``.
    """
    layer = VisionLayerBridge(
        name="transformer.layers",
        submodules={
            "ln1": GeneralizedComponent(name="attention_norm"),
            "attn": EditableVisionAttentionBridge(
                name="attention", config=vision_attention_config(cfg), out_proj="o_proj",
                rotary=_pixtral_rotary,
            ),
            "ln2": GeneralizedComponent(name="ffn_norm"),
            "mlp": GeneralizedComponent(
                name="feed_forward",
                submodules={
                    "gate": LinearBridge(name="gate_proj"),
                    "in": LinearBridge(name="up_proj"),
                    "out": LinearBridge(name="down_proj"),
                },
            ),
        },
    )
    return GeneralizedComponent(
        name=name,
        submodules={
            "embeddings": GeneralizedComponent(name="patch_conv"),
            "ln_pre": GeneralizedComponent(name="ln_pre"),
            "encoder_layers": layer,
        },
    )


def make_vision_attention_editable(
    adapter: ArchitectureAdapter, out_proj: str = "out_proj"
) -> None:
    """Swap the tower's observe-only attention bridge (TL's CLIP/SigLIP) for the editable one."""
    layers = adapter.components["vision_encoder"].submodules["encoder_layers"]
    old = layers.submodules["attn"]
    layers.submodules["attn"] = EditableVisionAttentionBridge(
        name=old.name, config=old.config, out_proj=out_proj
    )


def with_editable_tower(base: type[ArchitectureAdapter]) -> type[ArchitectureAdapter]:
    """TransformerLens' adapter ``base`` with its CLIP/SigLIP tower's attention made editable.

    Example:
        >>> LlavaAdapter = with_editable_tower(LlavaArchitectureAdapter)
    """

    class Adapter(base):  # type: ignore[misc, valid-type]
        def __init__(self, cfg: Any) -> None:
            super().__init__(cfg)
            make_vision_attention_editable(self)

    Adapter.__name__ = Adapter.__qualname__ = f"Editable{base.__name__}"
    Adapter.__doc__ = f"{base.__name__} whose vision-tower attention patterns are editable."
    return Adapter


def guard_native_attention(module: torch.nn.Module) -> list[str]:
    """Make pattern edits that cannot reach the model raise; returns the observe-only bridges.

    TL's base ``AttentionBridge`` (and any bridge with ``maintain_native_attention``) runs
    HF's attention and fires ``hook_pattern`` / ``hook_attn_scores`` afterwards, through
    ``_fire_post_hoc_hook``, which only warns when the returned tensor differs (an in-place
    edit passes unnoticed, and a warning shows once). Every attention bridge's post-hoc firing
    is replaced by one that compares a copy and raises :class:`PatternEditError` on any edit;
    reading (caching) stays free. Bridges that recompute attention never fire post hoc.
    """
    observe_only, seen = [], set()
    for name, sub in module.named_modules(remove_duplicate=False):
        if not isinstance(sub, AttentionBridge) or "_original_component" in name:
            continue
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        sub._fire_post_hoc_hook = _raising_post_hoc(name)  # type: ignore[method-assign]
        if type(sub).forward is AttentionBridge.forward or sub.maintain_native_attention:
            observe_only.append(name)
    return observe_only


def _raising_post_hoc(name: str) -> Callable[..., torch.Tensor]:
    def fire(hook: Any, tensor: torch.Tensor, label: str) -> torch.Tensor:
        if not hook._forward_hooks:
            return hook(tensor)
        before = tensor.detach().clone()
        result = hook(tensor)
        edited = not isinstance(result, torch.Tensor) or result.shape != before.shape
        if not edited and not (torch.equal(result, before) and torch.equal(tensor, before)):
            edited = True
        if edited:
            raise PatternEditError(
                f"a hook edited {name}.{label}, but this attention keeps HF's own computation "
                "and only observes the pattern: the edit could not reach the model. Edit an "
                "attention that is recomputed (every hooked-vlm decoder and vision tower is; "
                "see README 'Supported models'), or edit hook_z / hook_v instead."
            )
        return result

    return fire


def follow_edits_in_recorded_states(bridge: Any) -> int:
    """Make edits of a vision layer's output reach a model that reads recorded hidden states.

    LLaVA-family projectors read ``hidden_states[vision_feature_layer]`` of the vision tower,
    which transformers records with a forward hook on the HF layer module: before
    TransformerLens' ``hook_resid_post`` (or ``hook_out``) of the bridge around it runs, so an
    edit there was recorded unedited and silently dropped. Here each vision layer bridge gets a
    forward hook that swaps the recorded entry for the bridge's (possibly edited) output, but
    only when the entry is exactly what the HF layer returned in this call. Returns the number
    of layers hooked.

    Example:
        >>> follow_edits_in_recorded_states(model.bridge)   # HookedVLM does this for you
    """
    vision = getattr(bridge, "vision_encoder", None)
    layers = getattr(vision, "encoder_layers", None) or getattr(vision, "blocks", None) or []
    for layer in layers:
        hf_layer = layer.original_component
        produced: dict[str, weakref.ref] = {}  # a weak reference: nothing kept between calls

        def remember(_module: Any, _args: Any, output: Any, _produced: dict = produced) -> None:
            _produced["output"] = weakref.ref(output[0] if isinstance(output, tuple) else output)

        def swap(_module: Any, _args: Any, output: Any, _produced: dict = produced) -> None:
            raw = _produced.pop("output", lambda: None)()
            states = recorded_hidden_states()
            if raw is None or not states or states[-1] is not raw:
                return
            states[-1] = output[0] if isinstance(output, tuple) else output

        hf_layer.register_forward_hook(remember)
        layer.register_forward_hook(swap)
        # swap is inert while nothing is hooked: hooked_vlm.plain_model may skip the bridge
        layer.__dict__["_inert_forward_hooks"] = 1
    return len(layers)
