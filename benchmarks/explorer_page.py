"""Size and cost of the explorer page for one 7B-shaped example, on random weights.

The page's size depends on the shapes only (text tokens T after the image, layers L, heads H,
image patches P, lens tokens k, the picture), not on d_model: this builds a LLaVA with
LLaVA-1.5-7B's sequence shapes (CLIP 336 px / 14 px -> P = 576 image tokens, 32 layers x 32
heads, Llama's 32064-token vocabulary) but a narrow decoder (d_model 256 by default), so it
runs on a CPU, then counts the forwards that building the page takes and prints the page's
bytes by part next to the exact formula of what it embeds. ``--full`` builds the real 7B
widths (``medium.llava_7b_shape``: a GPU and ~15 GB).

    python benchmarks/explorer_page.py                   # 26 text tokens (22 after the image)
    python benchmarks/explorer_page.py --last-tokens 5   # only the last 5 offered
    python benchmarks/explorer_page.py --text-tokens 40 --full --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, LlamaConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plotly.offline import get_plotlyjs  # noqa: E402

from hooked_vlm import HookedVLM  # noqa: E402
from hooked_vlm.analysis.token_attention import text_queries  # noqa: E402
from hooked_vlm.data.synthetic import synthetic_dataset  # noqa: E402
from hooked_vlm.explorer import collect  # noqa: E402
from hooked_vlm.viz.explorer import explorer_html, explorer_payload  # noqa: E402
from medium import _llava, llava_7b_shape  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text-tokens", type=int, default=26)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--last-tokens", type=int, default=None,
                        help="offer only the last N text tokens (collect's queries=)")
    parser.add_argument("--full", action="store_true", help="LLaVA-1.5-7B's real widths")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="also write the page here")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    if args.full:
        hf, inputs = llava_7b_shape(text_tokens=args.text_tokens, device=args.device)
    else:
        vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                  num_attention_heads=4, image_size=336, patch_size=14)
        text = LlamaConfig(vocab_size=32064, hidden_size=args.d_model,
                           intermediate_size=2 * args.d_model, num_hidden_layers=32,
                           num_attention_heads=32, num_key_value_heads=32,
                           max_position_embeddings=2048)
        hf, inputs = _llava(vision, text, 1, args.text_tokens, "eager", 0)
        hf.to(args.device)
    model = HookedVLM.from_hf(hf)
    picture = synthetic_dataset("test", n=1)[0]["image"].resize((336, 336))
    calls = []
    forward = model._bridge_call

    def counted(*a, **kw):
        calls.append(1)
        return forward(*a, **kw)

    model._bridge_call = counted
    start = time.perf_counter()
    queries = None
    if args.last_tokens:
        queries = text_queries(model.layout(**inputs), 0)[-args.last_tokens :].tolist()
    data = collect(model, inputs, images=picture, k=args.k, queries=queries)
    collect_s = time.perf_counter() - start
    start = time.perf_counter()
    page = explorer_html(data)
    page_s = time.perf_counter() - start
    if args.out:
        args.out.write_text(page, encoding="utf-8")
    payload = explorer_payload(data)
    t, n_layers, n_heads, p = data.weights.shape
    lens = payload["lens"]
    parts = {  # base64 characters embedded in the page
        "attention, per head (T*L*H*P bytes)": len(payload["weights"]["heads"]),
        "attention, head sum (T*L*P bytes)": len(payload["weights"]["sum"]),
        "attention shares (2*T*L*H*5 bytes)": len(payload["shares"]),
        "logit lens ids + probs (L*P*k*(2+1) bytes)": len(lens["ids"]) + len(lens["probs"]),
        "pictures (PNG)": sum(len(q["picture"] or "") for q in payload["panels"]),
    }
    total = len(page.encode())
    rest = total - sum(parts.values())
    raw = t * n_layers * n_heads * p + t * n_layers * p
    print(f"shape: T={t} text tokens, L={n_layers}, H={n_heads}, P={p}, k={args.k}; "
          f"forwards to build it: {len(calls)}")
    print(f"collect (one forward + reductions + lens): {collect_s:.1f} s; page: {page_s:.1f} s")
    for name, size in parts.items():
        print(f"  {name:46s} {size / 1e6:7.2f} MB")
    print(f"  {'plotly.js, page script, tokens, the rest':46s} {rest / 1e6:7.2f} MB "
          f"(plotly.js {len(get_plotlyjs()) / 1e6:.2f} MB)")
    print(f"page: {total / 1e6:.2f} MB. By formula, attention: T*L*H*P + T*L*P = {raw:,} bytes "
          f"= {4 * -(-raw // 3) / 1e6:.2f} MB as base64")


if __name__ == "__main__":
    main()
