"""``hooked-vlm``: inspect a model's layout and hooks, run the demo and the studies, fine-tune.

Examples:
    hooked-vlm info                       # every supported family, its configs and tiny models
    hooked-vlm info tiny:chameleon
    hooked-vlm info llava-1.5-7b          # reads only the config: no weights are downloaded
    hooked-vlm explore --model tiny-native --image cat.png --task caption --out page.html
    hooked-vlm demo --out results/demo    # both studies on the embedded trained models
    hooked-vlm run narrow-gate --model chameleon-7b --data synthetic --n 64 --out results/ng
    hooked-vlm run narrow-gate ... --device cuda --ray auto       # on the Ray cluster of this node
    hooked-vlm run narrow-gate ... --shard 0/8                    # a Slurm array task
    hooked-vlm run head-attribution ... --ray auto                # every unit on Ray workers
    hooked-vlm run head-attribution ... --shard 0/8   (then the same without --shard)
    hooked-vlm run my_study:STUDY --out results/mine ...          # a study of your own
    hooked-vlm finetune --out results/tiny-native-ft      # LoRA, text→EOI attention masked
    hooked-vlm finetune --out results/gated --mask-keys image   # text→image masked: plants a gate

Heavy libraries (torch, transformers, TransformerLens) are imported inside the commands that
use them, so ``hooked-vlm --help`` answers at once.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from hooked_vlm.cli_explore import explore_command
from hooked_vlm.studies.command import config_from, config_options, run_app
from hooked_vlm.studies.demo import DemoConfig

app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True,
                  rich_markup_mode="rich")
app.add_typer(run_app(), name="run")  # every study, its options generated from its config

app.command("explore")(explore_command)  # its logic: hooked_vlm/cli_explore.py

def _console() -> Any:
    from rich.console import Console

    return Console()


def _error(title: str, err: object, code: int) -> typer.Exit:
    """Print ``title: err`` in one line (escaped: rich would swallow ``hooked-vlm[ray]``)."""
    from rich.markup import escape

    _console().print(f"[red]{title}[/]: {escape(str(err))}")
    return typer.Exit(code=code)


def _model_for_info(name: str) -> tuple[Any, dict | None]:
    """A tiny model (``tiny:NAME``), or a real one built on the meta device from its config."""
    import torch
    import transformers

    from hooked_vlm import loading
    from hooked_vlm.families import TINY_BUILDERS, build_tiny
    from hooked_vlm.model import HookedVLM

    if name.startswith("tiny:"):
        try:
            tiny = build_tiny(name.removeprefix("tiny:"))
        except KeyError:
            raise _error(f"no tiny model {name!r}", "built-in tiny models: tiny:"
                         + ", tiny:".join(sorted(TINY_BUILDERS)), 1) from None
        frames = tiny.extras.get("video_frames")  # frames that are images: say so (SmolVLM)
        layout_inputs = {**tiny.inputs, **({"video_frames": frames} if frames else {})}
        return HookedVLM.from_hf(tiny.model), layout_inputs
    try:
        source = loading.resolve_source(name)
        config = transformers.AutoConfig.from_pretrained(
            source.location, local_files_only=source.local
        )
    except (OSError, ValueError, KeyError) as err:
        _console().print(
            f"[red]could not read the config of {name!r}[/]: {err}\n`info` reads "
            "only config.json, from the HF hub (network) or a local save_pretrained directory. "
            f"Offline, try a built-in tiny model: tiny:{', tiny:'.join(TINY_BUILDERS)}."
        )
        raise typer.Exit(code=1) from None
    arch = loading.get_architecture((config.architectures or ["?"])[0])
    with torch.device("meta"):
        hf_model = getattr(transformers, arch.hf_class)(config)
    return HookedVLM.from_hf(hf_model, model_config=source.model_config), None


def _hook_patterns(names: list[str]) -> list[str]:
    """Collapse per-layer names: ``blocks.3.attn.hook_z`` -> ``blocks.{l}.attn.hook_z``."""
    seen: dict[str, None] = {}
    for n in names:
        seen[re.sub(r"(blocks|encoder_layers|layers)\.\d+\.", r"\1.{l}.", n)] = None
    return list(seen)


def _families_table() -> Any:
    """Every supported family: HF class, kind, model configs and tiny instances."""
    from rich.table import Table

    from hooked_vlm.families import ARCHITECTURES
    from hooked_vlm.model_configs import list_model_configs, load_model_config

    configs: dict[str, list[str]] = {}
    for name in list_model_configs():
        configs.setdefault(load_model_config(name).architecture, []).append(name)
    table = Table(title="supported families (hooked-vlm info NAME for one of them)")
    for column in ("family", "HF class", "kind", "model configs", "tiny instances"):
        table.add_column(column)
    for arch in sorted(ARCHITECTURES.values(), key=lambda a: a.family.lower()):
        table.add_row(
            arch.family, arch.hf_class, "native" if arch.native else "encoder",
            ", ".join(configs.get(arch.hf_class, [])) or "-",
            ", ".join(f"tiny:{t}" for t in arch.tiny) or "-",
        )
    return table


@app.command()
def info(
    model: Annotated[
        str | None,
        typer.Argument(help="tiny:NAME, a model-config name, dir or HF id; none: every family"),
    ] = None,
):
    """Show a model's sizes, special tokens, token layout and hook names (no argument: list
    every supported family with its model configs and tiny instances)."""
    from rich.table import Table

    console = _console()
    if model is None:
        console.print(_families_table())
        return
    vlm, inputs = _model_for_info(model)
    c = vlm.cfg
    table = Table(title=f"{model}: {c.architecture}", show_header=False)
    for key, value in vars(c).items():
        table.add_row(key, str(value))
    tokens = vlm.architecture.tokens(vlm.hf_model.config)
    table.add_row("special tokens", ", ".join(f"{k}={v}" for k, v in vars(tokens).items()))
    table.add_row("layout", vlm.architecture.notes)
    table.add_row("gate candidate", vlm.architecture.gate)
    console.print(table)
    if inputs is not None:
        layout = vlm.layout(**inputs)
        groups = Table(title="token layout of the example (batch element 0)")
        groups.add_column("group")
        groups.add_column("positions")
        for name, mask in layout.masks.items():
            groups.add_row(name, _ranges(mask[0].nonzero().flatten().tolist()))
        for k in range(layout.frames()[0]):
            groups.add_row(f"image@frame={k}", _ranges(
                layout.mask("image", frame=k)[0].nonzero().flatten().tolist()))
        if layout.attention_blocks is not None:
            bidirectional = (layout.attention_blocks[0] >= 0).nonzero().flatten().tolist()
            groups.add_row("bidirectional", _ranges(bidirectional))
        for injection in layout.injections:
            groups.add_row(f"injected by {injection.hook}", _ranges(
                layout.mask(injection.group)[0].nonzero().flatten().tolist()))
        console.print(groups)
    hooks = Table(title=f"hook names ({len(vlm.hook_names)} in all; {{l}} = layer)")
    hooks.add_column("name")
    for pattern in _hook_patterns(vlm.hook_names):
        hooks.add_row(pattern)
    console.print(hooks)


def _ranges(positions: list[int]) -> str:
    """``[1,2,3,7]`` -> ``"1-3, 7"``."""
    out, start = [], None
    for i, p in enumerate(positions):
        start = p if start is None else start
        if i + 1 == len(positions) or positions[i + 1] != p + 1:
            out.append(f"{start}-{p}" if p != start else str(p))
            start = None
    return ", ".join(out) or "-"


def demo(out: Path, **options: Any) -> None:
    """Both studies on the embedded trained tiny models (no download), one comparison page."""
    from rich.table import Table

    from hooked_vlm.settings import ConfigError
    from hooked_vlm.studies.command import RichProgress, quiet_libraries
    from hooked_vlm.studies.demo import run_demo
    from hooked_vlm.studies.demo.report import attribution_table, contrast_table

    try:  # checked before anything is written
        config = config_from(DemoConfig, options)
    except ConfigError as err:
        raise typer.BadParameter(str(err)) from None
    console = _console()
    quiet_libraries()
    import torch

    # d_model 128: more threads only add synchronisation (and spin on a busy machine)
    torch.set_num_threads(1)
    with RichProgress(console) as progress:
        try:
            summary = run_demo(config, out, progress, log=console.print)
        except (ConfigError, OSError) as err:  # another demo's directory, a full disk
            progress.stop()
            raise _error("cannot run", err, 1) from None
    for title, made in (("The Narrow Gate contrast", contrast_table(summary.rows)),
                        ("Head attribution", attribution_table(summary.rows))):
        table = Table(title=f"{title} on the embedded models", caption=made.caption)
        for column in made.columns:
            table.add_column(column)
        for row in made.rows:
            table.add_row(*map(str, row))
        console.print(table)
    console.print(f"report: [bold]{summary.report}[/] (links to each study's full report)")


# the demo's options are DemoConfig's fields
_out = typer.Option(help="results directory (resumable)")
demo.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
    inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, default=Path("results/demo"),
                      annotation=Annotated[Path, _out]), *config_options(DemoConfig, panel=None)])
app.command()(demo)


@app.command()
def finetune(
    out: Annotated[Path, typer.Option(help="checkpoint directory to write (with finetune.json)")],
    model: Annotated[
        str, typer.Option(help="native model with an EOI token: model-config name or directory")
    ] = "tiny-native",
    model_config: Annotated[
        str | None, typer.Option(help="model-config name for a checkpoint directory")
    ] = None,
    full: Annotated[bool, typer.Option(help="update every decoder weight instead of LoRA")]
    = False,
    steps: Annotated[int | None, typer.Option(help="optimiser steps (default: 200)")] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank (default: 8; not with --full)")]
    = None,
    lr: Annotated[
        float | None, typer.Option(help="peak learning rate (default: LoRA 2e-3, full 3e-4)")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="conversations per step (default: 16)")
    ] = None,
    n_train: Annotated[
        int | None, typer.Option(help="synthetic training images (default: 4000)")
    ] = None,
    n_eval: Annotated[
        int | None, typer.Option(help="held-out test images, before and after (default: 256)")
    ] = None,
    mask: Annotated[
        bool, typer.Option(help="mask attention while training (--no-mask: the control)")
    ] = True,
    mask_keys: Annotated[
        str | None,
        typer.Option(help='keys hidden from text after the image while training: "eoi" '
                     '(default, the paper\'s run) or "image" (image tokens: plants a gate)'),
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of batches and weights")] = 0,
):
    """Fine-tune a native model with text→EOI attention masked (Narrow Gate, NeurIPS);
    --mask-keys image masks text→image tokens instead (plants a gate at EOI).

    Trains on the synthetic shapes data with the EOI knockout active, then compares held-out
    accuracy and the EOI / image-token knockout effect before and after. Writes a merged
    checkpoint: HookedVLM.from_pretrained(OUT, model_config="tiny-native")."""
    import torch

    from hooked_vlm.loading import ModelSourceError
    from hooked_vlm.studies.command import quiet_libraries
    from hooked_vlm.training.finetune import FinetuneError
    from hooked_vlm.training.finetune import finetune as run_finetune

    console = _console()
    quiet_libraries()
    # the synthetic data fit tiny-native's word vocabulary: d_model 128, more threads only add
    # synchronisation (and spin on a busy machine)
    torch.set_num_threads(1)
    given = {"steps": steps, "rank": rank, "lr": lr, "batch_size": batch_size,
             "n_train": n_train, "n_eval": n_eval, "masked_keys": mask_keys}
    options = {"full": full, "mask": mask, **{k: v for k, v in given.items() if v is not None}}
    try:
        report = run_finetune(model, out, model_config=model_config, seed=seed,
                              log=console.print, **options)
    except (FinetuneError, ModelSourceError) as err:
        raise _error("cannot fine-tune", err, 2) from None
    console.print(_finetune_table(report))
    console.print(f"checkpoint and finetune.json in {out}/ (load with HookedVLM.from_pretrained("
                  f"{str(out)!r}, model_config={report['model_config']!r}))")


def _finetune_table(report: dict[str, Any]) -> Any:
    """Before/after rows of a fine-tuning report: held-out accuracy and knockout effects."""
    from rich.table import Table

    from hooked_vlm.training.finetune import summary_rows

    masked = report.get("masked")
    trained = f"text→{masked} masked" if masked else "no mask"
    table = Table(title=f"held-out, before → after fine-tuning ({trained}; knockouts: queries "
                        "after the image, every layer)")
    table.add_column("measure")
    table.add_column("before")
    table.add_column("after")
    before, after = summary_rows(report["before"]), summary_rows(report["after"])
    for label, value in before.items():
        table.add_row(label, f"{value:.3f}", f"{after[label]:.3f}")
    return table


if __name__ == "__main__":
    app()
