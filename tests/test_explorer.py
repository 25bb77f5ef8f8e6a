"""The explorer: one forward, reductions equal to the full pattern, the logit lens equal to a
hand computation of unembed(ln_final(resid)), the page's data round trip, every view of
several images, and the page itself in headless Chromium (tests/browser.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hooked_vlm import HookedVLM
from hooked_vlm.analysis.token_attention import KEY_GROUPS, key_groups
from hooked_vlm.cli import app
from hooked_vlm.data.synthetic import synthetic_dataset
from hooked_vlm.explorer import ExplorerData, collect, write_page
from hooked_vlm.layout import LayoutError, patch_grids
from hooked_vlm.viz.explorer import decode_weights, explorer_payload
from tests.browser import check_report
from tests.conftest import wrap


@dataclass
class Explored:
    name: str
    model: HookedVLM
    inputs: Any
    data: ExplorerData
    forwards: int  # model forwards that collect() ran
    logits: torch.Tensor  # a reference run with the full cache (test only)
    cache: Any


def pictures(n: int = 1) -> list:
    return list(synthetic_dataset("test", n=n)["image"])


@pytest.fixture(scope="module", params=["tiny-native", "tiny-llava"])
def explored(request) -> Explored:
    model = HookedVLM.from_pretrained(request.param)
    picture = pictures()[0]
    inputs = model.prepare(picture, task="caption")
    calls = []
    forward = model._bridge_call  # every forward of a HookedVLM goes through it

    def counted(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    model._bridge_call = counted
    try:
        data = collect(model, inputs, images=picture, k=3)
    finally:
        del model._bridge_call
    with torch.no_grad():
        logits, cache = model.run_with_cache(
            inputs, names_filter=lambda n: n.endswith(("attn.hook_pattern", "hook_resid_post")))
    return Explored(request.param, model, inputs, data, len(calls), logits, cache)


def test_collect_runs_one_forward(explored):
    d = explored.data
    assert explored.forwards == 1
    t, n_layers, n_heads, p = d.weights.shape
    assert (n_layers, n_heads, p) == (4, 4, 64) and t == len(d.queries) > 0
    assert d.shares.shape == (t, n_layers, n_heads, len(KEY_GROUPS))
    assert d.lens_ids.shape == d.lens_probs.shape == (n_layers, p, 3)
    assert d.gate == ("EOI" if explored.name == "tiny-native" else "last image token")


def test_reductions_in_the_hooks_equal_the_full_pattern(explored):
    d, layout = explored.data, explored.inputs.layout
    groups = key_groups(layout, 0)
    assert bool((groups.sum(0) <= 1).all())  # the groups do not overlap
    for layer in range(d.n_layers):
        rows = explored.cache[f"blocks.{layer}.attn.hook_pattern"][0][:, d.queries]  # [h, t, k]
        want = rows[..., d.patches].permute(1, 0, 2)  # [t, h, p]
        assert torch.allclose(torch.from_numpy(d.weights[:, layer]), want, atol=1e-6)
        for g in range(len(KEY_GROUPS)):
            share = rows[..., groups[g]].sum(-1).T  # [t, h]
            assert torch.allclose(torch.from_numpy(d.shares[:, layer, :, g]), share, atol=1e-5)
    assert np.allclose(d.shares.sum(-1), 1, atol=1e-5)  # every real key is in one group
    gate = layout.select("eoi" if d.gate == "EOI" else "last_image")[0]
    assert int(groups[KEY_GROUPS.index("gate")].nonzero()) == int(gate)


@torch.no_grad()
def test_logit_lens_is_unembed_of_ln_final_by_hand(explored):
    """A few patches per layer: RMSNorm and the unembedding written out from the weights."""
    d, hf = explored.data, explored.model.hf_model
    norm = explored.model.bridge.ln_final.original_component
    head = hf.get_output_embeddings()
    # Chameleon's own head sets its image-code logits to the minimum: the lens leaves them out
    mapping = getattr(hf.model, "vocabulary_mapping", None)
    excluded = list(mapping.image_tokens) if mapping is not None else []
    assert (len(excluded) > 0) == (explored.name == "tiny-native")
    few = [0, len(d.patches) // 2, len(d.patches) - 1]
    for layer in range(d.n_layers):
        x = explored.cache[f"blocks.{layer}.hook_resid_post"][0, d.patches[few]].float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        logits = (norm.weight * x) @ head.weight.T
        if head.bias is not None:
            logits = logits + head.bias
        logits[:, excluded] = float("-inf")
        top = logits.softmax(-1).topk(3)
        assert np.array_equal(d.lens_ids[layer, few], top.indices.numpy())
        assert np.allclose(d.lens_probs[layer, few], top.values.numpy(), atol=1e-5)
    # the last layer's lens is the model's own prediction at each patch
    own = explored.logits[0, d.patches].argmax(-1).numpy()
    assert np.array_equal(d.lens_ids[-1, :, 0], own)
    assert all(int(i) in d.vocab for i in np.unique(d.lens_ids))


def test_page_payload_round_trips_within_the_quantization(explored):
    d = explored.data
    payload = explorer_payload(d)
    heads, summed = decode_weights(payload)
    for got, want in ((heads, d.weights), (summed, d.weights.sum(2))):
        bound = want.max(-1, keepdims=True) / 255 + 1e-7  # sqrt steps: < max / 255 each
        assert (np.abs(got - want) <= bound).all()
    assert payload["lens"]["vocab"] == [d.vocab[i] for i in sorted(d.vocab)]
    assert payload["panels"][0]["picture"].startswith("data:image/png;base64,")
    assert len(payload["panels"][0]["index"]) == 64


@pytest.mark.parametrize("family", ["emu3", "llava_next", "idefics3"])
def test_every_view_of_rows_anyres_and_tiles_is_a_panel(family):
    """Emu3 rows (EOL tokens skipped), LLaVA-NeXT's high-res + base views, Idefics3's tiles +
    global image: each panel's cells name exactly the positions of its patch grid."""
    w = wrap(family)
    layout = w.model.layout(**w.inputs)
    data = collect(w.model, w.inputs, example=1, k=1)
    views = patch_grids(layout, 1, **w.inputs)
    assert [p.view for p in data.panels] == list(views)
    for panel in data.panels:
        assert np.array_equal(data.patches[panel.index], views[panel.view].positions.numpy())
        assert panel.tiles == views[panel.view].tiles and panel.picture is None
    covered = np.concatenate([p.index.ravel() for p in data.panels])
    assert sorted(covered) == list(range(len(data.patches)))  # every patch drawn once
    assert data.tokens[0].startswith("#")  # no tokenizer: ids


def test_bad_requests_say_what_is_wrong():
    model = HookedVLM.from_pretrained("tiny-native")
    inputs = model.prepare(pictures(2), task="caption")
    with pytest.raises(ValueError, match="3 picture"):
        collect(model, inputs, images=pictures(3))
    with pytest.raises(ValueError, match="example=5"):
        collect(model, inputs, example=5)
    with pytest.raises(ValueError, match=r"\[2\] are not text positions"):
        collect(model, inputs, queries=[2])  # BOI, before the image
    ids = inputs["input_ids"][:, :-8]  # cut before the image ends: no text after it
    with pytest.raises(LayoutError, match="no text after its first image"):
        collect(model, {**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)})


def test_chosen_queries_and_the_widget(explored, tmp_path):
    from traitlets import TraitError

    import hooked_vlm.explorer
    from hooked_vlm.viz.explorer_widget import ExplorerWidget

    assert callable(hooked_vlm.explorer.collect)  # the function, never a submodule of its name
    last = int(explored.data.queries[-1])
    one = collect(explored.model, explored.inputs, queries=[last])
    assert one.queries.tolist() == [last]
    assert np.allclose(one.weights[0], explored.data.weights[-1], atol=1e-6)
    view = ExplorerWidget(explored.data)
    assert 'id="explorer-data"' in view.page and "export default" in view._esm
    assert (view.token, view.layer, view.head) == (len(explored.data.queries) - 1, 2, -1)
    view.head = 3
    with pytest.raises(TraitError, match="outside -1..3"):
        view.head = 4
    assert view.save(tmp_path / "w.html").read_text() == view.page


# ---------------------------------------------------------------------- the page in Chromium


def test_page_draws_and_follows_the_selection_in_chromium(explored, browser, tmp_path):
    d = explored.data
    path = write_page(d, tmp_path / "page.html")
    text = path.read_text()
    assert "<script src" not in text and "<link" not in text  # nothing fetched: opens offline
    page = check_report(browser, path, fragment="token=0&layer=1&head=all", min_figures=5)
    assert page.evaluate("hookedVlmExplorer.state()") == {"token": 0, "layer": 1, "head": -1,
                                                          "panel": 0}
    drawn = "document.getElementById('{}').data.slice(-1)[0].z"
    before = page.evaluate(drawn.format("fig-focus")), page.evaluate(drawn.format("fig-heads"))
    last = len(d.queries) - 1
    page.evaluate(f"hookedVlmExplorer.select({{token: {last}, head: 2}})")
    after = page.evaluate(drawn.format("fig-focus")), page.evaluate(drawn.format("fig-heads"))
    assert before[0] != after[0] and before[1] != after[1]
    # what is drawn is the data: this token's weights on the grid, and its heads' reading
    grid = d.panels[0].index
    want = d.weights[last, 1, 2][grid]
    assert np.allclose(after[0], want, atol=want.max() / 255 + 1e-7)
    assert np.allclose(after[1], d.reading()[last], atol=1e-4)
    # every layer on one colour scale: the scale's top is the largest weight of any layer
    scale = page.evaluate("document.getElementById('fig-layers').layout.coloraxis.cmax")
    assert scale == pytest.approx(d.weights[last, :, 2][:, grid].max(), rel=0.01)
    # a click on a token, and the slider, select tokens too
    page.evaluate("document.querySelector('#tokens .q').click()")
    assert page.evaluate("hookedVlmExplorer.state()")["token"] == 0
    page.evaluate("const s = document.getElementById('token-slider'); s.value = 2; "
                  "s.dispatchEvent(new Event('input'))")
    assert page.evaluate("hookedVlmExplorer.state()")["token"] == 2
    page.evaluate(f"hookedVlmExplorer.select({{token: {last}}})")
    # a click on a layer x head cell selects that head; the URL fragment follows
    page.evaluate("document.getElementById('fig-heads').emit('plotly_click', "
                  "{points: [{x: 3, y: 2}]})")
    assert page.evaluate("hookedVlmExplorer.state()")["head"] == 3
    assert page.evaluate("location.hash") == f"#token={last}&layer=2&head=3&panel=0"
    assert not page.errors()


def test_cli_writes_a_page_for_two_images_that_draws_in_chromium(browser, tmp_path):
    for i, picture in enumerate(pictures(2)):
        picture.save(tmp_path / f"{i}.png")
    out = tmp_path / "two.html"
    prompt = "USER : <image> and <image> describe the image . ASSISTANT :"
    args = ["explore", "--model", "tiny-native", "--image", str(tmp_path / "0.png"),
            "--image", str(tmp_path / "1.png"), "--prompt", prompt, "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "128 patches" in result.output and out.exists()
    page = check_report(browser, out, fragment="panel=1&token=0", min_figures=5)
    labels = page.evaluate("Array.from(document.querySelectorAll('#panel-select option'))"
                           ".map(o => o.textContent)")
    assert labels == ["image 1, image", "image 2, image"]
    # "and" sits between the pictures: a causal model's token cannot see the second one
    assert np.allclose(page.evaluate("hookedVlmExplorer.focusMap()"), 0)
    bad = CliRunner().invoke(app, [*args[:-4], "--prompt", "USER : hello", "--out", str(out)])
    assert bad.exit_code == 1 and "image placeholder" in bad.output



def test_readme_explorer_snippet_runs(tmp_path, monkeypatch):
    from tests.test_readme_cli import _readme_code

    monkeypatch.chdir(tmp_path)
    with torch.enable_grad():
        exec(compile(_readme_code("Exploring one example"), "README-explore", "exec"), {})
    assert (tmp_path / "page.html").stat().st_size > 1e6


_HOST = """<!DOCTYPE html><html><body><div id="host"></div>
<script type="application/json" id="widget">{state}</script>
<script type="module">
// anywidget's side of the widget, as small as the ESM needs: get / set / on / save_changes
const state = JSON.parse(document.getElementById("widget").textContent);
const handlers = {{}};
window.saved = 0;
window.widgetState = state;
const model = {{
  get: (key) => state[key],
  set: (key, value) => {{
    const old = state[key];
    state[key] = value;
    if (old !== value) (handlers["change:" + key] || []).forEach((f) => f());
  }},
  on: (event, f) => (handlers[event] = handlers[event] || []).push(f),
  save_changes: () => {{ window.saved += 1; }},
}};
window.widgetModel = model;
const url = URL.createObjectURL(new Blob([state._esm], {{type: "text/javascript"}}));
const module = await import(url);
module.default.render({{model, el: document.getElementById("host")}});
</script></body></html>
"""


@pytest.mark.parametrize("explored", ["tiny-llava"], indirect=True)
def test_widget_and_page_keep_one_selection_in_chromium(explored, browser, tmp_path):
    """The widget's front end (its ESM, under a stand-in for anywidget's model) hosts the page
    in an iframe: Python-side changes reach the page, clicks in the page reach Python."""
    import json

    from hooked_vlm.viz.explorer_widget import ExplorerWidget

    view = ExplorerWidget(explored.data)
    state = {key: getattr(view, key) for key in ("page", "height", "token", "layer", "head",
                                                  "panel", "_esm")}
    host = tmp_path / "host.html"
    host.write_text(_HOST.format(state=json.dumps(state).replace("</", "<\\/")))
    page = browser.open(host)
    inner = "document.querySelector('iframe').contentWindow"
    page.wait_for(f"{inner}.document.body.dataset.ready")
    page.evaluate("widgetModel.set('token', 1); widgetModel.set('head', 3)")  # from Python
    assert page.wait_for(f"{inner}.hookedVlmExplorer.state().head === 3 && "
                         f"{inner}.hookedVlmExplorer.state()")["token"] == 1
    page.evaluate(f"{inner}.hookedVlmExplorer.select({{layer: 0, head: -1}})")  # a click
    page.wait_for("window.saved > 0")
    assert page.evaluate("[widgetState.layer, widgetState.head, widgetState.token]") == [0, -1, 1]
    assert not page.errors()
