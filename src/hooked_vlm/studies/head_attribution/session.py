"""What every stage shares: the loaded model, the examples, the evaluator and the mask store.

A :class:`HeadAttributionSession` is built once per process from the config; building it loads
and checks the model, the data and the settings the model must serve (``k``, ``top_k``,
``token_heads``, enough masks for the regression, an ablation attribution patching can
estimate on this model), and writes nothing. Each example is one
image under the task's prompt template (the model config's), with the *answer token* Kim et
al. measure: the first token of the answer as it follows the prompt (classify: the label; vqa:
the most common answer; caption: the first reference caption). The mask store
(``<out>/store``) is opened on first use (by then the results directory is claimed): created
by the first process, reopened (and checked against the run) by every other.

Example:
    >>> session = HeadAttributionSession(HeadAttributionConfig.from_dict(
    ...     {"model": "tiny-llava", "data": "synthetic", "n": 4}), "results/ha")
    >>> session.examples[0].answer, session.answers[0], session.n_heads_total
"""

from __future__ import annotations

from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from hooked_vlm.attribution import Evaluator, Example, MaskStore, check_atp, open_store
from hooked_vlm.attribution.targets import answer_token
from hooked_vlm.interventions import InterventionError
from hooked_vlm.settings import ConfigError
from hooked_vlm.studies.head_attribution.config import HeadAttributionConfig
from hooked_vlm.studies.session import Session, load_data, load_study_model

TOKEN_HEADS_SHARE = 0.1  # token level: top 10% of heads unless token_heads is given


class HeadAttributionSession(Session):
    """The model, examples and evaluator of one run, loaded once per process."""

    def __init__(
        self, config: HeadAttributionConfig, out_dir: str | Path, weights: bool = True
    ) -> None:
        super().__init__(config, out_dir)
        self.model = load_study_model(
            config.model, device=config.device, dtype=config.dtype,
            model_config=config.model_config, tasks=[config.task], weights=weights,
        )
        self.data = load_data(config.data, "data", split=config.split, n=config.n,
                              seed=config.seed, task=config.task)
        self.n_layers, self.n_heads = self.model.cfg.n_layers, self.model.cfg.n_heads
        self.n_heads_total = self.n_layers * self.n_heads
        config.attribution.splits(self.n_layers, self.n_heads)  # refuses a k the model lacks
        if config.method != "atp":  # attribution patching runs no masks
            self._check_masks()
        if config.method != "regression":
            self._check_atp()
        self.ks = self._ks()
        self.token_heads = self._token_heads()
        self.prompts = [self.model.model_config.prompt(config.task, question=q)
                        for q in self.data["question"]]
        text = self.data.select_columns(["label", "answers", "captions"])
        self.answers = [_answer_text(config.task, row) for row in text]
        tokenizer = self.model.tokenizer
        self.answer_ids = [answer_token(tokenizer, p, a)
                           for p, a in zip(self.prompts, self.answers, strict=True)]
        self.labels = [str(label) for label in self.data["label"]]
        target = config.attribution.target
        foils = self._foils() if target == "logit_diff" else [None] * len(self.answers)
        self.examples = [
            Example(self.model.prepare([image], [prompt]), answer=answer, foil=foil, label=label)
            for image, prompt, answer, foil, label in zip(
                self.data["image"], self.prompts, self.answer_ids, foils, self.labels,
                strict=True)
        ]
        self.evaluator = Evaluator(self.model, self.examples, config.attribution)

    @cached_property
    def mask_store(self) -> MaskStore:
        """The run's mask store (created by the first process, reopened by the others)."""
        self.evaluator.fingerprint = self.fingerprint()
        return open_store(self.root / "store", self.evaluator)

    # ------------------------------------------------------------------ settings
    def _check_masks(self) -> None:
        """Refuse a least-squares fit with fewer masks than it has unknowns (ridge and lasso
        are regularised: a note says the fit is not identified by the masks alone)."""
        masks, unknowns = self.config.attribution.n_masks, self.n_heads_total + 1
        if masks < unknowns and self.config.regression != "ols":
            self.notes.append(f"masks = {masks} < {unknowns} unknowns (heads + intercept): the "
                              f"{self.config.regression} fit is set by its regularization as "
                              "much as by the masks; read the attributions with care")
        if self.config.regression == "ols" and masks < unknowns:
            raise ConfigError(
                f"masks = {masks}: the OLS fit has {unknowns} unknowns (one per head, "
                f"{self.n_layers} layers x {self.n_heads}, and the intercept), so fewer masks "
                "leave it underdetermined (a minimum-norm solution with arbitrary ties). Give "
                f"masks >= {unknowns} (better several times that), or regression ridge/lasso")

    def _check_atp(self) -> None:
        """Refuse attribution patching this model's attention or ``atp_recompute`` rules out
        (before anything is written, not in the first unit)."""
        recompute = self.config.atp_recompute
        if (recompute or 0) > self.n_heads_total:
            raise ConfigError(f"atp_recompute {recompute}: the model has {self.n_heads_total} "
                              f"heads ({self.n_layers} layers x {self.n_heads})")
        try:
            check_atp(self.model, self.config.attribution.mode, recompute)
        except InterventionError as err:
            raise ConfigError(f"method {self.config.method!r}: {err} (method regression runs "
                              "any ablation)") from err

    def _ks(self) -> list[int]:
        """Head counts of the curves: the config's, or 1, 2, 4, ... and every head."""
        total = self.n_heads_total
        if self.config.top_k is None:
            powers = [2**i for i in range(total.bit_length()) if 2**i < total]
            return [*powers, total]
        too_many = [k for k in self.config.top_k if k > total]
        if too_many:
            raise ConfigError(f"top_k {too_many}: the model has {total} heads "
                              f"({self.n_layers} layers x {self.n_heads})")
        return sorted(set(self.config.top_k))

    def _token_heads(self) -> int:
        total = self.n_heads_total
        if self.config.token_heads is None:
            return max(1, round(TOKEN_HEADS_SHARE * total))
        if self.config.token_heads > total:
            raise ConfigError(f"token_heads {self.config.token_heads}: the model has {total} "
                              "heads")
        return self.config.token_heads

    def _foils(self) -> list[int]:
        """For target "logit_diff": per example, the answer token of another class of the data
        (another answer for vqa / caption), drawn by (seed, example)."""
        ids = np.array(self.answer_ids)
        out = []
        for i, own in enumerate(ids):
            others = sorted({int(t) for t in ids if t != own})
            if not others:
                raise ConfigError("target 'logit_diff' needs examples whose answers start with "
                                  "at least two different tokens; these all start alike")
            rng = np.random.default_rng([self.config.seed, i])
            out.append(others[int(rng.integers(len(others)))])
        return out

    # ------------------------------------------------------------------ shared results
    @property
    def n_examples(self) -> int:
        return len(self.examples)

    @cached_property
    def token_rows(self) -> list[int]:
        """Examples of the token-level stage: the first ``token_examples`` (at most n)."""
        return list(range(min(self.config.token_examples, self.n_examples)))

    def info(self) -> dict[str, Any]:
        """What the report's header says about the model, the data and the examples."""
        cfg, config = self.model.cfg, self.config
        return {
            **super().info(), "n_heads": self.n_heads, "n_kv_heads": cfg.n_kv_heads,
            "data": config.data, "split": config.split, "task": config.task,
            "prompt": self.model.model_config.prompts[config.task],
            "ks": self.ks, "token_heads": self.token_heads, "token_rows": self.token_rows,
            "examples": {"id": list(self.data["id"]), "label": self.labels,
                         "answer": self.answers, "answer_id": self.answer_ids},
        }


def _answer_text(task: str, row: dict[str, Any]) -> str:
    if task == "classify":
        return str(row["label"])
    if task == "vqa":  # the most common human answer (ties: the first given)
        return Counter(row["answers"]).most_common(1)[0][0]
    return str(row["captions"][0])
