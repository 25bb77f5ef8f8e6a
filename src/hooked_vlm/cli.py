"""``hooked-vlm``: inspect a model's layout and hooks, run the demo study.

Examples:
    hooked-vlm info tiny:chameleon
    hooked-vlm info llava-1.5-7b          # reads only the config: no weights are downloaded
    hooked-vlm demo --out results/demo
    hooked-vlm run narrow-gate --model chameleon-7b --data synthetic --n 64 --out results/ng
    hooked-vlm finetune --out results/tiny-native-ft      # LoRA, text→EOI attention masked

Heavy libraries (torch, transformers, TransformerLens) are imported inside the commands that
use them, so ``hooked-vlm --help`` answers at once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer

from hooked_vlm.studies import DEMO_CHOICES, DEMO_DEFAULT

app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)
run_app = typer.Typer(
    help="Run a study into a results directory. Resumable: run the same command again after an "
    "interruption and finished work is kept.",
    no_args_is_help=True,
)
app.add_typer(run_app, name="run")

def _console() -> Any:
    from rich.console import Console

    return Console()


def _model_for_info(name: str) -> tuple[Any, dict | None]:
    """A tiny model (``tiny:NAME``), or a real one built on the meta device from its config."""
    import torch
    import transformers

    from hooked_vlm import loading
    from hooked_vlm.model import HookedVLM
    from hooked_vlm.testing.tiny import TINY_BUILDERS, build_tiny

    if name.startswith("tiny:"):
        tiny = build_tiny(name.removeprefix("tiny:"))
        return HookedVLM.from_hf(tiny.model), tiny.inputs
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


@app.command()
def info(
    model: Annotated[str, typer.Argument(help="tiny:NAME, a model-config name, dir or HF id")],
):
    """Show a model's sizes, special tokens, token layout and hook names."""
    from rich.table import Table

    console = _console()
    vlm, inputs = _model_for_info(model)
    c = vlm.cfg
    table = Table(title=f"{model}: {c.architecture}", show_header=False)
    for key, value in vars(c).items():
        table.add_row(key, str(value))
    tokens = vlm.architecture.tokens(vlm.hf_model.config)
    table.add_row("special tokens", ", ".join(f"{k}={v}" for k, v in vars(tokens).items()))
    table.add_row("layout", vlm.architecture.notes)
    console.print(table)
    if inputs is not None:
        layout = vlm.layout(**inputs)
        groups = Table(title="token layout of the example (batch element 0)")
        groups.add_column("group")
        groups.add_column("positions")
        for name, mask in layout.masks.items():
            groups.add_row(name, _ranges(mask[0].nonzero().flatten().tolist()))
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


def _model_list(value: str) -> tuple[str, ...]:
    """Parse and check ``--models`` before anything is written."""
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    unknown = [n for n in names if n not in DEMO_CHOICES]
    if unknown or not names:
        raise typer.BadParameter(
            f"unknown demo model(s) {unknown or value!r}; choose from {', '.join(DEMO_CHOICES)}"
        )
    return names


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="results directory (resumable)")] = Path(
        "results/demo"
    ),
    models: Annotated[
        str, typer.Option(help=f"comma-separated tiny models: {', '.join(DEMO_CHOICES)}")
    ] = ",".join(DEMO_DEFAULT),
):
    """Run the demo study on built-in tiny models (no download)."""
    from rich.table import Table

    from hooked_vlm.studies.demo import run_demo

    names = _model_list(models)
    console = _console()
    console.print(
        "[bold yellow]The built-in tiny models have RANDOM weights:[/] the numbers show the "
        "pipeline running end to end, not how real models behave."
    )
    rows = run_demo(out, names, log=console.print)
    table = Table(title="share of text→image attention (mean over layers)")
    for col in ("model", "native", "image tokens", "EOI", "last image"):
        table.add_column(col)
    for row in rows:
        layers = row["per_layer"]
        eoi = sum(r["eoi"] for r in layers) / len(layers)
        last = sum(r["last_image"] for r in layers) / len(layers)
        table.add_row(row["model"], str(row["native"]), str(row["image_tokens_per_example"][0]),
                      f"{eoi:.3f}" if row["has_eoi"] else "no EOI", f"{last:.3f}")
    console.print(table)
    knock = Table(title="knockout of text→keys in every layer: overlap with the clean "
                  "next-token distribution (1 = no effect)")
    knock.add_column("model")
    knock.add_column("keys")
    knock.add_column("overlap")
    for row in rows:
        for keys, overlap in row["knockout"].items():
            knock.add_row(row["model"], keys, f"{overlap:.4f}")
    console.print(knock)
    console.print(f"results in {out}/ (summary.tsv, knockout.tsv, patching.tsv, records/, one "
                  "HTML figure per model)")


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
        bool, typer.Option(help="mask text→EOI attention while training (--no-mask: control)")
    ] = True,
    seed: Annotated[int, typer.Option(help="seed of batches and weights")] = 0,
):
    """Fine-tune a native model with text→EOI attention masked (Narrow Gate, NeurIPS).

    Trains on the synthetic shapes data with the EOI knockout active, then compares held-out
    accuracy and the EOI / image-token knockout effect before and after. Writes a merged
    checkpoint: HookedVLM.from_pretrained(OUT, model_config="tiny-native")."""
    from hooked_vlm.loading import ModelSourceError
    from hooked_vlm.training.finetune import FinetuneError
    from hooked_vlm.training.finetune import finetune as run_finetune

    console = _console()
    given = {"steps": steps, "rank": rank, "lr": lr, "batch_size": batch_size,
             "n_train": n_train, "n_eval": n_eval}
    options = {"full": full, "mask": mask, **{k: v for k, v in given.items() if v is not None}}
    try:
        report = run_finetune(model, out, model_config=model_config, seed=seed,
                              log=console.print, **options)
    except (FinetuneError, ModelSourceError) as err:
        console.print(f"[red]cannot fine-tune[/]: {err}")
        raise typer.Exit(code=2) from None
    console.print(_finetune_table(report))
    console.print(f"checkpoint and finetune.json in {out}/ (load with HookedVLM.from_pretrained("
                  f"{str(out)!r}, model_config={report['model_config']!r}))")


def _finetune_table(report: dict[str, Any]) -> Any:
    """Before/after rows of a fine-tuning report: held-out accuracy and knockout effects."""
    from rich.table import Table

    table = Table(title="held-out, before → after fine-tuning (knockouts: queries after "
                        "the image, every layer)")
    table.add_column("measure")
    table.add_column("before")
    table.add_column("after")
    rows = [(f"evaluate: {k}", lambda m, k=k: m["eval"][k])
            for k in ("classify", "vqa", "vqa_color", "vqa_shape", "vqa_count",
                      "vqa_position", "caption_cider")]
    for cond, label in (("none", "clean"), ("eoi", "text→EOI cut"),
                        ("image", "text→image cut")):
        rows.append((f"probe accuracy, {label}",
                     lambda m, c=cond: m["probe"]["mean"]["accuracy"][c]))
    for key, label in (("eoi", "text→EOI cut"), ("image", "text→image cut")):
        rows.append((f"probe Δ log p(answer), {label}",
                     lambda m, k=key: m["probe"]["mean"]["logprob_change"][k]))
    for label, get in rows:
        table.add_row(label, f"{get(report['before']):.3f}", f"{get(report['after']):.3f}")
    return table


@run_app.command("narrow-gate")
def narrow_gate(
    out: Annotated[Path, typer.Option(help="results directory (resumable; one config per dir)")],
    model: Annotated[
        str | None, typer.Option(help="model-config name, local save_pretrained dir or HF id")
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(help='data of every task: hub id, local dir/file or "synthetic" (per-task '
                     "sources: in --config)"),
    ] = None,
    n: Annotated[int | None, typer.Option(help="examples per task (default: 64)")] = None,
    config: Annotated[
        Path | None, typer.Option(help="study YAML (fields of NarrowGateConfig); options win")
    ] = None,
    model_config: Annotated[
        str | None, typer.Option(help="model-config name or YAML for a local model directory")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cpu)")] = None,
    dtype: Annotated[str | None, typer.Option(help="float32, bf16, fp16 (default: the model's)")]
    = None,
    batch_size: Annotated[int | None, typer.Option(help="examples per forward (default: 8)")]
    = None,
    stages: Annotated[
        str | None,
        typer.Option(help="comma-separated stages or numbers 1-7: gap, flow, overlap, knockout, "
                     "progressive, patching, steering (default: all the data allows)"),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="seed of examples and draws (default: 0)")]
    = None,
):
    """The Narrow Gate study (Serra et al.), seven stages and an HTML report.

    Modality gap, attention flow, label overlap, knockouts, patching and steering at the
    image's gate token (EOI, or the last image token). Resumes where a run stopped."""
    from hooked_vlm.studies.narrow_gate.config import ConfigError, NarrowGateConfig

    given = {"model": model, "data": data, "n": n, "model_config": model_config,
             "device": device, "dtype": dtype, "batch_size": batch_size, "stages": stages,
             "seed": seed}
    console = _console()
    try:
        if config is not None:
            study = NarrowGateConfig.from_yaml(config, **given)
        else:
            study = NarrowGateConfig.from_dict({k: v for k, v in given.items() if v is not None})
    except (ConfigError, OSError, TypeError) as err:
        console.print(f"[red]invalid study configuration[/]: {err}")
        raise typer.Exit(code=2) from None
    _run_narrow_gate(study, out, console)


def _run_narrow_gate(study: Any, out: Path, console: Any) -> None:
    from rich.table import Table

    from hooked_vlm.studies.narrow_gate import ConfigError, run_narrow_gate

    with _RichProgress(console) as progress:
        try:
            summary = run_narrow_gate(study, out, progress)
        # a bad config, model path or data source: a clear message instead of a traceback
        except (ConfigError, ValueError, KeyError, OSError, ImportError) as err:
            progress.stop()
            console.print(f"[red]cannot run[/]: {type(err).__name__}: {err}")
            raise typer.Exit(code=1) from None
    table = Table(title=f"Narrow Gate: {study.model}")
    for column in ("stage", "result", "value", "compute s"):
        table.add_column(column)
    for stage, rows in summary.headline.items():
        timing = summary.timings[stage]
        seconds = f"{timing.unit_seconds + timing.reduce_seconds:.1f}"
        for i, (label, value) in enumerate(rows):
            table.add_row(stage if i == 0 else "", label, value, seconds if i == 0 else "")
    console.print(table)
    console.print(f"gate: {summary.notes[0]}")
    for note in summary.notes[1:]:
        console.print(f"[yellow]note[/]: {note}")
    console.print(f"report: [bold]{summary.report}[/]")


class _RichProgress:
    """The study's progress callbacks as one rich progress bar per stage."""

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.console = console
        self.bars = Progress("[progress.description]{task.description}", BarColumn(),
                             MofNCompleteColumn(), TimeElapsedColumn(), console=console)
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> _RichProgress:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def stop(self) -> None:
        self.bars.stop()

    def stage(self, name: str, title: str, total: int) -> None:
        self.tasks[name] = self.bars.add_task(title, total=total)

    def advance(self, name: str, unit: Any, computed: bool) -> None:
        self.bars.advance(self.tasks[name])

    def note(self, text: str) -> None:
        self.console.print(f"[yellow]note[/]: {text}")


if __name__ == "__main__":
    app()
