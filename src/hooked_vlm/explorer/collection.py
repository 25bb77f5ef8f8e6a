"""One forward under recording hooks -> :class:`~.data.ExplorerData`.

Hooks on every layer's ``attn.hook_pattern`` keep only the chosen example's text-query rows,
reduced at once to weights on the image patches and shares per key group
(:func:`hooked_vlm.analysis.token_attention.query_attention`): ``[head, T, P]`` per layer,
never the ``[head, pos, pos]`` pattern. Hooks on ``hook_resid_post`` keep the residual at the
patch positions (``[P, d_model]`` per layer); after the forward the logit lens
(:func:`hooked_vlm.analysis.logit_lens.logit_lens`) reads them through the model's own final
norm and unembedding. Token ids the model's head never emits (their logits come out at the
dtype's minimum, as Chameleon's image codes do) are excluded from the lens, found from the
forward's own logits rather than from per-family knowledge.

Example:
    >>> data = collect(model, model.prepare(picture, task="caption"), images=[picture])
    >>> data.weights.shape        # [T, L, H, P]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hooked_vlm.analysis.logit_lens import LensTop, logit_lens
from hooked_vlm.analysis.token_attention import key_groups, query_attention, text_queries
from hooked_vlm.explorer.data import ExplorerData, ImagePanel
from hooked_vlm.layout import LayoutError, TokenLayout, patch_grids
from hooked_vlm.model import HookedVLM
from hooked_vlm.pictures import picture_fit, thumbnail

PICTURE_SIDE = 384  # pictures are embedded at most this many pixels a side
_DISPLAY_GROUPS = (("bos", "bos"), ("boi", "boi"), ("eoi", "eoi"), ("eol", "row"),
                   ("eof", "row"), ("image_meta", "meta"), ("image", "image"), ("text", "text"))


@torch.no_grad()
def collect(
    model: HookedVLM,
    inputs: Mapping[str, Any],
    images: Any | Sequence[Any] | None = None,
    *,
    example: int = 0,
    k: int = 3,
    queries: Sequence[int] | None = None,
    tiles: tuple[int, int] | None = None,
    title: str | None = None,
) -> ExplorerData:
    """Everything the explorer shows for example ``example`` of ``inputs``, from one forward.

    Args:
        model: the model.
        inputs: from ``model.prepare`` (or HF-style inputs; the layout is then computed).
            Every example of the batch runs; pass a one-example batch to pay for one.
        images: the pictures of that example in prompt order (one picture alone is fine), or
            of every example of the batch; ``None`` draws the maps without a picture.
        k: lens tokens kept per patch and layer.
        queries: the text positions to offer (default: every text token after the first
            image). The page embeds ``layers x heads x patches`` bytes per text token (0.6 MB
            for 32 x 32 x 576): fewer tokens, a smaller page.
        tiles: ``(rows, cols)`` of InternVL's crops (see :func:`hooked_vlm.layout.patch_grids`).
        title: the page's title (default: the model's name).

    Example:
        >>> data = collect(model, inputs, images=[picture], k=3)
    """
    layout: TokenLayout = getattr(inputs, "layout", None) or model.layout(**inputs)
    if not 0 <= example < layout.batch_size:
        raise ValueError(f"example={example}: the inputs hold {layout.batch_size} example(s).")
    queries = _queries(text_queries(layout, example), queries)
    groups = key_groups(layout, example)
    patches = layout.select("image_patches", allow_empty=True)[example]
    if patches.numel() == 0:
        raise LayoutError(f"example {example} has no image patches to draw on.")
    panels = _panels(model, layout, inputs, example, patches, images, tiles)
    n_layers = model.cfg.n_layers
    weights: list[Tensor | None] = [None] * n_layers
    shares: list[Tensor | None] = [None] * n_layers
    resid: list[Tensor | None] = [None] * n_layers

    def on_pattern(pattern: Tensor, hook: Any) -> None:
        w, s = query_attention(pattern, example, queries, patches, groups,
                               query_start=model.state.query_start)
        weights[hook.layer()], shares[hook.layer()] = w.cpu(), s.cpu()

    lens_device = readout(model)[1].device  # layers spread over devices meet here

    def on_resid(value: Tensor, hook: Any) -> None:
        kept = value[example, patches.to(value.device)].detach()
        resid[hook.layer()] = kept.to(lens_device, copy=True)

    hooks = [(f"blocks.{layer}.attn.hook_pattern", on_pattern) for layer in range(n_layers)]
    hooks += [(f"blocks.{layer}.hook_resid_post", on_resid) for layer in range(n_layers)]
    logits = model.run_with_hooks(inputs, fwd_hooks=hooks)
    missing = [i for i, w in enumerate(weights) if w is None or resid[i] is None]
    if missing:
        raise RuntimeError(f"the hooks of layer(s) {missing} did not fire during the forward.")
    last = int(layout.select("last")[example][-1])
    lens, notes = _lens(model, torch.stack(resid), logits[example, last], k)
    ids = lens.ids.cpu().numpy()
    tokens = _names(model, inputs["input_ids"][example])
    return ExplorerData(
        title=title or _model_name(model),
        tokens=tokens,
        token_groups=_display_groups(layout, example),
        queries=queries.cpu().numpy(),
        patches=patches.cpu().numpy(),
        weights=torch.stack(weights).permute(2, 0, 1, 3).numpy(),  # [T, L, H, P]
        shares=torch.stack(shares).permute(2, 0, 1, 3).numpy(),  # [T, L, H, G]
        lens_ids=ids,
        lens_probs=lens.probs.cpu().numpy(),
        vocab=_vocab(model, np.unique(ids)),
        panels=panels,
        next_tokens=_next_tokens(model, logits[example, last]),
        gate="EOI" if bool(layout.mask("eoi")[example].any()) else "last image token",
        notes=notes,
    )


def _lens(
    model: HookedVLM, resid: Tensor, final_logits: Tensor, k: int
) -> tuple[LensTop, list[str]]:
    """The logit lens on ``resid`` ``[L, P, d_model]`` through the model's final norm and head;
    ids the model's own head never emits (logits at the dtype's minimum) are excluded."""
    norm, W_U, b_U = readout(model)
    floor = torch.finfo(final_logits.dtype).min
    exclude = (final_logits <= floor).nonzero().flatten()
    top = logit_lens(resid, norm, W_U, b_U, k=k, exclude=exclude)
    notes = []
    if exclude.numel():
        notes.append(f"The logit lens leaves out {exclude.numel()} token ids that the model's "
                     "own head never emits (e.g. image codes).")
    return top, notes


def _queries(allowed: Tensor, wanted: Sequence[int] | None) -> Tensor:
    if wanted is None:
        return allowed
    chosen = torch.as_tensor(list(wanted), dtype=allowed.dtype).unique()
    bad = chosen[~torch.isin(chosen, allowed)].tolist()
    if bad or chosen.numel() == 0:
        raise ValueError(
            f"queries {list(wanted)}: {bad or 'none given'} are not text positions after the "
            f"first image; those are {allowed.tolist()}."
        )
    return chosen


def readout(model: HookedVLM) -> tuple[torch.nn.Module, Tensor, Tensor | None]:
    """``(final norm, W_U [d_model, vocab], b_U or None)``: the HF modules the model's own
    logits come from (TransformerLens' ``ln_final`` wraps the first; the second is the
    model's output embedding).

    Example:
        >>> norm, W_U, b_U = readout(model)
        >>> logits = norm(resid) @ W_U
    """
    norm = model.bridge.ln_final.original_component
    head = model.hf_model.get_output_embeddings()
    return norm, head.weight.T, getattr(head, "bias", None)


def _panels(
    model: HookedVLM,
    layout: TokenLayout,
    inputs: Mapping[str, Any],
    example: int,
    patches: Tensor,
    images: Any,
    tiles: tuple[int, int] | None,
) -> list[ImagePanel]:
    n_images = layout.n_images()
    pictures = _pictures(images, n_images, example)
    fit = picture_fit(model) if model.processor is not None else "fill"
    panels = []
    for image in range(n_images[example]):
        views = patch_grids(layout, example, image, tiles=tiles, **inputs)
        for view, grid in views.items():
            index = torch.searchsorted(patches, grid.positions.to(patches.device))
            panels.append(ImagePanel(image, view, index.cpu().numpy(), pictures[image], fit,
                                     grid.tiles))
    return panels


def _pictures(images: Any, n_images: list[int], example: int) -> list[np.ndarray | None]:
    """One uint8 picture (or ``None``) per image of ``example``."""
    mine = n_images[example]
    if images is None:
        return [None] * mine
    single = hasattr(images, "convert") or isinstance(images, np.ndarray)
    pictures = [images] if single else list(images)
    if len(pictures) == sum(n_images) and len(pictures) != mine:
        start = sum(n_images[:example])
        pictures = pictures[start : start + mine]
    if len(pictures) != mine:
        raise ValueError(
            f"{len(pictures)} picture(s) given, but example {example} has {mine} image(s) (and "
            f"the batch {sum(n_images)}): give the example's pictures in prompt order."
        )
    return [thumbnail(_as_pil(p), PICTURE_SIDE) for p in pictures]


def _as_pil(picture: Any) -> Any:
    from PIL import Image

    if hasattr(picture, "convert"):
        return picture
    array = np.asarray(picture)
    if array.dtype != np.uint8:
        raise ValueError("a picture given as an array must be uint8 [H, W, 3]; or pass PIL.")
    return Image.fromarray(array)


def _names(model: HookedVLM, ids: Tensor) -> list[str]:
    if model.tokenizer is None:
        return [f"#{int(i)}" for i in ids]
    return model.to_str_tokens(ids)


def _vocab(model: HookedVLM, ids: np.ndarray) -> dict[int, str]:
    if model.tokenizer is None:
        return {int(i): f"#{int(i)}" for i in ids}
    names = model.tokenizer.convert_ids_to_tokens([int(i) for i in ids])
    return {int(i): str(n) for i, n in zip(ids, names, strict=True)}


def _next_tokens(model: HookedVLM, logits: Tensor, n: int = 5) -> list[tuple[str, float]]:
    top = logits.float().softmax(-1).topk(n)
    names = _vocab(model, top.indices.cpu().numpy())
    return [(names[int(i)], float(p)) for i, p in zip(top.indices, top.values, strict=True)]


def _display_groups(layout: TokenLayout, example: int) -> list[str]:
    labels = ["pad"] * layout.seq_len
    for group, label in reversed(_DISPLAY_GROUPS):  # the first listed wins
        for pos in layout.mask(group)[example].nonzero().flatten().tolist():
            labels[pos] = label
    return labels


def _model_name(model: HookedVLM) -> str:
    return model.model_config.name if model.model_config else model.cfg.architecture
