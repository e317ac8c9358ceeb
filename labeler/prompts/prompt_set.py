"""The saved-prompts file (`prompts.json`, version 1): guides drawn on a few reference images.

`PromptSet` is the file's content; this module reads, validates and writes it. The guide classes it
holds (`ObjectGuides`, `ReferenceGuides`, `class_name`) live in `labeler.types.guides` and are re-exported
here; masks are encoded by `labeler.utils.rle`.

File shape (optional fields may be absent):

    {"version": 1,
     "classes": {"1": "scratch"},
     "references": [
       {"image": "refs/a.jpg", "width": 960, "height": 540,
        "objects": [
          {"id": 1, "box": [x0, y0, x1, y1], "points": [[x, y]], "labels": [1],
           "paint": {"size": [540, 960], "counts": "<COCO RLE>"},
           "erase": {"size": [540, 960], "counts": "<COCO RLE>"}}]}]}

Image paths are written relative to the prompts file's folder when the image lies inside it, absolute
otherwise. Coordinates are pixels of the EXIF-upright image, x then y; labels are 1 (positive) or
0 (negative); paint/erase are brush masks as compressed COCO RLE with size [height, width].
`"absent": true` (optional, with no other guide) says the object is not on that image: SAM 2 is
given an empty mask for it, as a reviewed target taught as a reference does for a false positive.

Every problem stops with one `PromptError` whose message names the file, the reference (counted
from 1, with its image as written) and the field, e.g.
`prompts.json: reference 2 (refs/b.jpg): objects[0] (id 3).box: x1 (12.0) must be greater than x0 (40.0)`
(objects[j] is the index in the JSON list, from 0), or `prompts.json: version: ...` for top-level fields.

Usage: `prompts.save("run/prompts.json")`, then `prompts = PromptSet.load("run/prompts.json")`
(the same as `save_prompts(prompts, path)` and `load_prompts(path)`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ..errors import UsageError
from ..types.guides import ObjectGuides, ReferenceGuides, class_name
from ..utils import rle
from ..utils.files import atomic_write_text
from ..utils.images import ImageReadError, upright_size

__all__ = [
    "FORMAT_VERSION",
    "ObjectGuides",  # re-exported from labeler.types.guides
    "PromptError",
    "PromptSet",
    "ReferenceGuides",  # re-exported from labeler.types.guides
    "class_name",  # re-exported from labeler.types.guides
    "load_prompts",
    "prompts_from_dict",
    "prompts_to_dict",
    "save_prompts",
]

FORMAT_VERSION = 1
MAX_OBJECT_ID = 255

_TOP_FIELDS = ("version", "classes", "references")
_REFERENCE_FIELDS = ("image", "width", "height", "objects")
_OBJECT_FIELDS = ("id", "box", "points", "labels", "paint", "erase", "absent")
_MASK_FIELDS = ("size", "counts")


class PromptError(UsageError, ValueError):
    """A prompts file (or PromptSet) that can't be used; the message names the file, reference and field."""


@dataclass
class PromptSet:
    """Everything a run needs from the user: guided references and optional class names.

    Usage: `PromptSet([ref], classes={1: "scratch"}).class_name(2)` -> "object_2".
    """

    references: list[ReferenceGuides]
    classes: dict[int, str] = field(default_factory=dict)

    @property
    def object_ids(self) -> list[int]:
        """Sorted IDs of all objects across the references."""
        return sorted({o.id for ref in self.references for o in ref.objects})

    def class_name(self, obj_id: int) -> str:
        """The class name given for `obj_id`, else `object_<id>`."""
        return class_name(self.classes, obj_id)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PromptSet:
        """`load_prompts(path)`: read and fully validate a prompts file."""
        return load_prompts(path)

    def save(self, path: str | os.PathLike) -> None:
        """`save_prompts(self, path)`: validate, then write atomically."""
        save_prompts(self, path)


def as_prompt_set(prompts: PromptSet | str | os.PathLike) -> PromptSet:
    """`prompts` itself, or the prompts file at that path, loaded (PromptError when absent or invalid)."""
    if isinstance(prompts, PromptSet):
        return prompts
    if not Path(prompts).is_file():
        raise PromptError(f"no prompts file at {prompts}")
    return load_prompts(prompts)


# ----------------------------------------------------------------------------------------------
# Writing


def _plain(value: Any) -> Any:
    """numpy scalars as Python values, so the dict is what json would give back."""
    return value.item() if isinstance(value, np.generic) else value


def _mask_to_dict(mask: np.ndarray) -> dict:
    m = np.asarray(mask)  # not (H, W): left for validation to report as a size mismatch
    return rle.encode(m) if m.ndim == 2 else {"size": [int(n) for n in m.shape], "counts": ""}


def _written_path(image: Path, base_dir: Path) -> str:
    image = Path(os.path.abspath(image))
    return image.relative_to(base_dir).as_posix() if image.is_relative_to(base_dir) else str(image)


def _object_to_dict(obj: ObjectGuides) -> dict:
    d: dict[str, Any] = {"id": _plain(obj.id)}
    if obj.box is not None:
        d["box"] = [_plain(v) for v in obj.box]
    if obj.points or obj.labels:
        d["points"] = [[_plain(v) for v in p] for p in obj.points]
        d["labels"] = [_plain(v) for v in obj.labels]
    if obj.paint is not None:
        d["paint"] = _mask_to_dict(obj.paint)
    if obj.erase is not None:
        d["erase"] = _mask_to_dict(obj.erase)
    if obj.absent:
        d["absent"] = True
    return d


def prompts_to_dict(prompts: PromptSet, base_dir: str | os.PathLike) -> dict:
    """The JSON-ready dict of `prompts`, image paths relative to `base_dir` where they lie inside it.

    References with no objects are dropped. Nothing is validated here (see `prompts_from_dict`).
    Usage: `data = prompts_to_dict(prompts, Path("run"))`.
    """
    base_dir = Path(os.path.abspath(base_dir))
    return {
        "version": FORMAT_VERSION,
        "classes": {str(_plain(k)): v for k, v in prompts.classes.items()},
        "references": [
            {
                "image": _written_path(ref.image, base_dir),
                "width": _plain(ref.width),
                "height": _plain(ref.height),
                "objects": [_object_to_dict(o) for o in ref.objects],
            }
            for ref in prompts.references
            if ref.objects
        ],
    }


# ----------------------------------------------------------------------------------------------
# Reading and validation. Each helper gets `at`, the location of its field ("file: reference 1
# (a.jpg): objects[0] (id 1).box"), and raises PromptError(f"{at}: <what is wrong>").

_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "object"}


def _show(value: Any) -> str:
    """`value` as it reads in JSON, with its type: 'string "64"', 'boolean true', 'null'."""
    if value is None:
        return "null"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{_JSON_TYPES.get(type(value), type(value).__name__)} {text}"


def _fail(at: str, message: str) -> NoReturn:
    raise PromptError(f"{at}: {message}")


def _require(d: dict, key: str, at: str, sep: str) -> Any:
    """`d[key]`, which must be present and not null; its location is `at + sep + key`."""
    if d.get(key) is None:
        _fail(f"{at}{sep}{key}", "missing field" if key not in d else "must not be null")
    return d[key]


def _optional(d: dict, key: str, default: Any) -> Any:
    value = d.get(key)
    return default if value is None else value


def _expect_object(d: Any, at: str, what: str) -> None:
    if not isinstance(d, dict):
        _fail(at, f"expected {what} (a JSON object), got {_show(d)}")


def _check_known(d: dict, known: tuple[str, ...], at: str, sep: str) -> None:
    """No field of `d` (at location `at`) lies outside `known`: a typo must not drop a guide silently."""
    for key in d:
        if key not in known:
            _fail(f"{at}{sep}{key}", f"unknown field (known fields: {', '.join(known)})")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(value: Any, at: str, low: int, high: int | None = None) -> int:
    if not _is_int(value):
        _fail(at, f"expected an integer, got {_show(value)}")
    if value < low or (high is not None and value > high):
        _fail(at, f"{value} is out of range ({low}–{high})" if high is not None else f"{value} is below {low}")
    return value


def _number(value: Any, at: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(at, f"expected a number, got {_show(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer with hundreds of digits
        _fail(at, f"{_show(value)} is too large")
    if not math.isfinite(number):
        _fail(at, f"{value} is not a finite number")
    return number


def _numbers(value: Any, count: int, at: str, shape: str) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) != count:
        _fail(at, f"expected {count} numbers {shape}, got {_show(value)}")
    return tuple(_number(v, at) for v in value)


def _object_id(value: Any, at: str) -> int:
    if _is_int(value) and value == 0:
        _fail(at, "0 is not an object ID (0 is the background; IDs are 1–255)")
    return _int(value, at, 1, MAX_OBJECT_ID)


def _box(value: Any, at: str, width: int, height: int) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = _numbers(value, 4, at, "[x0, y0, x1, y1]")
    if x1 <= x0:
        _fail(at, f"x1 ({x1}) must be greater than x0 ({x0})")
    if y1 <= y0:
        _fail(at, f"y1 ({y1}) must be greater than y0 ({y0})")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        _fail(at, f"{[x0, y0, x1, y1]} lies outside the {width}x{height} image")
    return x0, y0, x1, y1


def _points(value: Any, at: str, width: int, height: int) -> list[tuple[float, float]]:
    if not isinstance(value, list):
        _fail(at, f"expected a list of [x, y] points, got {_show(value)}")
    points = []
    for k, item in enumerate(value):
        x, y = _numbers(item, 2, f"{at}[{k}]", "[x, y]")
        if not (0 <= x <= width and 0 <= y <= height):
            _fail(f"{at}[{k}]", f"({x}, {y}) lies outside the {width}x{height} image")
        points.append((x, y))
    return points


def _labels(value: Any, at: str, n_points: int) -> list[int]:
    if not isinstance(value, list):
        _fail(at, f"expected a list of 0/1 labels, got {_show(value)}")
    if len(value) != n_points:
        _fail(at, f"{len(value)} labels for {n_points} points; give one label per point")
    for k, label in enumerate(value):
        if not _is_int(label) or label not in (0, 1):
            _fail(f"{at}[{k}]", f"expected 1 (positive) or 0 (negative), got {_show(label)}")
    return list(value)


def _mask(value: Any, at: str, width: int, height: int) -> np.ndarray:
    _expect_object(value, at, '{"size": [height, width], "counts": "<COCO RLE>"}')
    _check_known(value, _MASK_FIELDS, at, ".")
    size = _require(value, "size", at, ".")
    counts = _require(value, "counts", at, ".")
    if size != [height, width] or not all(_is_int(s) for s in size):
        _fail(f"{at}.size", f"{_show(size)} is not [height, width] = [{height}, {width}] of the reference")
    if not isinstance(counts, str):
        _fail(f"{at}.counts", f"expected a compressed COCO RLE string, got {_show(counts)}")
    try:
        return rle.decode(value)
    except ValueError:
        _fail(f"{at}.counts", f"malformed COCO RLE for a {width}x{height} mask")


def _object(d: Any, ref_at: str, j: int, width: int, height: int) -> ObjectGuides:
    _expect_object(d, f"{ref_at}: objects[{j}]", "an object")
    obj_id = _object_id(_require(d, "id", f"{ref_at}: objects[{j}]", "."), f"{ref_at}: objects[{j}].id")
    at = f"{ref_at}: objects[{j}] (id {obj_id})"
    _check_known(d, _OBJECT_FIELDS, at, ".")
    obj = ObjectGuides(obj_id)
    if d.get("box") is not None:
        obj.box = _box(d["box"], f"{at}.box", width, height)
    obj.points = _points(_optional(d, "points", []), f"{at}.points", width, height)
    obj.labels = _labels(_optional(d, "labels", []), f"{at}.labels", len(obj.points))
    if d.get("paint") is not None:
        obj.paint = _mask(d["paint"], f"{at}.paint", width, height)
    if d.get("erase") is not None:
        obj.erase = _mask(d["erase"], f"{at}.erase", width, height)
    if d.get("absent") is not None:
        if d["absent"] is not True:
            _fail(f"{at}.absent", f"expected true (or no field), got {_show(d['absent'])}")
        if obj.has_guide or obj.erase is not None:
            _fail(f"{at}.absent", "an absent object takes no other guide (it is an empty mask)")
        obj.absent = True
    if not obj.has_guide:
        _fail(at, "no guide: give a box, a point or painted pixels (erase alone is not a guide)")
    return obj


def _check_image_file(path: Path, at: str, width: int, height: int) -> None:
    if not path.is_file():
        _fail(f"{at}: image", f"file not found: {path}")
    try:
        w, h = upright_size(path)
    except ImageReadError as e:
        _fail(f"{at}: image", str(e))
    if (w, h) != (width, height):
        _fail(f"{at}: width, height", f"recorded {width}x{height}, but the image is {w}x{h} (upright)")


def _reference(d: Any, source: str, i: int, base_dir: Path, check_files: bool) -> ReferenceGuides:
    at = f"{source}: reference {i}"
    _expect_object(d, at, "an object")
    written = _require(d, "image", at, ": ")
    if not isinstance(written, str) or not written:
        _fail(f"{at}: image", f"expected a path string, got {_show(written)}")
    at = f"{at} ({written})"
    _check_known(d, _REFERENCE_FIELDS, at, ": ")
    width = _int(_require(d, "width", at, ": "), f"{at}: width", 1)
    height = _int(_require(d, "height", at, ": "), f"{at}: height", 1)
    image = Path(os.path.abspath(base_dir / written))
    if check_files:
        _check_image_file(image, at, width, height)
    objects = _require(d, "objects", at, ": ")
    if not isinstance(objects, list):
        _fail(f"{at}: objects", f"expected a list, got {_show(objects)}")
    ref = ReferenceGuides(image, width, height)
    first_index: dict[int, int] = {}
    for j, item in enumerate(objects):
        obj = _object(item, at, j, width, height)
        if obj.id in first_index:
            _fail(f"{at}: objects[{j}] (id {obj.id}).id", f"duplicate of objects[{first_index[obj.id]}]")
        first_index[obj.id] = j
        ref.objects.append(obj)
    return ref


def _classes(value: Any, source: str) -> dict[int, str]:
    if not isinstance(value, dict):
        _fail(f"{source}: classes", f'expected an object like {{"1": "scratch"}}, got {_show(value)}')
    classes = {}
    for key, name in value.items():
        at = f"{source}: classes[{json.dumps(key)}]"
        if not (key.isascii() and key.isdigit() and key == str(int(key)) and 1 <= int(key) <= MAX_OBJECT_ID):
            _fail(at, "key must be an object ID 1–255 written as a string")
        if not isinstance(name, str):
            _fail(at, f"expected a class name string, got {_show(name)}")
        classes[int(key)] = name
    return classes


def _parse(data: Any, base_dir: str | os.PathLike, source: str, check_files: bool) -> PromptSet:
    _expect_object(data, source, "a prompts file")
    _check_known(data, _TOP_FIELDS, source, ": ")
    version = _require(data, "version", source, ": ")
    if not (_is_int(version) and version == FORMAT_VERSION):
        _fail(f"{source}: version", f"unknown version {_show(version)} (only {FORMAT_VERSION} is known)")
    classes = _classes(_optional(data, "classes", {}), source)
    refs = _require(data, "references", source, ": ")
    if not isinstance(refs, list):
        _fail(f"{source}: references", f"expected a list, got {_show(refs)}")
    if not refs:
        _fail(f"{source}: references", "empty list; at least one guided reference is needed")
    base_dir = Path(os.path.abspath(base_dir))
    references = [_reference(d, source, i, base_dir, check_files) for i, d in enumerate(refs, start=1)]
    if not any(ref.objects for ref in references):
        _fail(f"{source}: references", "no object on any reference; guide at least one object")
    return PromptSet(references, classes)


def prompts_from_dict(data: Any, base_dir: str | os.PathLike, source: str) -> PromptSet:
    """Validate the structure and values of parsed prompts JSON and build the PromptSet.

    Relative image paths are resolved against `base_dir`; the image files themselves are not checked
    (`load_prompts` does that). `source` names the file in error messages.
    Usage: `prompts = prompts_from_dict(json.loads(text), Path("run"), "run/prompts.json")`.
    """
    return _parse(data, base_dir, source, check_files=False)


def load_prompts(path: str | os.PathLike) -> PromptSet:
    """Read and fully validate a prompts file, including each image's presence and upright size.

    Usage: `prompts = load_prompts("run/prompts.json")`.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PromptError(f"{source}: cannot read the prompts file ({e})") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise PromptError(f"{source}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from e
    return _parse(data, Path(os.path.abspath(path)).parent, source, check_files=True)


def save_prompts(prompts: PromptSet, path: str | os.PathLike) -> None:
    """Validate `prompts` as `load_prompts` would, then write them atomically to `path`.

    References with no objects are dropped. On any problem a PromptError is raised and nothing is written.
    Usage: `save_prompts(prompts, "run/prompts.json")`.
    """
    base_dir = Path(os.path.abspath(path)).parent
    data = prompts_to_dict(prompts, base_dir)
    _parse(data, base_dir, str(path), check_files=True)
    try:
        text = json.dumps(data, indent=1, allow_nan=False, ensure_ascii=False) + "\n"
    except (TypeError, ValueError) as e:  # a value validation let through that json can't write
        raise PromptError(f"{path}: cannot be written as JSON ({e})") from e
    atomic_write_text(path, text)
