"""A synthetic image-text dataset: coloured shapes on plain or textured backgrounds.

Each 64x64 RGB image holds one large *main* object and 0-2 small distractors, each in its
own block of 8 px cells (one cell = one image token of the tiny models). Example ``i`` of a
split is a pure function of ``(split, seed, i)``: its random stream is
``numpy.random.default_rng([seed, SPLIT_CODE[split], i])``, so "train" and "test" draw from
different streams and any slice can be rebuilt alone.

Columns (the canonical schema): ``id``, ``image`` (``datasets.Image()``), ``label`` (the main
object's shape, one word), ``captions`` (three paraphrases), ``question`` and ``answers`` (ten
VQAv2-style answers), plus ``objects``: the scene as a JSON string, for code that asks more
questions of the same image (:func:`ask`).

Example:
    >>> ds = synthetic_dataset("test", n=4)
    >>> ds[0]["label"], ds[0]["question"], ds[0]["answers"][0]
    ('cross', 'what shape is the large object ?', 'cross')
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
SHAPES = ("circle", "square", "triangle", "cross", "star", "diamond")
COLORS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 90, 230),
    "yellow": (240, 220, 40), "purple": (140, 60, 200), "orange": (250, 140, 30),
    "white": (245, 245, 245), "black": (20, 20, 20),
}
BACKGROUNDS = {"gray": (128, 128, 128), "brown": (120, 85, 50), "teal": (40, 120, 120)}
TEXTURES = ("plain", "striped", "dotted")
POSITIONS = ("left", "right", "top", "bottom")
QUESTIONS = {
    "color": ("what color is the large shape ?", "what is the color of the big object ?"),
    "shape": ("what shape is the large object ?", "which shape is the big one ?"),
    "count": ("how many shapes are there ?", "how many objects are in the image ?"),
    "position": ("where is the large shape ?", "on which side is the big object ?"),
}
QUESTION_TYPES = tuple(QUESTIONS)
SPLIT_CODE = {"train": 0, "test": 1}
DEFAULT_SIZE = {"train": 20_000, "test": 1_000}
CELL = 8  # objects occupy whole 8 x 8 px cells: one VQ code / CLIP patch each in the tiny models
MAIN_CELLS, SMALL_CELLS = (3, 4, 5), 2  # the main object spans 3-5 cells a side, distractors 2
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}


@dataclass(frozen=True)
class Shape:
    """One object: shape and colour names, its block of cells ``(x0, y0, x1, y1)`` in pixels
    (multiples of 8; the shape is drawn inside it) and where it sits."""

    shape: str
    color: str
    box: tuple[int, int, int, int]
    position: str
    large: bool


@dataclass(frozen=True)
class Scene:
    """Everything an image shows; ``objects[0]`` is the main object."""

    background: str
    texture: str
    objects: tuple[Shape, ...]

    @property
    def main(self) -> Shape:
        return self.objects[0]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Scene:
        raw = json.loads(text)
        objects = tuple(Shape(**{**o, "box": tuple(o["box"])}) for o in raw["objects"])
        return cls(raw["background"], raw["texture"], objects)


def synthetic_dataset(split: str = "test", n: int | None = None, seed: int = 0) -> Any:
    """The first ``n`` examples (default: 20,000 train, 1,000 test) of ``split`` as a
    ``datasets.Dataset`` with the canonical columns.

    Example:
        >>> train = synthetic_dataset("train", n=1000, seed=0)
    """
    import datasets

    n = DEFAULT_SIZE.get(split, 0) if n is None else n
    rows = [example(split, i, seed) for i in range(_check(split, n))]
    features = datasets.Features({
        "id": datasets.Value("string"),
        "image": datasets.Image(),
        "label": datasets.Value("string"),
        "captions": datasets.List(datasets.Value("string")),
        "question": datasets.Value("string"),
        "answers": datasets.List(datasets.Value("string")),
        "objects": datasets.Value("string"),
    })
    columns = {name: [row[name] for row in rows] for name in features}
    return datasets.Dataset.from_dict(columns, features=features)


def example(split: str, index: int, seed: int = 0) -> dict[str, Any]:
    """Example ``index`` of ``split`` as a row dict (``image`` is a PIL image).

    Example:
        >>> row = example("train", 7)
        >>> row["image"].size
        (64, 64)
    """
    _check(split, index)
    rng = np.random.default_rng([seed, SPLIT_CODE[split], index])
    scene = sample_scene(rng)
    qtype = QUESTION_TYPES[int(rng.integers(len(QUESTION_TYPES)))]
    question, answer = ask(scene, qtype, variant=int(rng.integers(2)))
    return {
        "id": f"synthetic-{split}-{seed}-{index:06d}",
        "image": render(scene, rng),
        "label": scene.main.shape,
        "captions": captions(scene),
        "question": question,
        "answers": answer_variants(qtype, answer),
        "objects": scene.to_json(),
    }


def sample_scene(rng: np.random.Generator) -> Scene:
    """A background, a main object in one of four regions, and 0-2 distractors.

    Objects sit on the 8 x 8 grid of 8 px cells, each in its own block of cells (3-5 cells a
    side for the main object, 2 for a distractor), drawn inside it with a small margin. So
    every image token of the tiny models (one per cell) shows at most one object.
    """
    background = _pick(rng, list(BACKGROUNDS))
    texture = _pick(rng, TEXTURES)
    position = _pick(rng, POSITIONS)
    main = Shape(_pick(rng, SHAPES), _pick(rng, list(COLORS)), _main_box(rng, position),
                 position, True)
    objects = [main]
    for _ in range(int(rng.integers(3))):
        kind, color = _pick(rng, SHAPES), _pick(rng, list(COLORS))
        if (kind, color) == (main.shape, main.color):
            color = _pick(rng, [c for c in COLORS if c != main.color])
        box = _free_box(rng, [o.box for o in objects])
        objects.append(Shape(kind, color, box, _side(box), False))
    return Scene(background, texture, tuple(objects))


def render(scene: Scene, rng: np.random.Generator) -> Image.Image:
    """Draw ``scene``; ``rng`` jitters every colour by up to 12 levels per channel."""
    base = _jitter(BACKGROUNDS[scene.background], rng)
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), base)
    draw = ImageDraw.Draw(image)
    shade = tuple(int(c * 0.8) for c in base)
    if scene.texture == "striped":
        for x in range(-IMAGE_SIZE, IMAGE_SIZE, 6):
            draw.line([(x, 0), (x + IMAGE_SIZE, IMAGE_SIZE)], fill=shade, width=2)
    elif scene.texture == "dotted":
        for y in range(2, IMAGE_SIZE, 6):
            for x in range(2, IMAGE_SIZE, 6):
                draw.rectangle([x, y, x + 1, y + 1], fill=shade)
    for obj in scene.objects:
        _draw_shape(draw, obj.shape, obj.box, _jitter(COLORS[obj.color], rng))
    return image


def silhouette(scene: Scene) -> np.ndarray:
    """The objects' pixels of :func:`render` (the same geometry, no colour, texture or
    jitter): a bool ``[64, 64]`` mask, True where an object is drawn.

    Example:
        >>> silhouette(sample_scene(np.random.default_rng(0))).mean()   # share of object pixels
    """
    image = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        _draw_shape(draw, obj.shape, obj.box, 255)
    return np.asarray(image) > 127


def ask(scene: Scene, qtype: str, variant: int = 0) -> tuple[str, str]:
    """Question ``variant`` (0 or 1) of type ``qtype`` about ``scene``, and its answer.

    Example:
        >>> ask(sample_scene(np.random.default_rng(0)), "color")
        ('what color is the large shape ?', 'blue')
    """
    if qtype not in QUESTIONS:
        raise KeyError(f"unknown question type {qtype!r}; known: {QUESTION_TYPES}")
    answers = {
        "color": scene.main.color, "shape": scene.main.shape,
        "count": str(len(scene.objects)), "position": scene.main.position,
    }
    return QUESTIONS[qtype][variant], answers[qtype]


def question_type(question: str) -> str:
    """The type ("color", "shape", "count", "position") of one of :data:`QUESTIONS`."""
    for qtype, texts in QUESTIONS.items():
        if question in texts:
            return qtype
    raise KeyError(f"{question!r} is not a synthetic-dataset question; see QUESTIONS")


def answer_variants(qtype: str, answer: str) -> list[str]:
    """Ten VQAv2-style answers: eight of ``answer`` and two paraphrases where one exists."""
    if qtype == "count":
        return [answer] * 8 + [NUMBER_WORDS[int(answer)]] * 2
    if qtype == "position":
        return [answer] * 8 + [f"{answer} side"] * 2
    return [answer] * 10


def captions(scene: Scene) -> list[str]:
    """Three paraphrases naming the main object, each distractor and the background."""
    main = f"{scene.main.color} {scene.main.shape}"
    small = [f"a small {o.color} {o.shape}" for o in scene.objects[1:]]
    listed = " and ".join([f"a {main}", *small])
    background = scene.background if scene.texture == "plain" else (
        f"{scene.texture} {scene.background}")
    extra = len(small)
    tail = "" if not extra else f" and {NUMBER_WORDS[extra]} small shape{'s' * (extra > 1)}"
    return [
        f"{listed} on a {background} background",
        f"a {background} background with {listed}",
        f"a large {main} on the {scene.main.position}{tail}",
    ]


def words() -> set[str]:
    """Every word a caption, question or answer of this dataset can contain."""
    out = {"a", "small", "large", "and", "on", "the", "with", "background", "side", "shape",
           "shapes", *SHAPES, *COLORS, *BACKGROUNDS, *TEXTURES, *POSITIONS,
           *NUMBER_WORDS.values(), *(str(k) for k in NUMBER_WORDS)}
    for texts in QUESTIONS.values():
        for text in texts:
            out.update(text.split())
    return out


# ---------------------------------------------------------------------------------- helpers
def _check(split: str, n: int) -> int:
    """``n`` (a count or an index) once ``split`` is known and ``n`` is not negative."""
    if split not in SPLIT_CODE:
        raise ValueError(f"unknown split {split!r}; the synthetic dataset has {list(SPLIT_CODE)}")
    if n < 0:
        raise ValueError(f"n and indices must be >= 0, got {n}")
    return n


def _pick(rng: np.random.Generator, options: Any) -> Any:
    return options[int(rng.integers(len(options)))]


def _jitter(rgb: tuple[int, int, int], rng: np.random.Generator) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.integers(-12, 13), 0, 255)) for c in rgb)


def _main_box(rng: np.random.Generator, position: str) -> tuple[int, int, int, int]:
    """A block of 3-5 cells a side whose centre lies clearly in the ``position`` region: at
    least 1.5 cells from the image centre along that side's axis, and at least one cell less
    across it."""
    k = int(_pick(rng, MAIN_CELLS))
    grid = IMAGE_SIZE // CELL
    options = [(x, y) for x in range(grid - k + 1) for y in range(grid - k + 1)
               if _region(x + k / 2 - grid / 2, y + k / 2 - grid / 2) == position]
    x, y = options[int(rng.integers(len(options)))]
    return (x * CELL, y * CELL, (x + k) * CELL, (y + k) * CELL)


def _region(dx: float, dy: float) -> str | None:
    """left/right/top/bottom for a centre offset (in cells), or ``None`` when ambiguous."""
    along, across = (dx, dy) if abs(dx) > abs(dy) else (dy, dx)
    if abs(along) < 1.5 or abs(across) > abs(along) - 1:
        return None
    if along is dx:
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def _free_box(
    rng: np.random.Generator, taken: list[tuple[int, int, int, int]]
) -> tuple[int, int, int, int]:
    """A free 2 x 2-cell block (there is always one: the main object leaves 3+ columns)."""
    size = SMALL_CELLS * CELL
    options = [(x, y) for x in range(0, IMAGE_SIZE - size + 1, CELL)
               for y in range(0, IMAGE_SIZE - size + 1, CELL)
               if all(_apart((x, y, x + size, y + size), box) for box in taken)]
    x, y = options[int(rng.integers(len(options)))]
    return (x, y, x + size, y + size)


def _apart(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def _side(box: tuple[int, int, int, int]) -> str:
    """Where a box's centre lies: the axis farther from the image centre decides."""
    dx = (box[0] + box[2]) / 2 - IMAGE_SIZE / 2
    dy = (box[1] + box[3]) / 2 - IMAGE_SIZE / 2
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, ...], fill: tuple) -> None:
    inset = 1 if box[2] - box[0] > SMALL_CELLS * CELL else 2
    x0, y0, x1, y1 = box[0] + inset, box[1] + inset, box[2] - inset - 1, box[3] - inset - 1
    box = (x0, y0, x1, y1)
    cx, cy, s = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        m = s * 0.08
        draw.rectangle([x0 + m, y0 + m, x1 - m, y1 - m], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    elif shape == "cross":
        t = s / 6
        draw.rectangle([cx - t, y0, cx + t, y1], fill=fill)
        draw.rectangle([x0, cy - t, x1, cy + t], fill=fill)
    elif shape == "star":
        points = []
        for k in range(10):
            r = s / 2 if k % 2 == 0 else s / 5
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + r * math.cos(angle), cy + 0.05 * s + r * math.sin(angle)))
        draw.polygon(points, fill=fill)
