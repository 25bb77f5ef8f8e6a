"""``HookedVLM``: a Hugging Face VLM with TransformerLens hook points and a token layout.

The HF model is wrapped (unmodified weights, HF's own image handling) by TransformerLens'
``TransformerBridge``, which gives TL hook names and ``ActivationCache``. HookedVLM adds what a
VLM study needs on top: HF-style keyword inputs, the :class:`TokenLayout` of image spans,
hook-name checking with suggestions, greedy generation with hooks active at every step, and
loading by HF id, local directory or model-config name.

Example:
    >>> from hooked_vlm import HookedVLM
    >>> from hooked_vlm.families import build_tiny
    >>> tiny = build_tiny("chameleon")
    >>> model = HookedVLM.from_hf(tiny.model)
    >>> logits, cache = model.run_with_cache(**tiny.inputs, names_filter="blocks.0.hook_resid_post")
    >>> model.layout(tiny.inputs["input_ids"]).select("eoi")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from copy import deepcopy as copy_module
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import ActivationCache

from hooked_vlm import loading
from hooked_vlm.adapters.vision import follow_edits_in_recorded_states
from hooked_vlm.cached_hook_dict import cache_hook_dict
from hooked_vlm.compat import CACHE_KWARG, get_cache, new_cache, normalise_cache_kwargs
from hooked_vlm.families import Architecture
from hooked_vlm.fast_attention import install_fast_attention
from hooked_vlm.fast_layers import install_layer_bypass
from hooked_vlm.freed_memory import keep_freed_memory
from hooked_vlm.generation import Sampler, check_generation_options
from hooked_vlm.hook_names import NamesFilter, check_fwd_hooks, names_filter_fn
from hooked_vlm.inputs import VLMInputs, split_inputs
from hooked_vlm.layout import TokenLayout, build_layout
from hooked_vlm.model_configs import ModelConfig
from hooked_vlm.plain_model import PlainModel
from hooked_vlm.validation import (
    ImageTokenMismatchError,
    check_image_inputs,
    check_input_names,
    check_new_tokens,
    check_pos_slice,
    forward_input_names,
)

FwdHooks = Iterable[tuple[str | Callable[[str], bool], Callable[..., Any]]]


@dataclass(frozen=True)
class VLMConfig:
    """Sizes of the language decoder, TransformerLens-style."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_vocab: int
    architecture: str
    native: bool


@dataclass
class RunState:
    """What the forward in flight is computing; read by hook functions.

    ``query_start`` is the absolute position of the first query row: 0 for a full forward,
    the cache length during a KV-cached generation step or a suffix run on a reused prefix.
    """

    query_start: int = 0


class HookedVLM:
    """A supported HF VLM with TL hook points, an :class:`ActivationCache` and a token layout.

    Build with :meth:`from_pretrained` (HF id, local dir or model-config name) or
    :meth:`from_hf` (an in-memory transformers model). Call with HF keyword inputs.
    """

    def __init__(
        self,
        bridge: Any,
        architecture: Architecture,
        processor: Any | None = None,
        model_config: ModelConfig | None = None,
    ) -> None:
        self.bridge = bridge
        self.architecture = architecture
        self.processor = processor
        self.model_config = model_config
        self.state = RunState()
        # a forward with nothing hooked runs the whole HF model, no bridge in between
        self._plain = PlainModel.build(bridge)
        # Hooks TL gates off by default (hook_result, hook_q_input, ...) never fire until
        # enabled on the bridge (bridge.set_use_attn_result(True), ...): not listed here. TL
        # gates by the point's own name, so an alias of a gated point is gated too.
        self._hook_names = frozenset(
            n for n, point in bridge.hook_dict.items()
            if bridge._gated_hook_reason(point.name or n) is None
        )
        self._weight_hooks = _native_weight_hooks(bridge, self._hook_names)
        self.cfg = _vlm_config(bridge.cfg, architecture)
        self._input_names = forward_input_names(self.hf_model)
        first = next(n for n, _ in self.hf_model.named_parameters())
        owner, _, leaf = first.rpartition(".")
        self._param_owner = (self.hf_model.get_submodule(owner), leaf)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_hf(
        cls,
        hf_model: torch.nn.Module,
        processor: Any | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        model_config: ModelConfig | None = None,
        special_tokens: Mapping[str, int] | None = None,
        copy: bool = False,
    ) -> HookedVLM:
        """Wrap an in-memory transformers model.

        **The model is modified in place** unless ``copy=True``: TransformerLens replaces its
        submodules by bridges, unwatched layers then run as plain HF twins with SDPA (so
        ``output_attentions=True`` on it returns no weights any more), and ``dtype``/``device``
        move it. Use ``model.hf_model`` afterwards, or ``copy=True`` to wrap a deep copy and
        leave yours as it was (twice the memory while both live).

        ``special_tokens`` names ids the HF config lacks and no processor gives, by role
        (``boi``, ``eoi``, ``row_break``, ``eof``, ``bos``), e.g. ``{"eoi": 6}`` for a bare
        Janus without its tokenizer.

        Example:
            >>> model = HookedVLM.from_hf(LlavaForConditionalGeneration(config), processor)
            >>> janus = HookedVLM.from_hf(bare_janus, special_tokens={"boi": 5, "eoi": 6})
        """
        arch = loading.architecture_of(hf_model)
        if copy:
            hf_model = copy_module(hf_model)
        torch_dtype = loading.parse_dtype(dtype)
        if torch_dtype is not None:
            hf_model.to(torch_dtype)
        if device is not None:
            hf_model.to(device)
        if any(p.device.type == "cpu" for p in hf_model.parameters()):
            keep_freed_memory()  # caches reuse freed pages (see hooked_vlm.freed_memory)
        name = model_config.name if model_config else type(hf_model).__name__
        loading.attach_token_ids(hf_model.config, processor, model_config)
        loading.set_token_ids(hf_model.config, special_tokens or {})
        bridge = loading.build_bridge(hf_model.eval(), arch, name)
        if arch.install is not None:  # family hook points (Qwen3-VL's DeepStack injections)
            arch.install(bridge)
        install_fast_attention(bridge)
        install_layer_bypass(bridge)  # after fast attention: twins share its SDPA configs
        cache_hook_dict(bridge)
        follow_edits_in_recorded_states(bridge)
        return cls(bridge, arch, processor, model_config)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        processor: bool | Any = True,
        model_config: str | ModelConfig | None = None,
        **hf_kwargs: Any,
    ) -> HookedVLM:
        """Load by model-config name ("chameleon-7b"), local ``save_pretrained`` dir or HF id.

        ``model_config`` (a name from ``model_configs/``) attaches the special tokens and prompt
        templates of a known model to a local copy of its checkpoint; a hub id listed in a model
        config gets its config on its own.

        Only a hub id reaches the network. ``dtype`` defaults to the model config's (bf16 for
        Chameleon) or the checkpoint's. ``hf_kwargs`` go to ``from_pretrained`` (e.g.
        ``device_map="auto"`` to spread a large model over GPUs with accelerate).

        Example:
            >>> model = HookedVLM.from_pretrained("llava-1.5-7b", device="cuda", dtype="bf16")
        """
        source = loading.resolve_source(name_or_path, model_config)
        if dtype is None and source.model_config is not None:
            dtype = source.model_config.dtype
        hf_model, _ = loading.load_hf_model(
            source, loading.parse_dtype(dtype), device, **hf_kwargs
        )
        proc = loading.load_processor(source) if processor is True else (processor or None)
        return cls.from_hf(hf_model, proc, model_config=source.model_config)

    # ------------------------------------------------------------------ introspection
    @property
    def hf_model(self) -> torch.nn.Module:
        """The wrapped transformers model (its modules now carry the bridge's hooks)."""
        return self.bridge.original_model

    @property
    def hook_names(self) -> list[str]:
        """Every hook point name, sorted."""
        return sorted(self._hook_names)

    @property
    def device(self) -> torch.device:
        return self._first_parameter().device

    @property
    def dtype(self) -> torch.dtype:
        return self._first_parameter().dtype

    def _first_parameter(self) -> torch.nn.Parameter:
        """The model's first parameter, read through its owner each time (``.to()`` may swap
        the Parameter object); walking ``parameters()`` costs ~0.1 ms per call."""
        owner, name = self._param_owner
        found = owner._parameters.get(name)
        return found if found is not None else next(self.hf_model.parameters())

    @property
    def tokenizer(self) -> Any | None:
        """The processor's tokenizer (``None`` without a processor)."""
        return getattr(self.processor, "tokenizer", self.processor)

    def to_str_tokens(self, input_ids: Int[Tensor, " pos"]) -> list[str]:
        """The tokens of one sequence as strings, image placeholders included.

        Example:
            >>> model.to_str_tokens(inputs["input_ids"][0])[:6]
        """
        if self.tokenizer is None:
            raise ValueError(
                "this HookedVLM has no processor/tokenizer: pass one to from_hf(model, "
                "processor) or load with from_pretrained."
            )
        return self.tokenizer.convert_ids_to_tokens(input_ids.tolist())

    def to(
        self, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None
    ) -> HookedVLM:
        """Move (and/or cast) the model in place; returns ``self``.

        Example:
            >>> model.to("cuda", dtype="bf16")
        """
        self.hf_model.to(device=device, dtype=loading.parse_dtype(dtype))
        return self

    def layout(
        self,
        input_ids: Int[Tensor, "batch pos"],
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        **extras: Any,
    ) -> TokenLayout:
        """The :class:`TokenLayout` of ``input_ids`` (padding read from ``attention_mask``).

        Emu3 also needs ``image_sizes`` (its end-of-line tokens are image placeholders). The
        layout carries the architecture's patch rule, so ``patch_grid(layout, ...)``
        (:mod:`hooked_vlm.layout.patch_grid`) maps each image's tokens onto the picture.
        Video frames are numbered from ``video_grid_thw`` (Qwen-VL) or, where frames are
        plain images to the model (SmolVLM), from ``video_frames=[frames per example]``:
        ``layout.select("eoi", frame=k)``.
        """
        arch, config = self.architecture, self.hf_model.config
        grids = arch.grid_from_inputs(config, extras) if arch.grid_from_inputs else None
        per_image = arch.tokens_per_image(config) if arch.tokens_per_image else None
        blocks = None
        if arch.attention_blocks is not None:
            blocks = arch.attention_blocks(config, input_ids, extras)
        videos = arch.video_grids(config, extras) if arch.video_grids else None
        return build_layout(
            input_ids, arch.tokens(config), attention_mask, grids, per_image,
            architecture=arch.hf_class, notes=arch.notes, patch_rule=arch.patch_rule(config),
            attention_blocks=blocks, injections=arch.injections(config), videos=videos,
            video_frames=extras.get("video_frames"),
        )

    # ------------------------------------------------------------------ running
    def __call__(self, inputs: Mapping[str, Any] | None = None, **kwargs: Any) -> Tensor:
        return self.forward(inputs, **kwargs)

    def forward(
        self, inputs: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> Float[Tensor, "batch pos vocab"]:
        """Logits ``[batch, pos, vocab]`` for HF-style inputs (a dict and/or keywords).

        Inputs are checked first: a key the model does not take, placeholders without pixels
        or per-image placeholder counts that differ from the images raise before anything runs.

        Example:
            >>> logits = model(input_ids=ids, pixel_values=pixels, attention_mask=mask)
        """
        ids, kw = self._inputs(inputs, kwargs)
        with self._running(kw):
            return self._bridge_call(ids, kw)

    def run_with_cache(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        names_filter: NamesFilter = None,
        cache_device: str | torch.device | None = None,
        pos_slice: int | slice | Sequence[int] | None = None,
        **kwargs: Any,
    ) -> tuple[Float[Tensor, "batch pos vocab"], ActivationCache]:
        """Logits and an :class:`ActivationCache` of the hooks selected by ``names_filter``.

        ``names_filter``: ``None`` (all hooks), a name, a list of names or a predicate.
        ``cache_device`` moves cached activations as they are stored (e.g. ``"cpu"`` for a
        long sequence on a small GPU); ``pos_slice`` keeps only some positions (TL's
        ``Slice``: an int, a slice or a list of positions; query positions for patterns).

        Example:
            >>> logits, cache = model.run_with_cache(inputs, names_filter=lambda n: "resid" in n)
            >>> cache["blocks.3.hook_resid_post"].shape
        """
        ids, kw = self._inputs(inputs, kwargs)
        check_pos_slice(pos_slice, ids.shape[1])
        keep = names_filter_fn(names_filter, self._hook_names)
        options = {"device": cache_device, "pos_slice": pos_slice}
        if "output_attentions" not in kw and not any(map(keep, self._weight_hooks)):
            # TransformerLens asks HF for attention weights whenever it caches (bridges that
            # keep HF's attention read patterns from them); that installs HF's output-capture
            # hooks on every attention module for good, a cost on every later forward.
            kw["output_attentions"] = False
        with self._running(kw):
            return self._bridge_call(ids, kw, cache_filter=keep, cache_options=options)

    def run_with_hooks(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        fwd_hooks: FwdHooks = (),
        **kwargs: Any,
    ) -> Float[Tensor, "batch pos vocab"]:
        """Logits with ``fwd_hooks`` (``[(name_or_filter, fn(tensor, hook))]``) attached.

        A hook returns ``None`` (observe, or edit in place) or a tensor of the activation's
        exact shape and dtype; anything else raises :class:`HookOutputError` naming the hook.

        Example:
            >>> def zero_eoi(pattern, hook):
            ...     pattern[:, :, :, eoi] = 0
            ...     return pattern
            >>> model.run_with_hooks(inputs, fwd_hooks=[("blocks.0.attn.hook_pattern", zero_eoi)])
        """
        with self.hooks(fwd_hooks):
            return self.forward(inputs, **kwargs)

    @torch.no_grad()
    def run_with_kv_cache(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        fwd_hooks: FwdHooks = (),
        **kwargs: Any,
    ) -> tuple[Float[Tensor, "batch pos vocab"], Any]:
        """Logits and the HF KV cache after this forward (``cache=`` continues one in place).

        The cache holds every position of ``inputs`` (appended to the given cache, if any):
        feed it back with the next ids to continue, as :meth:`generate` and
        :class:`~hooked_vlm.interventions.PrefixCache` do.

        Example:
            >>> logits, cache = model.run_with_kv_cache(inputs)
            >>> more = model(input_ids=next_ids, attention_mask=longer_mask, cache=cache)
        """
        ids, kw = self._inputs(inputs, kwargs)
        with self.hooks(fwd_hooks), self._running(kw):
            return self._bridge_call(ids, kw, return_cache=True)

    @contextmanager
    def hooks(self, fwd_hooks: FwdHooks = ()) -> Iterator[HookedVLM]:
        """Attach ``fwd_hooks`` for the duration of a ``with`` block; removed even on error.

        Example:
            >>> with model.hooks([("blocks.2.hook_resid_post", steer)]):
            ...     tokens = model.generate(inputs, max_new_tokens=10)
        """
        checked = check_fwd_hooks(fwd_hooks, self._hook_names)
        with self.bridge.hooks(fwd_hooks=checked):
            yield self

    @contextmanager
    def eager_attention(self) -> Iterator[HookedVLM]:
        """Run every layer's attention through TL's Python recomputation inside the block.

        By default a layer (decoder or vision tower) uses the fused SDPA kernel unless one of
        its attention internals (pattern, scores, rotated q/k) is hooked
        (:mod:`hooked_vlm.fast_attention`). The two
        paths agree to float rounding (~1e-7 in fp32); use this to compare a clean run and a
        pattern edit bit for bit.

        Example:
            >>> with model.eager_attention():
            ...     clean = model(inputs)
        """
        # decoder layers (FastPathAttention) and editable vision towers both honour the flag
        layers = [m for m in self.bridge.modules() if hasattr(type(m), "force_eager")]
        for attn in layers:
            attn.force_eager = True
        try:
            yield self
        finally:
            for attn in layers:
                attn.force_eager = False

    @torch.no_grad()
    def generate(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        max_new_tokens: int = 20,
        fwd_hooks: FwdHooks = (),
        eos_token_id: int | Sequence[int] | None = None,
        pad_token_id: int | None = None,
        do_sample: bool = False,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> Int[Tensor, "batch pos_plus_new"]:
        """Greedy or sampled decoding with a KV cache; ``fwd_hooks`` are active at every step.

        Returns prompt + generated ids, as HF ``generate`` does; rows that finished (EOS) are
        padded with ``pad_token_id`` (the generation config's, else the model's, else EOS, as
        HF). ``do_sample=True`` samples with ``temperature``, ``top_k`` and ``top_p`` (HF's own
        logits warpers), from ``torch.Generator().manual_seed(seed)`` when ``seed`` is given.
        During step ``t`` hooks see only the new query row; ``model.state.query_start`` gives
        its absolute position. Other HF generation options (beams, penalties, ...) raise.

        Example:
            >>> out = model.generate(inputs, max_new_tokens=20)
            >>> sampled = model.generate(inputs, do_sample=True, top_p=0.9, seed=0)
            >>> model.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:])
        """
        sampler = Sampler.build(do_sample, temperature, top_k, top_p, seed, self.device)
        check_generation_options(kwargs)
        check_new_tokens(max_new_tokens)
        ids, kw = self._inputs(inputs, kwargs)
        mask = kw.pop("attention_mask", None)
        mask = torch.ones_like(ids) if mask is None else mask
        eos = self._eos_ids(eos_token_id)
        pad = self._pad_id(pad_token_id, eos)
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        out, step_ids, past = ids, ids, None
        with self.hooks(fwd_hooks), self._running(kw):
            for _ in range(max_new_tokens):
                self.state.query_start = out.shape[1] - step_ids.shape[1]
                logits, past = self._bridge_call(
                    step_ids, {**kw, "attention_mask": mask}, past=past, return_cache=True
                )
                kw = {}  # image inputs are consumed by the first step
                nxt = sampler(out, logits[:, -1])
                if eos:
                    nxt = torch.where(done, torch.tensor(pad, device=nxt.device), nxt)
                    done |= torch.isin(nxt, torch.tensor(eos, device=nxt.device))
                step_ids = nxt[:, None]
                out = torch.cat([out, step_ids], dim=1)
                mask = torch.cat([mask, torch.ones_like(step_ids)], dim=1)
                if eos and bool(done.all()):
                    break
        return out

    # ------------------------------------------------------------------ processor
    def prepare(
        self,
        images: Any | Sequence[Any],
        prompts: str | Sequence[str] | None = None,
        *,
        task: str | None = None,
        processor_kwargs: Mapping[str, Any] | None = None,
        **fields: str,
    ) -> VLMInputs:
        """Run the processor on images and prompts; the result carries its ``.layout``.

        ``prompts`` may be omitted when the model config has a template for ``task``
        ("caption", "vqa", "classify"); ``fields`` fill the template (``question=...``).
        ``processor_kwargs`` add to (and override) the model config's processor options.

        Example:
            >>> inputs = model.prepare([img_a, img_b], task="caption")
            >>> inputs.layout.select("eoi")
        """
        if self.processor is None:
            raise ValueError(
                "this HookedVLM has no processor: pass one to HookedVLM.from_hf(model, "
                "processor) or load with from_pretrained, or build input_ids/pixel_values "
                "yourself and call model.layout(input_ids)."
            )
        # one image (PIL, array, tensor, path) or any sequence of them (a list, a datasets
        # Column, ...): the processor wants a list
        single = isinstance(images, (str, bytes, Tensor, np.ndarray)) or not isinstance(
            images, Iterable
        )
        images = [images] if single else list(images)
        if not images:
            raise ValueError("prepare() got no images: give one image (PIL, array, tensor or "
                             "path) or a list of them")
        if prompts is None:
            if task is None or self.model_config is None:
                raise ValueError("give prompts, or a task with a model config that has templates")
            prompts = [self.model_config.prompt(task, **fields)] * len(images)
        prompts = [prompts] * len(images) if isinstance(prompts, str) else list(prompts)
        extra = dict(self.model_config.processor_kwargs) if self.model_config else {}
        extra.update(processor_kwargs or {})
        if self.architecture.nested_images and len(images) == len(prompts):
            images = [[image] for image in images]  # one image per prompt, as it expects
        batch = self.processor(
            images=images, text=prompts, return_tensors="pt", padding=True, **extra
        )
        # labels (PaliGemma's processor adds them) would make HF compute a training loss
        inputs = VLMInputs(
            {k: v for k, v in batch.items() if isinstance(v, Tensor) and k != "labels"}
        )
        inputs.layout = self.layout(**inputs)
        return inputs

    # ------------------------------------------------------------------ internals
    def _inputs(
        self, inputs: Mapping[str, Any] | None, kwargs: dict[str, Any]
    ) -> tuple[Tensor, dict[str, Any]]:
        """Merged, moved and checked inputs: ``(input_ids, the rest)``."""
        ids, kw = split_inputs(inputs, kwargs, self.device, self.dtype)
        check_input_names(kw, self._input_names, self.cfg.architecture)
        kw = normalise_cache_kwargs(kw)
        check_image_inputs(self, ids, kw)
        return ids, kw

    @contextmanager
    def _running(self, kw: Mapping[str, Any]) -> Iterator[None]:
        """Publish the query offset of the forward in flight (``self.state``) to hook functions."""
        past = get_cache(kw)
        previous = self.state
        self.state = RunState(query_start=past.get_seq_length() if past is not None else 0)
        try:
            yield
        finally:
            self.state = previous

    @contextmanager
    def _lean_forward(self, call_kw: Mapping[str, Any]) -> Iterator[None]:
        """TransformerLens' ``run_with_cache`` (its hooks, its cache) around the HF model with
        its bridges, without TransformerLens' forward, where that would pass ``call_kw`` through
        unchanged (:meth:`PlainModel.takes`): the same path as a forward with hooks."""
        plain = self._plain
        if plain is None or not plain.takes(call_kw):
            yield
            return
        state = self.bridge.__dict__
        state["forward"] = lambda input_ids, **kw: plain(input_ids, kw)  # after TL's hooks
        try:
            yield
        finally:
            del state["forward"]

    def _bridge_call(
        self,
        ids: Tensor,
        kw: dict[str, Any],
        cache_filter: Callable[[str], bool] | None = None,
        past: Any = None,
        return_cache: bool = False,
        cache_options: Mapping[str, Any] | None = None,
    ) -> Any:
        """One bridge forward. With ``return_cache``: ``(logits, kv_cache)``, the cache being
        ``past`` (or a new one) extended in place; hooked-vlm owns it (see :mod:`.compat`)."""
        call_kw = normalise_cache_kwargs(kw)
        if past is not None:
            call_kw[CACHE_KWARG] = past
        elif return_cache and get_cache(call_kw) is None:
            call_kw[CACHE_KWARG] = new_cache(self.hf_model)
        cache = get_cache(call_kw)
        call_kw["use_cache"] = cache is not None  # no throw-away cache on a plain forward
        if self.architecture.prepare_forward is not None:  # e.g. Qwen2-VL's M-RoPE positions
            call_kw = self.architecture.prepare_forward(self.hf_model, ids, call_kw)
        try:
            if cache_filter is not None:
                with self._lean_forward(call_kw):
                    out = self.bridge.run_with_cache(
                        ids, names_filter=cache_filter, **(cache_options or {}), **call_kw
                    )
            elif self._plain is not None and self._plain.takes(call_kw):
                out = self._plain(ids, call_kw)  # no TransformerLens forward around it
            else:
                out = self.bridge(ids, **call_kw)
        except ValueError as err:  # HF's batch-total check (families without a per-image one)
            if "do not match" in str(err) or "features and image tokens" in str(err):
                raise ImageTokenMismatchError(
                    f"the image placeholder tokens of the prompts do not match the image features "
                    f"({err}). Build inputs with model.prepare(images, prompts) (the processor "
                    "expands each image to its placeholders), or see README 'Token layouts'."
                ) from err
            raise
        return (out, cache) if return_cache else out

    def _eos_ids(self, eos_token_id: int | Sequence[int] | None) -> list[int]:
        if eos_token_id is None:
            gen = getattr(self.hf_model, "generation_config", None)
            eos_token_id = getattr(gen, "eos_token_id", None)
        if eos_token_id is None:
            return []
        return [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)

    def _pad_id(self, pad_token_id: int | None, eos: list[int]) -> int:
        """HF's padding of finished rows: the given id, the generation config's, the model
        config's, else the first EOS id."""
        if pad_token_id is not None:
            return int(pad_token_id)
        gen = getattr(self.hf_model, "generation_config", None)
        config = self.hf_model.config
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        for source in (gen, text, config):
            value = getattr(source, "pad_token_id", None)
            if value is not None:
                return int(value)
        return eos[0] if eos else 0

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"HookedVLM({c.architecture}, n_layers={c.n_layers}, n_heads={c.n_heads}, "
            f"d_model={c.d_model}, native={c.native}, dtype={self.dtype}, device={self.device})"
        )


def _native_weight_hooks(bridge: Any, names: frozenset[str]) -> tuple[str, ...]:
    """Pattern and score hook names of attention bridges that read HF's attention weights
    (``maintain_native_attention``): caching one of them needs ``output_attentions``."""
    points = {
        id(point)
        for module in bridge.modules()
        if getattr(module, "maintain_native_attention", False)
        for point in (getattr(module, name, None) for name in ("hook_pattern", "hook_attn_scores"))
        if point is not None
    }
    return tuple(n for n in names if id(bridge.hook_dict[n]) in points)


def _vlm_config(tl_cfg: Any, arch: Architecture) -> VLMConfig:
    return VLMConfig(
        n_layers=tl_cfg.n_layers,
        n_heads=tl_cfg.n_heads,
        n_kv_heads=getattr(tl_cfg, "n_key_value_heads", None) or tl_cfg.n_heads,
        d_model=tl_cfg.d_model,
        d_head=tl_cfg.d_head,
        d_vocab=tl_cfg.d_vocab,
        architecture=arch.hf_class,
        native=arch.native,
    )
