"""Generate README's supported-models table from model_configs/ (so it cannot drift).

Each row is one model config: family, HF id, BOI / EOI (and row / EOL) token strings from the
YAML, the family's gate candidate (the EOI analogue a Narrow Gate study reads), the vision-side
hook names and what is editable, from the family modules (hooked_vlm/families/).
Rows for families without a transformers class (VILA-U) say what support would need.

Usage:
    python scripts/models_table.py            # rewrite README between the markers
    python scripts/models_table.py --check    # exit 1 when README's table is stale
    python scripts/models_table.py --print    # print the table only
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hooked_vlm.families import get_architecture
from hooked_vlm.model_configs import list_model_configs, load_model_config

START, END = "<!-- models-table:start -->", "<!-- models-table:end -->"
README = Path(__file__).resolve().parents[1] / "README.md"
HEADER = (
    "| Family | Model config | HF id | BOI / EOI | Rows (EOL / EOF) | Gate (EOI analogue) "
    "| Vision-side hooks | Editable patterns |\n|---|---|---|---|---|---|---|---|"
)
# Families with no transformers class: what hooked-vlm support would need.
UNSUPPORTED = [
    "| VILA-U | — | — (no transformers class) | — | — | — | — | not loadable: needs a "
    "transformers port of VILA-U (RQ-VAE tokenizer + LLaMA-2 decoder), then an `Architecture` "
    "entry and, if its decoder is not Llama-shaped, a TL adapter |",
]


def _code(token: str | None) -> str:
    """A token as inline code; pipes escaped so ``<|image start|>`` stays in its cell."""
    return "`" + token.replace("|", "\\|") + "`" if token else "—"


def _default_config(hf_class: str) -> object:
    """The published default config of an HF class (``Qwen3VLConfig()`` for Qwen3-VL)."""
    import transformers

    return getattr(transformers, hf_class.replace("ForConditionalGeneration", "Config"))()


def _row(name: str) -> str:
    cfg = load_model_config(name)
    arch = get_architecture(cfg.architecture)
    tokens = cfg.special_tokens
    family = cfg.extra.get("family") or arch.family
    delimiters = f"{_code(tokens.get('boi'))} / {_code(tokens.get('eoi'))}"
    rows = " / ".join(_code(tokens.get(k)) for k in ("eol", "eof") if tokens.get(k)) or "—"
    if arch.vision_hooks:
        vision = f"`{arch.vision_hooks}.hook_resid_pre/post`, `.attn.hook_q/k/v/pattern/z`"
        editable = "decoder + vision tower"
        injections = arch.injections(_default_config(arch.hf_class))
        if injections:
            layers = ", ".join(str(i.layer) for i in injections)
            vision += f"; injected into the decoder: `blocks.{{l}}.hook_deepstack` (l = {layers})"
    else:
        vision = "none (VQ tokenizer: images enter as token ids)"
        editable = "decoder"
    kind = "native" if cfg.native else "encoder"
    source = "embedded (trained here, ships in the package)" if cfg.embedded else f"`{cfg.hf_id}`"
    gate = arch.gate.replace("|", "\\|")
    return (
        f"| {family} ({kind}) | `{cfg.name}` | {source} | {delimiters} | {rows} | {gate} "
        f"| {vision} | {editable} |"
    )


def render_table() -> str:
    """The markdown table, one row per model config, sorted by family then name."""
    rows = sorted((_row(n) for n in list_model_configs()), key=str.lower)
    return "\n".join([HEADER, *rows, *UNSUPPORTED])


def splice(readme: str, table: str) -> str | None:
    """``readme`` with ``table`` between the markers, or ``None`` when they are absent."""
    if START not in readme or END not in readme:
        return None
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README is stale")
    parser.add_argument("--print", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    table = render_table()
    readme = README.read_text()
    updated = splice(readme, table)
    if args.print or updated is None:
        print(table)
        if updated is None:
            print(f"\n{README} has no {START} ... {END} markers: add them where the table "
                  "belongs, then rerun.", file=sys.stderr)
        return 0
    if args.check:
        return 0 if updated == readme else 1
    if updated != readme:
        README.write_text(updated)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
