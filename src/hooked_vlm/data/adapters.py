"""One small adapter per source schema: the source's text columns -> the canonical ones.

An adapter never touches images: it reads a few text/id columns (as Python lists) and returns
canonical columns; the loader takes the image column as it is, or, for sources that only name
their image files (COCO Karpathy), joins the ``image_file`` the adapter returns to the user's
``image_root``. Columns an adapter does not return get the schema's empty value.

Schemas (the columns are those of the hub datasets' cards):

- ``flickr30k`` (``nlphuji/flickr30k``): image, caption (list of 5), sentids, split
  (train/val/test), img_id, filename.
- ``coco_karpathy`` (``yerevann/coco-karpathy``): filepath, sentids, filename, imgid, split,
  sentences (list of 5 captions), cocoid, url; no image column, so images come from
  ``image_root``.
- ``vqav2`` (``lmms-lab/VQAv2``, ``HuggingFaceM4/VQAv2``): image, question, question_id,
  answers (list of 10 {answer, answer_confidence, answer_id}), multiple_choice_answer, ...
- ``imagenet`` (``ILSVRC/imagenet-1k``, or any image + ClassLabel set such as an imagefolder of
  class folders): label names like "tench, Tinca tinca" become their first synonym, "tench".
- ``canonical``: a dataset already in (part of) the study schema, e.g. an imagefolder whose
  ``metadata.jsonl`` carries captions / question / answers / label.

Example:
    >>> from hooked_vlm.data.adapters import ADAPTERS, detect_adapter
    >>> detect_adapter(dataset.features).name
    'flickr30k'
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import datasets

from hooked_vlm.data.schema import SchemaError

Columns = dict[str, list]


@dataclass(frozen=True)
class Adapter:
    """How to read one source schema.

    Attributes:
        name: registry name, what ``schema=`` takes.
        required: source columns that must be present.
        optional: source columns read when present.
        default_split: the split a study uses when none is named.
        convert: ``(columns, features, index) -> canonical columns``; ``columns`` holds the
            present ``required + optional`` columns as lists, ``index`` each row's position in
            its source split (the id of sources without one).
        split_column: a column that holds the split (sources shipped as one table).
        check: extra test of the features; returns a problem to report, or None.
    """

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    default_split: str
    convert: Callable[[Columns, datasets.Features, Sequence[int]], Columns]
    split_column: str | None = None
    check: Callable[[datasets.Features], str | None] = lambda features: None

    def problems(self, features: datasets.Features) -> list[str]:
        """What keeps ``features`` from being read by this adapter (empty when it fits)."""
        missing = [c for c in self.required if c not in features]
        if missing:
            return [f"missing columns {missing}"]
        extra = self.check(features)
        return [extra] if extra else []

    def validate(self, features: datasets.Features) -> None:
        """Raise :class:`SchemaError` naming what keeps ``features`` from this schema."""
        problems = self.problems(features)
        if problems:
            raise SchemaError(
                f"the source does not fit schema {self.name!r}: {'; '.join(problems)} "
                f"(it needs {list(self.required)}; the source has {list(features)})"
            )


def _str_list(value: object) -> list[str]:
    """A list of strings from a list, a JSON list in a string (CSV metadata), or one string."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return [str(v) for v in json.loads(text)]
        return [text] if text else []
    return [str(v) for v in value]


def _class_names(features: datasets.Features, column: str) -> Callable[[int | None], str]:
    """int -> class name for a ClassLabel column; -1 / None (unlabelled) -> ""."""
    label = features[column]
    return lambda v: "" if v is None or v < 0 else label.int2str(v)


def _is_class_label(features: datasets.Features, column: str) -> bool:
    return isinstance(features.get(column), datasets.ClassLabel)


def _flickr30k(cols: Columns, features: datasets.Features, index: Sequence[int]) -> Columns:
    return {
        "id": [str(v) for v in cols["img_id"]],
        "captions": [_str_list(c) for c in cols["caption"]],
    }


def _caption_text(sentence: object) -> str:
    # yerevann/coco-karpathy stores strings; Karpathy's original json (and some mirrors)
    # stores {"raw": ..., "tokens": ...} records.
    return sentence["raw"] if isinstance(sentence, dict) else str(sentence)


def _coco_karpathy(cols: Columns, features: datasets.Features, index: Sequence[int]) -> Columns:
    out: Columns = {
        "id": [str(v) for v in cols["cocoid"]],
        "captions": [
            [_caption_text(s) for s in (v if isinstance(v, list) else [v])]
            for v in cols["sentences"]
        ],
    }
    if "image" not in features:
        folders = cols.get("filepath") or [""] * len(cols["filename"])
        out["image_file"] = [
            os.path.join(d or "", f) for d, f in zip(folders, cols["filename"], strict=True)
        ]
    return out


def _coco_check(features: datasets.Features) -> str | None:
    if "image" not in features and "filename" not in features:
        return "neither an image column nor a filename column to find the images by"
    return None


def _answer_text(answer: object) -> str:
    return answer["answer"] if isinstance(answer, dict) else str(answer)


def _vqav2(cols: Columns, features: datasets.Features, index: Sequence[int]) -> Columns:
    return {
        "id": [str(v) for v in cols["question_id"]],
        "question": [str(q) for q in cols["question"]],
        "answers": [[_answer_text(a) for a in (v or [])] for v in cols["answers"]],
    }


def _imagenet(cols: Columns, features: datasets.Features, index: Sequence[int]) -> Columns:
    name = _class_names(features, "label")
    # ImageNet's ClassLabel names list synonyms ("tench, Tinca tinca"): keep the first.
    return {
        "id": [str(i) for i in index],
        "label": [name(v).split(",")[0].strip() for v in cols["label"]],
    }


_TEXT_COLUMNS = ("captions", "question", "answers")


def _imagenet_check(features: datasets.Features) -> str | None:
    if not _is_class_label(features, "label"):
        return f"'label' must be a ClassLabel (class ids with names), found {features['label']}"
    if any(c in features for c in _TEXT_COLUMNS):
        return f"it also has {[c for c in _TEXT_COLUMNS if c in features]}: use schema='canonical'"
    return None


def _canonical(cols: Columns, features: datasets.Features, index: Sequence[int]) -> Columns:
    out: Columns = {"id": [str(v) for v in cols["id"]] if "id" in cols else [str(i) for i in index]}
    if "label" in cols:
        name = _class_names(features, "label") if _is_class_label(features, "label") else str
        out["label"] = ["" if v is None else name(v) for v in cols["label"]]
    if "question" in cols:
        out["question"] = ["" if q is None else str(q) for q in cols["question"]]
    for column in ("captions", "answers"):
        if column in cols:
            out[column] = [_str_list(v) for v in cols[column]]
    return out


def _canonical_check(features: datasets.Features) -> str | None:
    if not any(c in features for c in ("label", *_TEXT_COLUMNS)):
        return "none of the columns label, captions, question, answers"
    wrong = [f"{c} ({features[c]}; needs {need})" for c, need, ok in (
        ("question", "text", _is_text), ("captions", "a list of texts", _is_texts),
        ("answers", "a list of texts", _is_texts)) if c in features and not ok(features[c])]
    return f"wrong column types: {', '.join(wrong)}" if wrong else None


def _is_text(feature: object) -> bool:
    return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")


def _is_texts(feature: object) -> bool:
    """A list of texts, or a text (a CSV cell holding a JSON list, or one caption)."""
    inner = getattr(feature, "feature", None)
    return _is_text(feature) or (inner is not None and _is_text(inner))


_ADAPTER_LIST = (
    Adapter("flickr30k", ("image", "caption", "img_id"), (), "test", _flickr30k, "split"),
    Adapter(
        "coco_karpathy", ("sentences", "cocoid"), ("image", "filepath", "filename"),
        "test", _coco_karpathy, "split", _coco_check,
    ),
    Adapter("vqav2", ("image", "question", "question_id", "answers"), (), "validation", _vqav2),
    Adapter("imagenet", ("image", "label"), (), "validation", _imagenet, check=_imagenet_check),
    Adapter(
        "canonical", ("image",), ("id", "label", *_TEXT_COLUMNS), "test", _canonical,
        check=_canonical_check,
    ),
)
ADAPTERS: dict[str, Adapter] = {a.name: a for a in _ADAPTER_LIST}


def get_adapter(name: str) -> Adapter:
    """The adapter registered as ``name``; a clear error listing the known ones otherwise."""
    try:
        return ADAPTERS[name]
    except KeyError:
        raise SchemaError(
            f"unknown schema {name!r}; supported: "
            + ", ".join(f"{a.name} (needs {list(a.required)})" for a in _ADAPTER_LIST)
        ) from None


def detect_adapter(features: datasets.Features) -> Adapter:
    """The adapter whose schema fits ``features``; source schemas win over ``canonical``.

    Raises:
        SchemaError: no schema fits (listing each schema's needs and the columns found), or
            several source schemas do (then pass ``schema=``).
    """
    fitting = [a for a in _ADAPTER_LIST if a.name != "canonical" and not a.problems(features)]
    if len(fitting) > 1:
        raise SchemaError(
            f"the source's columns {list(features)} fit several schemas "
            f"{[a.name for a in fitting]}: pass schema= to choose one"
        )
    if not fitting and not ADAPTERS["canonical"].problems(features):
        fitting = [ADAPTERS["canonical"]]
    if not fitting:
        near = [f"{a.name}: {'; '.join(a.problems(features))}" for a in _ADAPTER_LIST
                if all(c in features for c in a.required)]
        raise SchemaError(
            f"no supported schema fits the source's columns {list(features)}"
            + (f" ({'; '.join(near)})" if near else "") + "; supported: "
            + ", ".join(f"{a.name} (needs {list(a.required)})" for a in _ADAPTER_LIST)
            + ". Rename the columns, or pass schema= to see what one schema lacks."
        )
    return fitting[0]
