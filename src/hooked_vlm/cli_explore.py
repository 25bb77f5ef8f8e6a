"""``hooked-vlm explore``: one prompt and its pictures -> the explorer page, offline.

Registered in :mod:`hooked_vlm.cli` in one line; everything heavy is imported inside, so
``hooked-vlm --help`` stays instant (the :mod:`hooked_vlm.explorer` package imports torch).

Example:
    hooked-vlm explore --model tiny-native --image cat.png \\
        --prompt "USER : <image> describe the image . ASSISTANT :" --out page.html
    hooked-vlm explore --model llava-1.5-7b --image a.jpg --task vqa \\
        --question "what is on the table ?" --device cuda --out page.html
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def explore_command(
    model: Annotated[str, typer.Option(help="model-config name (e.g. tiny-native), local "
                                       "save_pretrained directory or HF id")],
    image: Annotated[list[Path], typer.Option(help="a picture; repeat for several images in "
                                              "one prompt (in prompt order)")],
    out: Annotated[Path, typer.Option(help="the page to write")] = Path("explorer.html"),
    prompt: Annotated[str | None, typer.Option(
        help="the prompt, with the model's image placeholder (e.g. <image>) once per picture"
    )] = None,
    task: Annotated[str | None, typer.Option(
        help="instead of --prompt: the model config's template (caption, vqa, classify)"
    )] = None,
    question: Annotated[str | None, typer.Option(help="the question of --task vqa")] = None,
    model_config: Annotated[str | None, typer.Option(
        help="model config for a local checkpoint (special tokens, prompt templates)")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1, ...")] = None,
    dtype: Annotated[str | None, typer.Option(help="fp32, bf16, fp16 (default: the model "
                                              "config's)")] = None,
    k: Annotated[int, typer.Option(help="logit-lens tokens kept per patch", min=1)] = 3,
    last_tokens: Annotated[int | None, typer.Option(
        help="offer only the last N text tokens (a smaller page; default: every text token "
        "after the first image)", min=1)] = None,
) -> None:
    """One prompt and its pictures as an interactive page: attention per text token, layer and
    head on the picture, attention shares, per-head image reading, the logit lens."""
    from rich.console import Console

    console = Console()
    missing = [str(p) for p in image if not p.is_file()]
    if missing:
        raise typer.BadParameter(f"no such picture: {', '.join(missing)}", param_hint="--image")
    if (prompt is None) == (task is None):
        raise typer.BadParameter("give exactly one of --prompt and --task", param_hint="--prompt")
    if not out.parent.is_dir():
        raise typer.BadParameter(f"the folder {out.parent} does not exist", param_hint="--out")
    try:
        page, data = _build(model, image, out, prompt, task, question, model_config, device,
                            dtype, k, last_tokens)
    except ValueError as err:  # bad prompt, model or layout: say what, not a traceback
        console.print(f"[red]cannot explore[/]: {err}")
        raise typer.Exit(code=1) from None
    size = page.stat().st_size / 1e6
    console.print(f"{len(data.queries)} text tokens x {data.n_layers} layers x {data.n_heads} "
                  f"heads over {len(data.patches)} patches: [bold]{page}[/] ({size:.1f} MB)")


def _build(model_name: str, paths: list[Path], out: Path, prompt: str | None, task: str | None,
           question: str | None, model_config: str | None, device: str | None,
           dtype: str | None, k: int, last_tokens: int | None) -> tuple[Path, Any]:
    from PIL import Image

    from hooked_vlm.analysis.token_attention import text_queries
    from hooked_vlm.explorer.api import write_page
    from hooked_vlm.explorer.collection import collect
    from hooked_vlm.model import HookedVLM

    model = HookedVLM.from_pretrained(model_name, device=device, dtype=dtype,
                                      model_config=model_config)
    pictures = [Image.open(p).convert("RGB") for p in paths]
    if prompt is not None:
        _check_placeholders(model, prompt, len(pictures))
        inputs = model.prepare([pictures], prompt)
    else:
        fields = {"question": question} if question is not None else {}
        inputs = model.prepare([pictures], task=task, **fields)
    queries = None
    if last_tokens is not None:
        queries = text_queries(inputs.layout, 0)[-last_tokens:].tolist()
    data = collect(model, inputs, pictures, k=k, queries=queries,
                   title=f"{model_name}: {prompt or task}")
    return write_page(data, out), data


def _check_placeholders(model: Any, prompt: str, n_pictures: int) -> None:
    """The prompt must hold the model's image placeholder once per picture (when the model
    config names it; otherwise the processor checks)."""
    config = model.model_config
    placeholder = config.special_tokens.get("image") if config is not None else None
    if placeholder is None:
        return
    found = prompt.count(placeholder)
    if found != n_pictures:
        example = config.prompts.get("caption", f"USER: {placeholder} describe the image.")
        raise ValueError(
            f"the prompt holds {found} image placeholder(s) {placeholder!r} for {n_pictures} "
            f"picture(s): put one where each picture goes, e.g. {example!r}, or use --task."
        )
