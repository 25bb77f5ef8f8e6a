"""load_study_data: tiny local datasets in each hub schema normalise to the study schema.

Every image's colour is planted from its source row, so a test can check that each example
kept its own image through split selection, task filtering and subsampling.
"""

from __future__ import annotations

import io
import json
import socket
import sys
import types
from functools import partial

import datasets
import pytest
from PIL import Image

from hooked_vlm.data import (
    STUDY_COLUMNS,
    STUDY_FEATURES,
    SchemaError,
    load_study_data,
    validate_study_dataset,
)
from hooked_vlm.data.loaders import SYNTHETIC_MODULE


def _color(i: int) -> tuple[int, int, int]:
    return (i * 37 % 256, 255 - i * 11 % 256, 100)


def _image(i: int, mode: str = "RGB") -> Image.Image:
    image = Image.new("RGB", (4, 4), _color(i))
    return image.convert(mode)


def _png(i: int, mode: str = "RGB") -> dict:
    buffer = io.BytesIO()
    _image(i, mode).save(buffer, "PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _pixel(example: dict) -> tuple[int, int, int]:
    return example["image"].getpixel((0, 0))


@pytest.fixture
def load(tmp_path):
    """load_study_data with a private datasets cache (nothing written to ~/.cache)."""
    return partial(load_study_data, cache_dir=tmp_path / "cache")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any socket connection fails: local loading must never reach the network."""

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --- one writer per hub schema ------------------------------------------------------------

FLICKR_SPLITS = ["train", "train", "val", "test", "val", "test", "test", "train"]


def flickr_table() -> datasets.Dataset:
    """nlphuji/flickr30k: image, caption (list), sentids, split, img_id, filename."""
    rows = range(len(FLICKR_SPLITS))
    return datasets.Dataset.from_dict(
        {
            # grey (mode L) images: the loader must hand them back as RGB
            "image": [_png(i, mode="L") for i in rows],
            "caption": [[f"caption {i}.{k}" for k in range(5)] for i in rows],
            "sentids": [[str(5 * i + k) for k in range(5)] for i in rows],
            "split": FLICKR_SPLITS,
            "img_id": [str(i) for i in rows],
            "filename": [f"{1000 + i}.jpg" for i in rows],
        },
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "caption": datasets.List(datasets.Value("string")),
                "sentids": datasets.List(datasets.Value("string")),
                "split": datasets.Value("string"),
                "img_id": datasets.Value("string"),
                "filename": datasets.Value("string"),
            }
        ),
    )


def vqav2_table(n: int = 6) -> datasets.Dataset:
    """lmms-lab/VQAv2: answers are 10 {answer, answer_confidence, answer_id} records."""
    answer = {"answer": datasets.Value("string"), "answer_confidence": datasets.Value("string"),
              "answer_id": datasets.Value("int64")}
    return datasets.Dataset.from_dict(
        {
            "question_type": ["what"] * n,
            "multiple_choice_answer": [f"a{i}" for i in range(n)],
            "answers": [
                [{"answer": f"a{i}-{k}", "answer_confidence": "yes", "answer_id": k + 1}
                 for k in range(10)]
                for i in range(n)
            ],
            "image_id": [500 + i for i in range(n)],
            "answer_type": ["other"] * n,
            "question_id": [9000 + i for i in range(n)],
            "question": [f"what is {i}?" for i in range(n)],
            "image": [_png(i, mode="RGBA") for i in range(n)],
        },
        features=datasets.Features(
            {
                "question_type": datasets.Value("string"),
                "multiple_choice_answer": datasets.Value("string"),
                "answers": datasets.List(answer),
                "image_id": datasets.Value("int64"),
                "answer_type": datasets.Value("string"),
                "question_id": datasets.Value("int64"),
                "question": datasets.Value("string"),
                "image": datasets.Image(),
            }
        ),
    )


IMAGENET_NAMES = ["tench, Tinca tinca", "goldfish, Carassius auratus", "great white shark"]


def imagenet_table(labels: list[int]) -> datasets.Dataset:
    """ILSVRC/imagenet-1k: image + ClassLabel label (-1 where unlabelled, as its test split)."""
    return datasets.Dataset.from_dict(
        {"image": [_png(i) for i in range(len(labels))], "label": labels},
        features=datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(names=IMAGENET_NAMES)}
        ),
    )


def write_coco(tmp_path, split_values: list[str]) -> tuple:
    """yerevann/coco-karpathy as jsonl (no images) and a COCO-style images folder."""
    root = tmp_path / "coco"
    (root / "val2014").mkdir(parents=True)
    lines = []
    for i, split in enumerate(split_values):
        filename = f"COCO_val2014_{40 + i:012d}.jpg"
        _image(i).save(root / "val2014" / filename, "PNG")  # content sniffed, not the suffix
        lines.append({
            "filepath": "val2014", "sentids": [5 * i + k for k in range(5)], "filename": filename,
            "imgid": i, "split": split, "sentences": [f"coco {i}.{k}" for k in range(5)],
            "cocoid": 40 + i, "url": f"http://images.cocodataset.org/val2014/{filename}",
        })
    annotations = tmp_path / "karpathy.jsonl"
    annotations.write_text("\n".join(json.dumps(line) for line in lines))
    return annotations, root


def check_study(data: datasets.Dataset) -> None:
    """Canonical columns and features, RGB images, and each image planted from its own id."""
    validate_study_dataset(data)
    assert tuple(data.column_names) == STUDY_COLUMNS
    assert data.features == STUDY_FEATURES
    assert len(set(data["id"])) == len(data)


# --- each schema normalises ---------------------------------------------------------------

def test_flickr30k_parquet_test_split_by_column(tmp_path, load):
    path = tmp_path / "flickr.parquet"
    flickr_table().to_parquet(str(path))
    data = load(str(path), split="test")
    check_study(data)
    assert data["id"] == ["3", "5", "6"]  # the rows whose split column says test, in order
    row = data[1]
    assert row["captions"] == [f"caption 5.{k}" for k in range(5)]
    assert (row["label"], row["question"], row["answers"]) == ("", "", [])
    assert row["image"].mode == "RGB"
    grey = _image(5, mode="L").getpixel((0, 0))
    assert _pixel(row) == (grey, grey, grey)
    # default split is test; "validation" finds the column's "val"
    assert load(str(path))["id"] == data["id"]
    assert load(str(path), split="validation")["id"] == ["2", "4"]


def test_vqav2_save_to_disk_dict(tmp_path, load):
    path = tmp_path / "vqa"
    datasets.DatasetDict({"validation": vqav2_table(), "testdev": vqav2_table(2)}).save_to_disk(
        str(path)
    )
    data = load(str(path), task="vqa")  # default split: validation
    check_study(data)
    assert len(data) == 6
    row = data[4]
    assert row["id"] == "9004" and row["question"] == "what is 4?"
    assert row["answers"] == [f"a4-{k}" for k in range(10)]
    assert (row["label"], row["captions"]) == ("", [])
    assert _pixel(row) == _color(4)  # RGBA -> RGB
    assert len(load(str(path), split="testdev")) == 2
    with pytest.raises(ValueError, match=r"no split 'test'; pass split= one of \['testdev'"):
        load(str(path), split="test")


def test_imagenet_classlabel_first_synonym(tmp_path, load):
    path = tmp_path / "imagenet.parquet"
    imagenet_table([0, 1, 2, -1, 1]).to_parquet(str(path))
    data = load(str(path))
    check_study(data)
    assert data["label"] == ["tench", "goldfish", "great white shark", "", "goldfish"]
    assert data["id"] == ["0", "1", "2", "3", "4"]
    assert [_pixel(row) for row in data] == [_color(i) for i in range(5)]
    # "classify" drops the unlabelled row
    assert load(str(path), task="classify")["id"] == ["0", "1", "2", "4"]


def test_coco_karpathy_images_from_image_root(tmp_path, load):
    annotations, root = write_coco(tmp_path, ["test", "val", "test", "test"])
    data = load(str(annotations), image_root=root)  # default split: test
    check_study(data)
    assert data["id"] == ["40", "42", "43"]
    assert data[1]["captions"] == [f"coco 2.{k}" for k in range(5)]
    assert [_pixel(row) for row in data] == [_color(i) for i in (0, 2, 3)]
    # a flat folder of the files works too
    flat = tmp_path / "flat"
    (root / "val2014").rename(flat)
    assert load(str(annotations), image_root=flat, split="val")["id"] == ["41"]


def test_coco_karpathy_image_root_errors(tmp_path, load):
    annotations, root = write_coco(tmp_path, ["test", "test"])
    with pytest.raises(ValueError, match="pass image_root="):
        load(str(annotations))
    with pytest.raises(FileNotFoundError, match=r"2 of 2 images not found"):
        load(str(annotations), image_root=tmp_path / "elsewhere")
    path = tmp_path / "flickr.parquet"
    flickr_table().to_parquet(str(path))
    with pytest.raises(ValueError, match="has its images inside"):
        load(str(path), image_root=root)


def test_imagefolder_class_folders(tmp_path, load):
    for i, name in enumerate(["cat", "cat", "dog", "emu", "dog"]):
        (tmp_path / "pics" / name).mkdir(parents=True, exist_ok=True)
        _image(i).save(tmp_path / "pics" / name / f"{i}.png")
    data = load(str(tmp_path / "pics"), task="classify")
    check_study(data)
    labels = {_pixel(row): row["label"] for row in data}
    assert labels == {_color(0): "cat", _color(1): "cat", _color(2): "dog", _color(3): "emu",
                      _color(4): "dog"}


def test_imagefolder_with_metadata_jsonl(tmp_path, load):
    folder = tmp_path / "vqa_pics"
    folder.mkdir()
    records = []
    for i in range(4):
        _image(i).save(folder / f"img{i}.png")
        records.append({"file_name": f"img{i}.png", "id": f"q{i}", "question": f"q {i}?",
                        "answers": [f"ans {i}"] * 3, "captions": [f"cap {i}"]})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    data = load(str(folder), task="vqa")
    check_study(data)
    by_id = {row["id"]: row for row in data}
    assert set(by_id) == {"q0", "q1", "q2", "q3"}
    for i in range(4):
        row = by_id[f"q{i}"]
        assert row["question"] == f"q {i}?" and row["answers"] == [f"ans {i}"] * 3
        assert row["captions"] == [f"cap {i}"] and row["label"] == ""
        assert _pixel(row) == _color(i)


def test_imagefolder_with_metadata_csv_lists_as_json(tmp_path, load):
    folder = tmp_path / "cap_pics"
    folder.mkdir()
    lines = ["file_name,captions"]
    for i in range(3):
        _image(i).save(folder / f"{i}.png")
        lines.append(f'{i}.png,"[""a {i}"", ""b {i}""]"' if i else f"{i}.png,only one")
    (folder / "metadata.csv").write_text("\n".join(lines))
    data = load(str(folder), task="caption")
    check_study(data)
    captions = {_pixel(row): row["captions"] for row in data}
    assert captions == {_color(0): ["only one"], _color(1): ["a 1", "b 1"],
                        _color(2): ["a 2", "b 2"]}


# --- deterministic subsampling ------------------------------------------------------------

def test_subsampling_is_a_seeded_prefix(tmp_path, load):
    path = tmp_path / "vqa.parquet"
    vqav2_table(20).to_parquet(str(path))
    five = load(str(path), n=5, seed=3)
    assert five["id"] == load(str(path), n=5, seed=3)["id"]  # same arguments, same examples
    assert load(str(path), n=3, seed=3)["id"] == five["id"][:3]  # smaller n: a prefix
    assert load(str(path), n=5, seed=4)["id"] != five["id"]
    everything = load(str(path))
    assert everything["id"] == [str(9000 + i) for i in range(20)]  # n=None: source order
    assert set(five["id"]) < set(everything["id"]) and len(set(five["id"])) == 5
    for row in five:  # each example kept its own image and text
        i = int(row["id"]) - 9000
        assert _pixel(row) == _color(i) and row["question"] == f"what is {i}?"
    with pytest.raises(ValueError, match="n=21 but .* has only 20"):
        load(str(path), n=21)
    with pytest.raises(ValueError, match="positive int"):
        load(str(path), n=0)


# --- clear errors -------------------------------------------------------------------------

def test_unknown_schema_lists_supported(tmp_path, load):
    path = tmp_path / "flickr.parquet"
    flickr_table().to_parquet(str(path))
    with pytest.raises(SchemaError, match=r"unknown schema 'coco'.*flickr30k.*coco_karpathy"):
        load(str(path), schema="coco")


def test_forced_schema_names_missing_columns(tmp_path, load):
    path = tmp_path / "flickr.parquet"
    flickr_table().to_parquet(str(path))
    with pytest.raises(SchemaError, match=r"schema 'vqav2'.*missing columns \['question', "
                                          r"'question_id', 'answers'\]"):
        load(str(path), schema="vqav2")


def test_undetectable_columns(tmp_path, load):
    path = tmp_path / "odd.parquet"
    datasets.Dataset.from_dict({"image": [_png(0)], "text": ["x"]},
                               features=datasets.Features({"image": datasets.Image(),
                                                           "text": datasets.Value("string")})
                               ).to_parquet(str(path))
    with pytest.raises(SchemaError, match=r"no supported schema fits .*\['image', 'text'\]"):
        load(str(path))


def test_task_the_data_cannot_serve(tmp_path, load):
    path = tmp_path / "flickr.parquet"
    flickr_table().to_parquet(str(path))
    with pytest.raises(ValueError, match="cannot serve task 'vqa'.*question and answers"):
        load(str(path), task="vqa")
    with pytest.raises(ValueError, match="cannot serve task 'classify'"):
        load(str(path), task="classify")
    with pytest.raises(ValueError, match="unknown task 'captioning'"):
        load(str(path), task="captioning")


def test_split_on_a_single_table_without_split_column(tmp_path, load):
    path = tmp_path / "imagenet.parquet"
    imagenet_table([0, 1]).to_parquet(str(path))
    with pytest.raises(ValueError, match="no split column.*leave split=None"):
        load(str(path), split="validation")


def test_nonexistent_local_path_is_not_sent_to_the_hub(tmp_path, monkeypatch, load):
    def hub(*args, **kwargs):
        raise AssertionError(f"sent to the hub: {args}")

    monkeypatch.setattr(datasets, "load_dataset", hub)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for source in (str(tmp_path / "missing"), "./missing", "data/flickr", "~/no/such/dir",
                   "missing.parquet"):
        with pytest.raises(FileNotFoundError, match="no such directory"):
            load(source)


def test_local_loads_run_offline_and_restore_the_setting(tmp_path, load):
    path = tmp_path / "flickr.parquet"
    flickr_table().to_parquet(str(path))
    before = datasets.config.HF_HUB_OFFLINE
    seen = {}
    real = datasets.load_dataset

    def spy(*args, **kwargs):
        seen["offline"] = datasets.config.HF_HUB_OFFLINE
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets, "load_dataset", spy)
        load(str(path))
    assert seen["offline"] is True and datasets.config.HF_HUB_OFFLINE == before


def test_validator_names_missing_and_mistyped_columns():
    bad = datasets.Dataset.from_dict({"id": [1], "image": [_png(0)], "captions": ["one"]},
                                     features=datasets.Features({
                                         "id": datasets.Value("int64"), "image": datasets.Image(),
                                         "captions": datasets.Value("string")}))
    with pytest.raises(SchemaError) as error:
        validate_study_dataset(bad)
    message = str(error.value)
    assert "missing columns ['label', 'question', 'answers']" in message
    assert "id: expected Value('string'), found Value('int64')" in message
    assert "captions: expected List(Value('string'))" in message


# --- hub ids (datasets.load_dataset replaced: no network) -----------------------------------

def test_hub_ids_pick_schema_split_and_revision(monkeypatch, load):
    calls = []

    def fake_hub(source, **kwargs):
        calls.append((source, kwargs))
        return {"nlphuji/flickr30k": flickr_table, "lmms-lab/VQAv2": vqav2_table}[source]()

    monkeypatch.setattr(datasets, "load_dataset", fake_hub)
    flickr = load("nlphuji/flickr30k", split="test", n=2, seed=0)
    assert calls[-1][0] == "nlphuji/flickr30k"
    assert calls[-1][1]["split"] == "test" and calls[-1][1]["revision"] == "refs/convert/parquet"
    assert set(flickr["id"]) <= {"3", "5", "6"}  # Karpathy test rows, chosen by the column
    assert load("nlphuji/flickr30k", split="train")["id"] == ["0", "1", "7"]
    assert calls[-1][1]["split"] == "test"  # the one hub split; the column picks train

    vqa = load("lmms-lab/VQAv2", task="vqa")
    assert calls[-1][1]["split"] == "validation" and calls[-1][1]["revision"] is None
    check_study(vqa)


def test_hub_script_dataset_gets_a_hint(monkeypatch, load):
    def scripted(source, **kwargs):
        raise RuntimeError("Dataset scripts are no longer supported, but found VQAv2.py")

    monkeypatch.setattr(datasets, "load_dataset", scripted)
    with pytest.raises(RuntimeError, match="lmms-lab/VQAv2"):
        load("HuggingFaceM4/VQAv2")


def test_unregistered_hub_id_needs_a_split(monkeypatch, load):
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("loaded"))
    with pytest.raises(ValueError, match="pass split="):
        load("someone/captions")


# --- synthetic ----------------------------------------------------------------------------

def _canonical(n: int, **overrides) -> datasets.Dataset:
    columns = {"id": [f"s{i}" for i in range(n)], "image": [_png(i) for i in range(n)],
               "label": ["circle"] * n, "captions": [["a circle"]] * n, "question": [""] * n,
               "answers": [[]] * n}
    columns.update(overrides)
    return datasets.Dataset.from_dict(columns, features=STUDY_FEATURES)


def test_synthetic_dispatch(monkeypatch):
    calls = []

    def synthetic_dataset(split="test", n=None, seed=0):
        calls.append((split, n, seed))
        return _canonical(n or 3)

    fake = types.ModuleType(SYNTHETIC_MODULE)
    fake.synthetic_dataset = synthetic_dataset
    monkeypatch.setitem(sys.modules, SYNTHETIC_MODULE, fake)
    data = load_study_data("synthetic", n=4, seed=7, task="classify")
    assert calls == [("test", 4, 7)]
    check_study(data)
    assert data["label"] == ["circle"] * 4
    with pytest.raises(ValueError, match="synthetic set cannot serve task 'vqa'"):
        load_study_data("synthetic", task="vqa")
    with pytest.raises(ValueError, match="schema= does not apply"):
        load_study_data("synthetic", schema="flickr30k")


def test_synthetic_missing_module_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, SYNTHETIC_MODULE, None)
    with pytest.raises(ModuleNotFoundError, match="synthetic.py"):
        load_study_data("synthetic")


def test_real_synthetic_module_fits_the_schema():
    pytest.importorskip(SYNTHETIC_MODULE)
    check_study(load_study_data("synthetic", n=4))
