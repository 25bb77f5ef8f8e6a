"""What the explorer shows, as plain arrays: computed once by :func:`~.collection.collect`, drawn
by :mod:`hooked_vlm.viz.explorer` (the page, the notebook widget)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hooked_vlm.analysis.image_map import Fit
from hooked_vlm.analysis.token_attention import KEY_GROUPS


@dataclass(frozen=True)
class ImagePanel:
    """One view of one image of the example: ``index[r, c]`` is the patch number (into
    :attr:`ExplorerData.patches`) drawn at cell ``(r, c)``; ``picture`` (uint8 ``[H, W, 3]``)
    is what the heatmap is drawn over, ``None`` when no picture was given."""

    image: int
    view: str
    index: np.ndarray
    picture: np.ndarray | None
    fit: Fit = "fill"
    tiles: tuple[int, int] = (1, 1)

    @property
    def label(self) -> str:
        tiles = f" ({self.tiles[0]}x{self.tiles[1]} tiles)" if self.tiles != (1, 1) else ""
        return f"image {self.image + 1}, {self.view}{tiles}"


@dataclass
class ExplorerData:
    """One example's attention from its text tokens, and the logit lens on its image patches.

    Shapes: ``T`` selectable text tokens (:attr:`queries`), ``L`` layers, ``H`` heads, ``P``
    image patches (:attr:`patches`, every image and view of the example), ``G`` key groups
    (:data:`~hooked_vlm.analysis.token_attention.KEY_GROUPS`), ``k`` lens tokens per patch.
    """

    title: str
    tokens: list[str]  # every position of the example, as the tokenizer names it
    token_groups: list[str]  # per position: bos, boi, image, eoi, text, meta, pad
    queries: np.ndarray  # [T] positions of the selectable text tokens
    patches: np.ndarray  # [P] positions of the image patches
    weights: np.ndarray  # [T, L, H, P] attention weight of each query on each patch
    shares: np.ndarray  # [T, L, H, G] share of each query's attention per key group
    lens_ids: np.ndarray  # [L, P, k] top token ids of each patch's residual after layer l
    lens_probs: np.ndarray  # [L, P, k] their probabilities
    vocab: dict[int, str]  # names of the token ids in lens_ids
    panels: list[ImagePanel]
    next_tokens: list[tuple[str, float]]  # the model's top predictions after the prompt
    gate: str  # "EOI" or "last image token"
    notes: list[str] = field(default_factory=list)
    groups: tuple[str, ...] = KEY_GROUPS

    @property
    def n_layers(self) -> int:
        return self.weights.shape[1]

    @property
    def n_heads(self) -> int:
        return self.weights.shape[2]

    def reading(self) -> np.ndarray:
        """``[T, L, H]``: each head's share of attention on the image side (image + gate)."""
        image, gate = self.groups.index("image"), self.groups.index("gate")
        return self.shares[..., image] + self.shares[..., gate]
