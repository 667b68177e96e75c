"""Toy data: the procedural "shapes" dataset (definition in data/shapes.json) and a folder loader.

Captions follow a small compositional grammar:
  one object:  "a {size} {color} {shape}"                       e.g. "a large teal circle"
  two objects: "a {color} {shape} {relation} a {color} {shape}"  e.g. "a red square above a pink circle"
Captions that contain a held-out (color, shape) pair are never used for training: they test
compositional generalisation (the model has seen "blue" and "triangle", never "blue triangle").
"""
import itertools
import json
from functools import lru_cache
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


@lru_cache(maxsize=None)
def load_spec(path: str | None = None) -> dict:
    """The dataset definition (colours, shapes, sizes, relations, held-out pairs)."""
    return json.loads(Path(path or DATA_DIR / "shapes.json").read_text())


def one_object_captions(spec: dict) -> list[str]:
    return [f"a {size} {color} {shape}"
            for size, color, shape in itertools.product(spec["sizes"], spec["colors"], spec["shapes"])]


def two_object_captions(spec: dict) -> list[str]:
    objects = list(itertools.product(spec["colors"], spec["shapes"]))
    return [f"a {c1} {s1} {rel} a {c2} {s2}"
            for rel in spec["relations"] for (c1, s1), (c2, s2) in itertools.product(objects, objects)
            if c1 != c2]  # two objects never share a colour, so the detector can tell them apart


def is_held_out(caption: str, spec: dict | None = None) -> bool:
    """True if the caption names a (color, shape) pair that training never sees."""
    spec = spec or load_spec()
    return any(f"{color} {shape}" in caption for color, shape in spec["held_out_pairs"])


def all_captions(split: str = "all", spec: dict | None = None) -> list[str]:
    """Every caption the grammar makes; split is 'train', 'held_out' or 'all'."""
    spec = spec or load_spec()
    captions = one_object_captions(spec) + two_object_captions(spec)
    if split == "all":
        return captions
    keep_held_out = {"train": False, "held_out": True}[split]
    return [c for c in captions if is_held_out(c, spec) == keep_held_out]
