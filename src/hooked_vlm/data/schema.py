"""The one schema every study dataset is normalised to, and its validator.

Every loader (hub ids, local folders, the synthetic set) returns a ``datasets.Dataset`` with
exactly these columns, so a study never branches on where its images came from:

=========  ==========================  ==================================================
column     feature                     meaning
=========  ==========================  ==================================================
id         Value("string")             stable example id (the source's image/question id)
image      Image(mode="RGB")           decodes to an RGB ``PIL.Image``
label      Value("string")             class name ("tench"); "" when the source has none
captions   List(Value("string"))       reference captions; [] when none
question   Value("string")             VQA question; "" when none
answers    List(Value("string"))       the human answers (10 for VQAv2); [] when none
=========  ==========================  ==================================================

Example:
    >>> from hooked_vlm.data.schema import STUDY_COLUMNS, validate_study_dataset
    >>> STUDY_COLUMNS
    ('id', 'image', 'label', 'captions', 'question', 'answers')
    >>> validate_study_dataset(dataset)        # raises SchemaError naming what is wrong
"""

from __future__ import annotations

import datasets

STUDY_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "image": datasets.Image(mode="RGB"),
        "label": datasets.Value("string"),
        "captions": datasets.List(datasets.Value("string")),
        "question": datasets.Value("string"),
        "answers": datasets.List(datasets.Value("string")),
    }
)
STUDY_COLUMNS: tuple[str, ...] = tuple(STUDY_FEATURES)

# What each study task reads: an example serves the task when all of these are non-empty.
TASK_FIELDS: dict[str, tuple[str, ...]] = {
    "caption": ("captions",),
    "vqa": ("question", "answers"),
    "classify": ("label",),
}


class SchemaError(ValueError):
    """A dataset's columns do not fit the schema asked of it (canonical or a source schema)."""


def _same_feature(found: object, expected: object) -> bool:
    # Any Image feature is accepted: its decode mode is a read-time option, and loaders cast
    # to Image(mode="RGB") themselves.
    if isinstance(expected, datasets.Image):
        return isinstance(found, datasets.Image)
    return found == expected


def validate_study_dataset(dataset: datasets.Dataset) -> None:
    """Raise :class:`SchemaError` unless ``dataset`` has every canonical column, rightly typed.

    The message names each missing column and each mistyped one (expected vs found feature).
    Extra columns are allowed here; :func:`hooked_vlm.data.load_study_data` drops them.

    Example:
        >>> validate_study_dataset(load_study_data("path/to/saved_dataset"))
    """
    if not isinstance(dataset, datasets.Dataset):
        raise SchemaError(
            f"expected a datasets.Dataset, got {type(dataset).__name__}"
            + (" (pick one split first)" if isinstance(dataset, datasets.DatasetDict) else "")
        )
    features = dataset.features
    missing = [c for c in STUDY_COLUMNS if c not in features]
    mistyped = [
        f"{c}: expected {STUDY_FEATURES[c]}, found {features[c]}"
        for c in STUDY_COLUMNS
        if c in features and not _same_feature(features[c], STUDY_FEATURES[c])
    ]
    if missing or mistyped:
        problems = []
        if missing:
            problems.append(f"missing columns {missing}")
        if mistyped:
            problems.append("mistyped columns: " + "; ".join(mistyped))
        raise SchemaError(
            "dataset does not fit the study schema: " + "; ".join(problems)
            + f". The schema is {dict(STUDY_FEATURES)} (see hooked_vlm/data/schema.py)."
        )
