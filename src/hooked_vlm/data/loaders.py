"""``load_study_data``: any study dataset, from a hub id, a local folder or file, or "synthetic".

The steps, each a pure function of the arguments (so example i of the result depends only on
(source, split, n, seed, i)):

1. open the source: "synthetic" -> ``hooked_vlm.data.synthetic``; an existing local path -> a
   ``save_to_disk`` folder, a parquet / arrow / jsonl / json / csv file, or a folder of data
   files or images (``imagefolder``: class subfolders become labels, a ``metadata.jsonl`` /
   ``metadata.csv`` may carry captions / question / answers), always offline; anything else
   that looks like ``owner/name`` -> the Hugging Face hub;
2. pick the adapter: ``schema=``, else the hub id's registered schema, else detected from the
   columns (:mod:`hooked_vlm.data.adapters`);
3. pick the split: a hub/local split, or the rows whose split column matches (Flickr30k's
   Karpathy splits live in one table);
4. map the text columns to the canonical ones (images untouched), drop rows that cannot serve
   ``task``, and take ``n`` rows: the first n of a permutation seeded by ``seed`` (so a
   smaller n is a prefix of a larger one);
5. attach the images (decoded as RGB) and return exactly the canonical columns.

Example:
    >>> from hooked_vlm.data import load_study_data
    >>> flickr = load_study_data("nlphuji/flickr30k", split="test", n=500, task="caption")
    >>> coco = load_study_data("yerevann/coco-karpathy", n=2000, image_root="~/data/coco")
    >>> local = load_study_data("my_images/", task="classify")   # class folders -> labels
    >>> len(flickr), len(flickr[0]["captions"]), flickr[0]["image"].mode
    (500, 5, 'RGB')
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from pyarrow import ArrowException

from hooked_vlm.data.adapters import Adapter, Columns, detect_adapter, get_adapter
from hooked_vlm.data.schema import (
    STUDY_COLUMNS,
    STUDY_FEATURES,
    TASK_FIELDS,
    SchemaError,
    validate_study_dataset,
)

SYNTHETIC_MODULE = "hooked_vlm.data.synthetic"


@dataclass(frozen=True)
class HubSource:
    """What the loader knows of a hub dataset.

    Attributes:
        schema: its adapter's name.
        hub_split: the one hub split that holds every example, when the real split is a column.
        revision: the hub revision to read (``refs/convert/parquet`` is the hub's own parquet
            export, for repositories whose main branch is a loading script, which ``datasets``
            4+ no longer runs).
    """

    schema: str
    hub_split: str | None = None
    revision: str | None = None


HUB_SOURCES: dict[str, HubSource] = {
    "nlphuji/flickr30k": HubSource("flickr30k", hub_split="test", revision="refs/convert/parquet"),
    "yerevann/coco-karpathy": HubSource("coco_karpathy"),
    "lmms-lab/VQAv2": HubSource("vqav2"),
    "HuggingFaceM4/VQAv2": HubSource("vqav2"),
    "ILSVRC/imagenet-1k": HubSource("imagenet"),
    "imagenet-1k": HubSource("imagenet"),
}

_DATA_FILE_BUILDERS = {
    ".parquet": "parquet", ".arrow": "arrow", ".jsonl": "json", ".json": "json", ".csv": "csv",
}
# folder names datasets reads as splits (a folder of images without them is one table)
_SPLIT_FOLDERS = {"train", "training", "test", "testing", "validation", "valid", "val", "dev",
                  "eval", "evaluation"}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_SPLIT_ALIASES = {"validation": "val", "val": "validation"}
_TEXT_COLUMNS = tuple(c for c in STUDY_COLUMNS if c != "image")


def load_study_data(
    source: str,
    *,
    split: str | None = None,
    n: int | None = None,
    seed: int = 0,
    task: str | None = None,
    schema: str | None = None,
    image_root: str | Path | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
) -> datasets.Dataset:
    """Load a study dataset in the canonical schema (:mod:`hooked_vlm.data.schema`).

    Args:
        source: "synthetic", a hub id ("nlphuji/flickr30k", "yerevann/coco-karpathy",
            "lmms-lab/VQAv2", "ILSVRC/imagenet-1k", or any hub dataset in a supported schema),
            or a local ``save_to_disk`` folder, data file, or folder of data files / images.
        split: which split; None = the schema's default (test for captions, validation for
            VQAv2 and ImageNet). A single local table without a split column takes None.
        n: how many examples, chosen by ``seed``; None = all, in source order.
        seed: seeds the choice of the ``n`` examples.
        task: "caption", "vqa" or "classify": keep only examples that serve it (captions;
            question and answers; a label), and fail if none does.
        schema: the source schema (see ``ADAPTERS``); None = from the hub id or the columns.
        image_root: folder of the images for sources that only name their files (COCO
            Karpathy: ``image_root/<filepath>/<filename>`` or ``image_root/<filename>``).
        revision: hub revision (default: the registered one, else the main branch).
        cache_dir: ``datasets`` cache folder for hub and local-file loads.

    Returns:
        A ``datasets.Dataset`` with columns id, image (RGB), label, captions, question, answers.

    Raises:
        FileNotFoundError: a local-looking source that does not exist, or missing image files.
        SchemaError: unknown schema, or the source lacks a column its schema needs.
        ValueError: bad task / split / n, or a task the data cannot serve.
    """
    if task is not None and task not in TASK_FIELDS:
        raise ValueError(f"unknown task {task!r}; supported: {sorted(TASK_FIELDS)}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be a positive int or None (all examples), got {n!r}")
    if source == "synthetic":
        for name, value in (("schema", schema), ("image_root", image_root), ("revision", revision)):
            if value is not None:
                raise ValueError(f"{name}= does not apply to the synthetic source")
        return _load_synthetic(split, n, seed, task)

    adapter = get_adapter(schema) if schema is not None else None
    path = Path(source).expanduser()
    if path.exists():
        if revision is not None:
            raise ValueError("revision= applies to hub ids only; this source is a local path")
        raw = _open_local(path, cache_dir)
        adapter = adapter or detect_adapter(_features_of(raw))
        adapter.validate(_features_of(raw))
        table, by_name = _pick_split(raw, adapter, split, source)
    elif _looks_like_hub_id(source):
        hub = HUB_SOURCES.get(source)
        adapter = adapter or (get_adapter(hub.schema) if hub else None)
        wanted = split or (adapter.default_split if adapter else None)
        table = _open_hub(source, hub, wanted, revision, cache_dir)
        adapter = adapter or detect_adapter(table.features)
        adapter.validate(table.features)
        # the hub split was chosen by name, unless the registry says a column holds the split
        by_name = not (hub and hub.hub_split)
    else:
        raise FileNotFoundError(
            f"no such directory or data file: {source!r} (resolved to {path.resolve()}); "
            "a Hugging Face hub id looks like 'owner/name'"
        )
    rows = _split_rows(table, adapter, split, by_name, source)
    return _to_study(table, rows, adapter, n, seed, task, image_root, source)


def _load_synthetic(
    split: str | None, n: int | None, seed: int, task: str | None
) -> datasets.Dataset:
    try:
        module = importlib.import_module(SYNTHETIC_MODULE)
    except ModuleNotFoundError as error:
        if error.name != SYNTHETIC_MODULE:
            raise
        raise ModuleNotFoundError(
            f"source 'synthetic' needs {SYNTHETIC_MODULE} (hooked_vlm/data/synthetic.py with "
            "synthetic_dataset(split, n, seed)), which this installation lacks; pass a hub id "
            "or a local folder instead"
        ) from error
    dataset = module.synthetic_dataset(split=split or "test", n=n, seed=seed)
    validate_study_dataset(dataset)
    dataset = dataset.select_columns(list(STUDY_COLUMNS)).cast(STUDY_FEATURES)
    if task is not None:
        serving = _serves(dataset.select_columns(list(TASK_FIELDS[task])).to_dict(), task)
        if not all(serving):
            raise ValueError(
                f"the synthetic set cannot serve task {task!r}: {serving.count(False)} of "
                f"{len(serving)} examples lack {list(TASK_FIELDS[task])}"
            )
    return dataset


def _looks_like_hub_id(source: str) -> bool:
    """'name' or 'owner/name', not a path into an existing folder, not a data-file name."""
    if not _HUB_ID.fullmatch(source) or Path(source).suffix in _DATA_FILE_BUILDERS:
        return False
    owner = source.split("/")[0]
    return "/" not in source or not Path(owner).is_dir()


@contextmanager
def _offline() -> Iterator[None]:
    """``datasets`` in offline mode: a local load can never reach the network."""
    previous = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = previous


def _open_local(
    path: Path, cache_dir: str | Path | None
) -> datasets.Dataset | datasets.DatasetDict:
    """A local source, as datasets reads it; a clear error for a file it cannot parse."""
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"{path} is empty: a data file needs rows (and a header for csv)")
    try:
        raw = _read_local(path, cache_dir)
    except ValueError as err:
        if "corresponds to no data" not in str(err):  # datasets' words for an empty table
            raise
        raise ValueError(f"{path} holds no rows") from None
    except (datasets.exceptions.DatasetGenerationError, StopIteration, ArrowException) as err:
        cause = err.__cause__ or err.__context__ or err
        detail = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
        raise ValueError(f"cannot read {path}: {detail.splitlines()[0][:300]} (an empty, "
                         "truncated or malformed file?)") from None
    tables = raw.values() if isinstance(raw, datasets.DatasetDict) else [raw]
    if all(len(table) == 0 for table in tables):
        raise ValueError(f"{path} holds no rows")
    return raw


def _read_local(
    path: Path, cache_dir: str | Path | None
) -> datasets.Dataset | datasets.DatasetDict:
    cache = None if cache_dir is None else str(cache_dir)
    with _offline():
        if path.is_file():
            builder = _DATA_FILE_BUILDERS.get(path.suffix)
            if builder is None:
                raise ValueError(
                    f"cannot read {path}: data files must end in {sorted(_DATA_FILE_BUILDERS)}, "
                    "or pass a folder (save_to_disk output, data files, or images)"
                )
            return datasets.load_dataset(
                builder, data_files=str(path), split="train", cache_dir=cache
            )
        if (path / "state.json").exists() or (path / "dataset_dict.json").exists():
            return datasets.load_from_disk(str(path))
        # A folder of data files or images: datasets infers the builder (imagefolder for
        # images, with class folders as labels and metadata.jsonl/csv merged in) and the
        # splits from folder names, and from file names too: "test_cat.png" would land in a
        # "test" split. A folder of images without split folders is read as one table.
        files = [p for p in path.rglob("*") if p.is_file()]
        split_folders = any(p.is_dir() and p.name.lower() in _SPLIT_FOLDERS
                            for p in path.iterdir())
        if not split_folders and any(p.suffix.lower() in _IMAGE_SUFFIXES for p in files):
            return datasets.load_dataset(str(path), data_files={"train": "**"}, cache_dir=cache)
        return datasets.load_dataset(str(path), cache_dir=cache)


def _open_hub(
    source: str,
    hub: HubSource | None,
    split: str | None,
    revision: str | None,
    cache_dir: str | Path | None,
) -> datasets.Dataset:
    hub_split = (hub.hub_split if hub else None) or split
    if hub_split is None:
        raise ValueError(
            f"{source!r} is not a registered hub dataset ({sorted(HUB_SOURCES)}): pass split= "
            "(or schema=, whose default split is used)"
        )
    revision = revision or (hub.revision if hub else None)
    try:
        return datasets.load_dataset(
            source, split=hub_split, revision=revision,
            cache_dir=None if cache_dir is None else str(cache_dir),
        )
    except RuntimeError as error:
        if "Dataset scripts are no longer supported" not in str(error):
            raise
        raise RuntimeError(
            f"{source!r} is a loading-script dataset, which datasets>=4 cannot run. Try "
            "revision='refs/convert/parquet' (the hub's parquet export, where it has one), a "
            "parquet copy (for VQAv2: 'lmms-lab/VQAv2'), or a local copy in one of the "
            "supported schemas"
        ) from error


def _features_of(raw: datasets.Dataset | datasets.DatasetDict) -> datasets.Features:
    if isinstance(raw, datasets.DatasetDict):
        return next(iter(raw.values())).features
    return raw.features


def _pick_split(
    raw: datasets.Dataset | datasets.DatasetDict, adapter: Adapter, split: str | None, source: str
) -> tuple[datasets.Dataset, bool]:
    """One local table, and whether it was chosen by split name.

    A DatasetDict gives its named (or default) split, or its only one when the split is left
    to a split column or to the default; a single table is taken whole.
    """
    if isinstance(raw, datasets.Dataset):
        return raw, False
    wanted = split or adapter.default_split
    for name in (wanted, _SPLIT_ALIASES.get(wanted)):
        if name in raw:
            return raw[name], True
    if len(raw) == 1 and (split is None or adapter.split_column in _features_of(raw)):
        return next(iter(raw.values())), False
    raise ValueError(
        f"{source!r} has no split {wanted!r}"
        + (f" (the {adapter.name!r} default)" if split is None else "")
        + f"; pass split= one of {sorted(raw)}"
    )


def _split_rows(
    table: datasets.Dataset, adapter: Adapter, split: str | None, by_name: bool, source: str
) -> list[int]:
    """Rows of ``table`` in the split: all when the table was chosen by split name, else
    those whose split column names it (the default split when ``split`` is None)."""
    column = adapter.split_column
    if by_name:
        return list(range(len(table)))
    if column is None or column not in table.features:
        if split is not None:
            raise ValueError(
                f"{source!r} is one table with no split column ({adapter.name!r} schema), so "
                f"split={split!r} cannot be applied: leave split=None to use the whole table"
            )
        return list(range(len(table)))
    values = table[column]
    wanted = split or adapter.default_split
    present = set(values)
    name = wanted if wanted in present else _SPLIT_ALIASES.get(wanted)
    if name not in present:
        raise ValueError(
            f"{source!r}: no rows with {column} == {wanted!r}; its {column} values are "
            f"{sorted(present)}"
        )
    return [i for i, v in enumerate(values) if v == name]


def _serves(columns: Columns, task: str) -> list[bool]:
    """Per example: are all the fields ``task`` reads non-empty?"""
    fields = TASK_FIELDS[task]
    return [all(values) for values in zip(*(columns[f] for f in fields), strict=True)]


def _canonical_text(table: datasets.Dataset, rows: list[int], adapter: Adapter) -> Columns:
    """The canonical text columns (and ``image_file``) of ``rows``, empty where not given."""
    reads = [
        c for c in (*adapter.required, *adapter.optional) if c in table.features and c != "image"
    ]
    try:
        text = adapter.convert(table.select_columns(reads).select(rows).to_dict(), table.features,
                               rows)
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        found = ", ".join(f"{c}: {table.features[c]}" for c in reads)
        raise SchemaError(f"the columns do not hold what schema {adapter.name!r} reads ({err}); "
                          f"found {found}") from None
    lists = {c for c, f in STUDY_FEATURES.items() if isinstance(f, datasets.List)}
    return {
        c: text[c] if c in text else [[] if c in lists else "" for _ in rows]
        for c in (*_TEXT_COLUMNS, "image_file")
    }


def _to_study(
    table: datasets.Dataset,
    rows: list[int],
    adapter: Adapter,
    n: int | None,
    seed: int,
    task: str | None,
    image_root: str | Path | None,
    source: str,
) -> datasets.Dataset:
    text = _canonical_text(table, rows, adapter)
    usable = list(range(len(rows)))
    if task is not None:
        usable = [i for i, ok in enumerate(_serves(text, task)) if ok]
        if not usable:
            raise ValueError(
                f"{source!r} cannot serve task {task!r}: no example has "
                f"{' and '.join(TASK_FIELDS[task])} (schema {adapter.name!r})"
            )
    keep = _choose(usable, n, seed, source)
    images = _images(
        table, [rows[i] for i in keep], [text["image_file"][i] for i in keep], image_root, adapter
    )
    texts = datasets.Dataset.from_dict(
        {c: [text[c][i] for i in keep] for c in _TEXT_COLUMNS},
        features=datasets.Features({c: STUDY_FEATURES[c] for c in _TEXT_COLUMNS}),
    )
    study = datasets.concatenate_datasets([images, texts], axis=1)
    try:
        study = study.cast_column("image", STUDY_FEATURES["image"])
    except (TypeError, ValueError, ArrowException) as err:
        raise SchemaError(f"{source!r}: its image column holds {images.features['image']}, not "
                          f"pictures (an Image feature, {{bytes, path}} records or file paths): "
                          f"{str(err).splitlines()[0][:200]}") from None
    return study.select_columns(list(STUDY_COLUMNS))


def _choose(positions: list[int], n: int | None, seed: int, source: str) -> list[int]:
    """All positions, or the first n of a permutation seeded by ``seed``."""
    if n is None:
        return positions
    if n > len(positions):
        raise ValueError(f"n={n} but {source!r} has only {len(positions)} usable examples")
    order = np.random.default_rng(seed).permutation(len(positions))[:n]
    return [positions[i] for i in order]


def _images(
    table: datasets.Dataset,
    rows: Sequence[int],
    files: Sequence[str],
    image_root: str | Path | None,
    adapter: Adapter,
) -> datasets.Dataset:
    """The chosen rows' images: the source's image column, or files under ``image_root``."""
    if "image" in table.features:
        if image_root is not None:
            raise ValueError(
                f"image_root= is for sources that only name their image files; this "
                f"{adapter.name!r} source has its images inside"
            )
        return table.select(rows).select_columns(["image"])
    if image_root is None:
        raise ValueError(
            f"this {adapter.name!r} source has no images, only file names (e.g. {files[:1]}): "
            "pass image_root= pointing at your copy of the images (for COCO Karpathy the "
            "folder holding train2014/ and val2014/, or one flat folder of the files)"
        )
    root = Path(image_root).expanduser()
    paths, missing = [], []
    for name in files:
        found = next((p for p in (root / name, root / Path(name).name) if p.is_file()), None)
        (paths if found else missing).append(str(found or root / name))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(files)} images not found under image_root={str(root)!r}, "
            f"e.g. {missing[:3]} (looked for image_root/<file> and image_root/<file name>)"
        )
    return datasets.Dataset.from_dict(
        {"image": paths}, features=datasets.Features({"image": datasets.Image()})
    )
