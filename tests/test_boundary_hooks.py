"""Module-boundary hook points (residuals, sublayer outputs, projections) fired from PyTorch
hooks on the plain HF layer: every cached value and every edit equals the bridged path's, for
every family the suite builds, and the layer really stays the plain HF module."""

from __future__ import annotations

import re

import pytest
import torch

from hooked_vlm.fast_layers import boundary_hook_names, bridged_hook_points, bypassed

from .conftest import ALL_ARCHS, Wrapped, wrap

TOL = 1e-5  # fp32; the bridged path recomputes norms in Python, the HF module does not


@pytest.fixture(scope="module", params=ALL_ARCHS)
def w(request) -> Wrapped:
    return wrap(request.param)


@pytest.fixture
def bridged_calls(w: Wrapped, monkeypatch) -> list[int]:
    """Indices (in ``fast_layers.bypassed`` order) of the layers and outer components (embed,
    final norm, ...) that ran bridged."""
    calls: list[int] = []
    for i, layer in enumerate(bypassed(w.model.bridge)):
        if "_bypass_twin" not in layer.__dict__:
            continue
        defaults = layer.forward.__func__.__kwdefaults__
        original = defaults["_bridged"]  # the bridged forward, bound when installed

        def counting(*args, _i=i, _original=original, **kwargs):
            calls.append(_i)
            return _original(*args, **kwargs)

        monkeypatch.setitem(defaults, "_bridged", counting)
    return calls


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    keep = torch.isfinite(a) & (a.abs() < 1e30)
    return 0.0 if not keep.any() else (a - b)[keep].abs().max().item()


def _boundary(w: Wrapped) -> list[str]:
    return sorted(boundary_hook_names(w.model.bridge) & set(w.model.hook_names))


def test_residual_stream_is_a_module_boundary_in_every_layer(w: Wrapped):
    names = set(_boundary(w))
    for layer in range(w.model.cfg.n_layers):
        for point in ("hook_resid_pre", "hook_resid_post"):
            assert f"blocks.{layer}.{point}" in names


def test_cached_values_equal_the_bridged_path(w: Wrapped, bridged_calls: list[int]):
    names = _boundary(w)
    with torch.no_grad():
        logits, fast = w.model.run_with_cache(w.inputs, names_filter=names)
        assert bridged_calls == []  # every layer stayed the plain HF module
        with bridged_hook_points(w.model.bridge):
            ref_logits, bridged = w.model.run_with_cache(w.inputs, names_filter=names)
    assert bridged_calls  # the comparison did run the bridge
    assert sorted(fast.keys()) == sorted(bridged.keys())
    assert len(fast.keys()) > 0
    worst = {k: _close(fast[k], bridged[k]) for k in fast.keys()}
    assert max(worst.values()) <= TOL, {k: v for k, v in worst.items() if v > TOL}
    assert _close(logits, ref_logits) <= TOL


def _editing_hooks(names: list[str], seen: dict[str, torch.Tensor]) -> list:
    """One edit per hook point, each a different scale: half return a new tensor, half edit
    in place (both are TL's edit semantics)."""

    def make(i: int, name: str):
        scale = 1.0 + 0.01 * ((i % 7) + 1)

        def hook(x, hook):
            seen[name] = x.detach().clone()
            if not x.is_floating_point():  # positions (Qwen3-VL's pos_embed input): observe
                return None
            if i % 2:
                x.mul_(scale)
                return None
            return x * scale

        return hook

    return [(name, make(i, name)) for i, name in enumerate(names)]


def test_every_edit_has_the_same_effect_on_both_paths(w: Wrapped, bridged_calls: list[int]):
    names = _boundary(w)
    seen_fast: dict[str, torch.Tensor] = {}
    seen_bridged: dict[str, torch.Tensor] = {}
    def fresh() -> dict:  # an in-place edit of the pixels' hook edits the caller's tensor
        return {k: v.clone() for k, v in w.inputs.items()}

    with torch.no_grad():
        clean = w.model(w.inputs)
        fast = w.model.run_with_hooks(fresh(), fwd_hooks=_editing_hooks(names, seen_fast))
        assert bridged_calls == []
        with bridged_hook_points(w.model.bridge):
            bridged = w.model.run_with_hooks(
                fresh(), fwd_hooks=_editing_hooks(names, seen_bridged)
            )
    assert _close(fast, clean) > 1e-3  # the edits do change the output
    assert _close(fast, bridged) <= 1e-4 * max(1.0, bridged.abs().max().item())
    assert sorted(seen_fast) == sorted(seen_bridged)
    worst = {k: _close(seen_fast[k], seen_bridged[k]) for k in seen_fast}
    assert max(worst.values()) <= 1e-4, {k: v for k, v in worst.items() if v > 1e-4}


@pytest.mark.parametrize("w", ["llava"], indirect=True)
def test_backward_hooks_and_reset_behave_as_on_the_bridge(w: Wrapped):
    model = w.model
    names = ["blocks.0.hook_resid_post", "blocks.1.hook_attn_out", "blocks.0.attn.hook_q"]
    hf_hooks = _hook_count(model.hf_model)

    def grads() -> dict[str, torch.Tensor]:
        got: dict[str, torch.Tensor] = {}
        for name in names:
            model.bridge.add_hook(
                name, lambda g, hook, _n=name: got.__setitem__(_n, g.clone()), dir="bwd"
            )
        try:
            model(w.inputs).sum().backward()
        finally:
            model.bridge.reset_hooks()
        return got

    fast = grads()
    with bridged_hook_points(model.bridge):
        bridged = grads()
    assert sorted(fast) == sorted(bridged) == sorted(names)
    for name in names:
        assert _close(fast[name], bridged[name]) <= 1e-4
    model.hf_model.zero_grad(set_to_none=True)

    def boom(x, hook):
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"), torch.no_grad():
        model.run_with_hooks(w.inputs, fwd_hooks=[("blocks.1.hook_resid_mid", boom)])
    assert _hook_count(model.hf_model) == hf_hooks  # no PyTorch hook left behind
    assert not any(model.bridge.hook_dict[n]._forward_hooks for n in model.hook_names)


def _hook_count(module: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def test_with_nothing_hooked_the_whole_hf_model_runs_and_computes_the_same(
    w: Wrapped, bridged_calls: list[int], monkeypatch
):
    plain = w.model._plain
    assert plain is not None  # every family the suite builds skips the bridge when unhooked
    modules, name, plain_module, _ = plain.swaps[0]
    swapped: list[bool] = []  # seen from the root HF module, called on both paths
    handle = w.model.hf_model.register_forward_pre_hook(
        lambda module, args: swapped.append(modules[name] is plain_module)
    )
    try:
        with torch.no_grad():
            whole = w.model(w.inputs)
            monkeypatch.setattr(w.model, "_plain", None)  # each component through its bridge
            parts = w.model(w.inputs)
    finally:
        handle.remove()
    assert swapped == [True, False]  # the bridges swapped out, then each routing itself
    assert modules[name] is not plain_module  # and swapped back
    assert bridged_calls == []
    assert torch.equal(whole, parts)


@pytest.mark.parametrize("where", ["decoder", "vision"])
def test_a_hooked_forward_takes_out_every_bridge_nothing_watches(
    w: Wrapped, where: str, monkeypatch
):
    """With one hook (the last decoder layer's or the first vision layer's output), the layer
    holding it is the one component whose bridge routes itself (the others, a vision tower
    around a hooked layer included, are swapped out for the call, as with nothing hooked); the
    logits and the hooked value equal those of every component through its bridge."""
    if where == "decoder":
        name = f"blocks.{len(w.model.bridge.blocks) - 1}.hook_resid_post"
    else:
        name = next((n for n in w.model.hook_names
                     if re.fullmatch(r"vision\w*\.\w+\.0\.hook_resid_post", n)), None)
        if name is None:
            pytest.skip("no vision layer hook points in this family")
    with torch.no_grad(), w.model.eager_attention():
        w.model(w.inputs)  # every block bridged once: TL wires capture hooks and leaves them
    assert any(b.__dict__.get("_capture_hook_handles") for b in w.model.bridge.blocks)
    plain = w.model._plain
    point = w.model.bridge.hook_dict[name]
    layers = [m for m in bypassed(w.model.bridge) if "_bypass_twin" in m.__dict__]
    holder = next(i for i, m in enumerate(layers) if any(p is point for p in m.modules()))
    routed: list[int] = []
    for i, layer in enumerate(layers):
        route = layer.__dict__["_bypass_route"]
        monkeypatch.setitem(layer.__dict__, "_bypass_route",
                            lambda _route=route, _i=i: (routed.append(_i), _route())[1])
    seen: list[torch.Tensor] = []
    hooks = [(name, lambda x, hook: seen.append(x.clone()))]
    with torch.no_grad():
        partial = w.model.run_with_hooks(w.inputs, fwd_hooks=hooks)
        assert sorted(set(routed)) == [holder]
        assert all(modules[name] is bridged for modules, name, _, bridged in plain.swaps)
        monkeypatch.setattr(w.model, "_plain", None)  # each component through its bridge
        whole = w.model.run_with_hooks(w.inputs, fwd_hooks=hooks)
    assert len(set(routed)) > 1
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])
    assert torch.equal(partial, whole)
