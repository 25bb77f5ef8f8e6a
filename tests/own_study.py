"""The answer's logit when the text after the image stops seeing it from layer l on."""

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import plotly.graph_objects as go

from hooked_vlm.data import load_study_data
from hooked_vlm.interventions import knockout
from hooked_vlm.storage import write_atomic
from hooked_vlm.studies import Result, Session, Stage, Study, StudyConfig, load_study_model
from hooked_vlm.viz.report import FigureItem, Section, report_html


@dataclass(frozen=True)
class CutConfig(StudyConfig):
    """Attributes:
    model: the model (a model-config name or a local directory).
    n: synthetic examples.
    seed: seeds the examples.
    stages: stages to run now (default: all).
    """

    STUDY: ClassVar[str] = "image-cut"
    STAGES: ClassVar[tuple[str, ...]] = ("cut",)
    model: str = "tiny-llava"
    n: int = 4
    seed: int = 0
    stages: str | tuple[str | int, ...] | None = None


class CutSession(Session):
    def __init__(self, config: CutConfig, out_dir: Path, weights: bool = True) -> None:
        super().__init__(config, out_dir)
        self.model = load_study_model(config.model, tasks=["classify"], weights=weights)
        self.data = load_study_data("synthetic", n=config.n, seed=config.seed, task="classify")


def layers(session: CutSession) -> list[str]:  # one unit per first cut layer (L: no cut)
    return [f"cut/{first:02d}" for first in range(session.model.cfg.n_layers + 1)]


def cut(session: CutSession, key: str) -> dict[str, np.ndarray]:
    model, first = session.model, int(key.split("/")[1])
    logits = []
    for row in session.data:
        inputs = model.prepare([row["image"]], task="classify", question=row["question"])
        answer = model.tokenizer.convert_tokens_to_ids(row["label"])
        later = list(range(first, model.cfg.n_layers))
        hooks = knockout(model, inputs.layout, "text_after_image", "image", layers=later) \
            if later else []
        logits.append(float(model.run_with_hooks(inputs, fwd_hooks=hooks)[0, -1, answer]))
    return {"logit": np.array(logits)}


@dataclass
class CutResult(Result):
    STAGE = "cut"
    first_layer: list[int]
    logit: np.ndarray  # [first layer, example]

    def headline(self) -> list[tuple[str, str]]:
        mean = self.logit.mean(1)
        return [("mean logit: cut from layer 0 / never", f"{mean[0]:.2f} / {mean[-1]:.2f}")]


def reduce(session: CutSession, store) -> CutResult:
    keys = layers(session)
    return CutResult(list(range(len(keys))), np.stack([store.load(k)["logit"] for k in keys]))


def report(out_dir: Path) -> Path:
    result = CutResult.load(out_dir)
    figure = go.Figure(go.Scatter(x=result.first_layer, y=result.logit.mean(1)))
    section = Section("Cut", figures=[FigureItem(figure, "mean answer logit per first cut layer")])
    write_atomic(Path(out_dir) / "report.html", report_html("Image cut", {}, [section]))
    return Path(out_dir) / "report.html"


STUDY = Study("image-cut", CutConfig, CutSession,
              (Stage("cut", "Cut the image from layer l on", layers, cut, reduce, CutResult),),
              report)
