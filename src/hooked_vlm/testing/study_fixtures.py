"""Offline stand-ins for a study's model and data: tiny random VLMs saved with their processor
and a model-config YAML, and a small dataset in the canonical study schema.

They let a whole study run from disk exactly as with a real checkpoint and dataset
(``from_pretrained(dir, model_config=yaml)``, ``load_study_data(dir)``), in seconds. The
weights are random: numbers mean nothing. Class names, captions and questions are words of the
tiny vocabulary (``w0`` ... ``w47``), so every answer is a real token.

Example:
    >>> model_dir, config_yaml = save_tiny_study_model("chameleon", tmp / "model")
    >>> data_dir = save_tiny_study_data(tmp / "data", n=12)
    >>> NarrowGateConfig(model=str(model_dir), model_config=str(config_yaml), data=str(data_dir))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from hooked_vlm.testing.processors import tiny_processor
from hooked_vlm.testing.tiny import build_tiny

CLASS_NAMES = ("w10", "w11", "w12", "w13", "w14", "w15")
_QWEN = {"boi": "<|vision_start|>", "image": "<|image_pad|>", "eoi": "<|vision_end|>"}
_SPECIALS = {
    "chameleon": {"bos": "<s>", "boi": "<racm3:break>", "image": "<image>", "eoi": "<eoss>"},
    "llava": {"bos": "<s>", "image": "<image>"},
    "qwen2_5_vl": _QWEN,
    "qwen3_vl": _QWEN,
    "gemma3": {"bos": "<bos>", "boi": "<start_of_image>", "image": "<start_of_image>",
               "eoi": "<end_of_image>"},
    "paligemma": {"bos": "<bos>", "image": "<image>"},
}
_NATIVE = {"chameleon": True}
# the image's place in the prompt, as each processor expects it
_IMAGE = {"qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>",
          "qwen3_vl": "<|vision_start|><|image_pad|><|vision_end|>"}


def save_tiny_study_model(
    family: str, out_dir: str | Path, n_layers: int = 4, seed: int = 0
) -> tuple[Path, Path]:
    """Save tiny ``family`` (a key of ``_SPECIALS``: "chameleon", "llava", and the new
    families whose processors run offline) and its processor to ``out_dir``, and a
    model-config YAML beside it; returns ``(model_dir, yaml_path)``."""
    if family not in _SPECIALS:
        raise KeyError(f"no study fixture for {family!r}; available: {sorted(_SPECIALS)}")
    out = Path(out_dir)
    tiny = build_tiny(family, seed=seed, n_layers=n_layers)
    tiny.model.save_pretrained(out)
    tiny_processor(family).save_pretrained(out)
    image = _IMAGE.get(family, _SPECIALS[family]["image"])
    lead = "" if family == "paligemma" else "w1 w2 "  # PaliGemma's image comes first
    config = {
        "name": f"tiny-random-{family}", "hf_id": None,
        "architecture": type(tiny.model).__name__, "native": _NATIVE.get(family, False),
        "dtype": "float32", "special_tokens": _SPECIALS[family],
        "processor_kwargs": {"return_for_text_completion": True} if family == "chameleon" else {},
        "prompts": {"caption": f"{lead}{image} w3 w4", "vqa": f"{lead}{image} {{question}} w5",
                    "classify": f"{lead}{image} w6 w7"},
        "class_names": list(CLASS_NAMES),
    }
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return out, path


def save_tiny_study_data(out_dir: str | Path, n: int = 12, seed: int = 0) -> Path:
    """A ``save_to_disk`` dataset of ``n`` 40x40 pictures in the canonical schema: each class a
    colour and a stripe direction, with captions, a question and ten answers."""
    import datasets

    from hooked_vlm.data import STUDY_FEATURES

    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {c: [] for c in STUDY_FEATURES}
    for i in range(n):
        label = i % len(CLASS_NAMES)
        rows["id"].append(f"tiny-{i}")
        rows["image"].append(_picture(label, rng))
        rows["label"].append(CLASS_NAMES[label])
        rows["captions"].append([f"w20 w{21 + label} w30", f"w20 w{21 + label}"])
        rows["question"].append(f"w{40 + i % 3} w44")
        rows["answers"].append([f"w{21 + label}"] * 7 + ["w30"] * 3)
    dataset = datasets.Dataset.from_dict(rows, features=STUDY_FEATURES)
    dataset.save_to_disk(str(out_dir))
    return Path(out_dir)


def _picture(label: int, rng: np.random.Generator) -> Image.Image:
    colour = np.array([(label * 97) % 256, (label * 53 + 80) % 256, (label * 29 + 160) % 256])
    axis = np.arange(40)
    stripes = ((axis[:, None] if label % 2 else axis[None, :]) // 5 % 2) * 60
    pixels = colour[None, None] * 0.7 + stripes[..., None] + rng.normal(0, 12, (40, 40, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
