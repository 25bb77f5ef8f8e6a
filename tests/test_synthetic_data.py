"""The synthetic shapes dataset: deterministic, disjoint splits, the canonical columns."""

from __future__ import annotations

import hashlib
from collections import Counter

import datasets
import numpy as np
import pytest

from hooked_vlm.data import synthetic
from hooked_vlm.data.synthetic import Scene, example, synthetic_dataset


def digest(image) -> str:
    return hashlib.sha256(np.asarray(image).tobytes()).hexdigest()


def test_columns_and_types_are_the_canonical_schema():
    ds = synthetic_dataset("test", n=8)
    assert list(ds.features) == ["id", "image", "label", "captions", "question", "answers",
                                 "objects"]
    assert isinstance(ds.features["image"], datasets.Image)
    row = ds[0]
    assert row["image"].size == (64, 64) and row["image"].mode == "RGB"
    assert isinstance(row["id"], str) and isinstance(row["question"], str)
    assert all(isinstance(c, str) for c in row["captions"]) and len(row["captions"]) == 3
    assert len(row["answers"]) == 10 and all(isinstance(a, str) for a in row["answers"])
    assert len(set(ds["id"])) == len(ds)


def test_rows_agree_with_their_scene():
    for row in synthetic_dataset("train", n=40):
        scene = Scene.from_json(row["objects"])
        assert row["label"] == scene.main.shape and row["label"] in synthetic.SHAPES
        assert len(row["label"].split()) == 1
        qtype = synthetic.question_type(row["question"])
        assert Counter(row["answers"]).most_common(1)[0][0] == synthetic.ask(scene, qtype)[1]
        assert all(f"{scene.main.color} {scene.main.shape}" in c for c in row["captions"])
        assert 1 <= len(scene.objects) <= 3
        image = np.asarray(row["image"]).astype(int)
        x0, y0, x1, y1 = scene.main.box  # the main object's colour is at its box centre
        centre = image[(y0 + y1) // 2 + 1, (x0 + x1) // 2]
        assert np.abs(centre - synthetic.COLORS[scene.main.color]).max() <= 12


def test_example_i_is_a_pure_function_of_split_seed_and_index():
    ds = synthetic_dataset("train", n=6, seed=3)
    alone = example("train", 5, seed=3)
    assert ds[5]["id"] == alone["id"] and ds[5]["objects"] == alone["objects"]
    assert digest(ds[5]["image"]) == digest(alone["image"])
    again = synthetic_dataset("train", n=6, seed=3)
    assert [digest(r["image"]) for r in again] == [digest(r["image"]) for r in ds]
    other_seed = synthetic_dataset("train", n=6, seed=4)
    assert other_seed[0]["objects"] != ds[0]["objects"]


def test_train_and_test_splits_are_disjoint():
    train = {digest(example("train", i)["image"]) for i in range(300)}
    test = {digest(example("test", i)["image"]) for i in range(300)}
    assert not train & test


def test_every_question_type_shape_and_position_occurs():
    rows = [example("test", i) for i in range(200)]
    assert {synthetic.question_type(r["question"]) for r in rows} == set(synthetic.QUESTION_TYPES)
    assert {r["label"] for r in rows} == set(synthetic.SHAPES)
    scenes = [Scene.from_json(r["objects"]) for r in rows]
    assert {s.main.position for s in scenes} == set(synthetic.POSITIONS)
    assert {len(s.objects) for s in scenes} == {1, 2, 3}


def test_texts_use_only_the_listed_words():
    vocabulary = synthetic.words()
    for i in range(100):
        row = example("train", i)
        scene = Scene.from_json(row["objects"])
        texts = [*row["captions"], row["question"], *row["answers"]]
        texts += [q for t in synthetic.QUESTION_TYPES for q in synthetic.ask(scene, t)]
        for text in texts:
            assert set(text.split()) <= vocabulary, text


def test_bad_arguments_say_what_is_accepted():
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        synthetic_dataset("validation", n=2)
    with pytest.raises(ValueError, match=">= 0"):
        synthetic_dataset("test", n=-1)
    with pytest.raises(KeyError, match="unknown question type"):
        synthetic.ask(Scene.from_json(example("test", 0)["objects"]), "size")
