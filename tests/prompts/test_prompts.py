"""Tests for labeler.prompts.prompt_set (the saved-prompts file, prompts.json version 1), labeler.types.guides and labeler.utils.rle."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from labeler.prompts import prompt_set as prompts_module
from labeler.prompts.prompt_set import (
    PromptError,
    PromptSet,
    load_prompts,
    prompts_from_dict,
    prompts_to_dict,
    save_prompts,
)
from labeler.types import guides
from labeler.types.guides import ObjectGuides, ReferenceGuides
from labeler.utils import rle as rle_codec

W, H = 64, 48
A, B = "refs/a.png", "refs/b.jpg"
REF1 = f"reference 1 ({A})"
REF2 = f"reference 2 ({B})"
OBJ0 = f"{REF1}: objects[0] (id 1)"
OBJ1 = f"{REF1}: objects[1] (id 2)"


def make_image(path: Path, size: tuple[int, int] = (W, H), orientation: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, (120, 60, 30))
    if orientation is None:
        img.save(path)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        img.save(path, exif=exif)
    return path


def rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(r["size"]), "counts": r["counts"].decode("ascii")}


def paint_mask() -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[10:20, 30:50] = True
    m[40, 3] = True
    return m


def erase_mask() -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[12:14, 35:40] = True
    return m


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder holding refs/a.png and refs/b.jpg (both 64x48)."""
    make_image(tmp_path / A)
    make_image(tmp_path / B)
    return tmp_path


def valid_data() -> dict:
    return {
        "version": 1,
        "classes": {"1": "scratch", "2": "dent"},
        "references": [
            {
                "image": A,
                "width": W,
                "height": H,
                "objects": [
                    {"id": 1, "box": [4, 5, 30, 40], "points": [[10, 12], [20.5, 30]], "labels": [1, 0]},
                    {"id": 2, "paint": rle(paint_mask()), "erase": rle(erase_mask())},
                ],
            },
            {"image": B, "width": W, "height": H, "objects": [{"id": 1, "points": [[0, 48]], "labels": [1]}]},
        ],
    }


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))  # json writes NaN/Infinity literals, as a hand-edited file may hold
    return path


# ----------------------------------------------------------------------------------------------
# Data classes


def test_object_guides_prompt_and_guide() -> None:
    empty = np.zeros((H, W), bool)
    assert ObjectGuides(1, box=(0, 0, 5, 5)).has_prompt
    assert ObjectGuides(1, points=[(1, 1)], labels=[0]).has_prompt
    assert not ObjectGuides(1, paint=paint_mask()).has_prompt
    assert ObjectGuides(1, paint=paint_mask()).has_guide
    assert not ObjectGuides(1, paint=empty).has_guide
    assert not ObjectGuides(1, erase=erase_mask()).has_guide
    assert not ObjectGuides(1).has_guide


def test_object_guides_equality_compares_masks_by_value() -> None:
    assert ObjectGuides(1, points=[[1, 2]], labels=[1], paint=paint_mask()) == ObjectGuides(
        1, points=[(1.0, 2.0)], labels=[1], paint=paint_mask()
    )
    assert ObjectGuides(1, paint=paint_mask()) != ObjectGuides(1, paint=erase_mask())
    assert ObjectGuides(1, paint=paint_mask()) != ObjectGuides(1)
    assert ObjectGuides(1, box=(0, 0, 5, 5)) != ObjectGuides(2, box=(0, 0, 5, 5))


def test_prompt_set_lookups(tmp_path: Path) -> None:
    o1, o7 = ObjectGuides(7, box=(0, 0, 5, 5)), ObjectGuides(1, points=[(1, 1)], labels=[1])
    refs = [
        ReferenceGuides(tmp_path / "a.png", W, H, [o1, o7]),
        ReferenceGuides(tmp_path / "b.png", W, H, [ObjectGuides(3, box=(0, 0, 5, 5)), o7]),
    ]
    prompts = PromptSet(refs, classes={7: "dent"})
    assert prompts.object_ids == [1, 3, 7]
    assert prompts.class_name(7) == "dent"
    assert prompts.class_name(3) == "object_3"
    assert refs[0].object(1) is o7
    assert refs[0].object(3) is None


def test_prompts_re_exports_the_guide_classes() -> None:
    assert prompts_module.ObjectGuides is guides.ObjectGuides
    assert prompts_module.ReferenceGuides is guides.ReferenceGuides
    assert prompts_module.class_name is guides.class_name


def test_object_guides_keyword_construction_round_trips(project: Path) -> None:
    paint = paint_mask()
    obj = ObjectGuides(id=2, points=[[1, 2]], labels=[1], paint=paint, erase=erase_mask().astype(np.uint8))
    assert obj.points == [(1, 2)] and obj.labels == [1]
    assert obj.paint is paint  # a bool array is kept, not copied
    assert obj.erase.dtype == bool and np.array_equal(obj.erase, erase_mask())
    assert ObjectGuides(id=1, box=[4, 5, 30, 40]).box == (4, 5, 30, 40)
    assert ObjectGuides(id=3, paint=paint.tolist()).paint.dtype == bool

    prompts = PromptSet([ReferenceGuides(project / A, W, H, [obj, ObjectGuides(id=1, box=[4, 5, 30, 40])])])
    prompts.save(project / "prompts.json")
    assert PromptSet.load(project / "prompts.json") == prompts == load_prompts(project / "prompts.json")


# ----------------------------------------------------------------------------------------------
# Round trip


def full_prompt_set(project: Path, elsewhere: Path) -> PromptSet:
    return PromptSet(
        references=[
            ReferenceGuides(
                project / A,
                W,
                H,
                [
                    ObjectGuides(1, box=(4.0, 5.5, 30.25, 40.0), points=[(10.0, 12.0), (20.5, 0.0)], labels=[1, 0]),
                    ObjectGuides(2, paint=paint_mask(), erase=erase_mask()),
                    ObjectGuides(9, points=[(64.0, 48.0)], labels=[1], erase=erase_mask()),
                ],
            ),
            ReferenceGuides(project / B, W, H, [ObjectGuides(2, box=(0.0, 0.0, 64.0, 48.0), paint=paint_mask())]),
            ReferenceGuides(elsewhere, W, H, [ObjectGuides(1, points=[(1 / 3, 2 / 3)], labels=[0])]),
        ],
        classes={1: "scratch", 9: "crack"},
    )


def test_round_trip_is_exact(project: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = make_image(tmp_path_factory.mktemp("other") / "c.png")
    prompts = full_prompt_set(project, elsewhere)
    path = project / "prompts.json"
    save_prompts(prompts, path)

    loaded = load_prompts(path)
    assert loaded == prompts
    for ref, ref_back in zip(prompts.references, loaded.references):
        assert ref_back.image == ref.image and ref_back.image.is_absolute()
        for obj, back in zip(ref.objects, ref_back.objects):
            for name in ("paint", "erase"):
                mine, theirs = getattr(obj, name), getattr(back, name)
                assert (mine is None) == (theirs is None)
                if mine is not None:
                    assert theirs.dtype == bool and np.array_equal(mine, theirs)
    assert loaded.references[0].object(1).labels == [1, 0]
    assert loaded.classes == {1: "scratch", 9: "crack"}


def test_paths_written_relative_inside_and_absolute_outside(
    project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = make_image(tmp_path_factory.mktemp("other") / "c.png")
    path = project / "prompts.json"
    save_prompts(full_prompt_set(project, elsewhere), path)

    data = json.loads(path.read_text())
    assert [r["image"] for r in data["references"]] == [A, B, str(elsewhere)]
    assert data["version"] == 1
    assert data["classes"] == {"1": "scratch", "9": "crack"}
    assert data["references"][0]["objects"][1]["paint"] == rle(paint_mask())

    # The project folder moves as a whole: relative images follow it, the absolute one stays loadable.
    moved = tmp_path_factory.mktemp("moved") / "project"
    shutil.copytree(project, moved)
    shutil.rmtree(project / "refs")
    loaded = load_prompts(moved / "prompts.json")
    assert [r.image for r in loaded.references] == [moved / A, moved / B, elsewhere]


def test_load_does_not_depend_on_working_directory(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_json(project / "prompts.json", valid_data())
    monkeypatch.chdir(project / "refs")
    loaded = load_prompts(project / "prompts.json")
    assert loaded.references[0].image == project / A


def test_relative_prompts_path(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prompts = prompts_from_dict(valid_data(), project, "x")
    monkeypatch.chdir(project)
    save_prompts(prompts, "prompts.json")
    assert json.loads((project / "prompts.json").read_text())["references"][0]["image"] == A
    assert load_prompts("prompts.json") == prompts


def test_save_drops_references_without_objects(project: Path) -> None:
    prompts = PromptSet(
        [
            ReferenceGuides(project / A, W, H, []),
            ReferenceGuides(project / B, W, H, [ObjectGuides(3, box=(1, 1, 2, 2))]),
        ]
    )
    save_prompts(prompts, project / "prompts.json")
    loaded = load_prompts(project / "prompts.json")
    assert [r.image for r in loaded.references] == [project / B]
    assert loaded.references[0].objects == [ObjectGuides(3, box=(1.0, 1.0, 2.0, 2.0))]


def test_reference_with_empty_objects_is_allowed_in_a_file(project: Path) -> None:
    data = valid_data()
    data["references"][1]["objects"] = []
    loaded = load_prompts(write_json(project / "prompts.json", data))
    assert loaded.references[1].objects == []
    assert loaded.object_ids == [1, 2]


def test_optional_fields_may_be_absent(project: Path) -> None:
    reference = {"image": A, "width": W, "height": H, "objects": [{"id": 4, "box": [0, 0, 1, 1]}]}
    data = {"version": 1, "references": [reference]}
    loaded = load_prompts(write_json(project / "prompts.json", data))
    assert loaded == PromptSet([ReferenceGuides(project / A, W, H, [ObjectGuides(4, box=(0, 0, 1, 1))])])


def test_prompts_to_dict_matches_file_shape(project: Path) -> None:
    prompts = prompts_from_dict(valid_data(), project, "x")
    data = prompts_to_dict(prompts, project)
    assert data["references"][0]["objects"][0] == {
        "id": 1,
        "box": [4.0, 5.0, 30.0, 40.0],
        "points": [[10.0, 12.0], [20.5, 30.0]],
        "labels": [1, 0],
    }
    assert prompts_from_dict(data, project, "x") == prompts


def test_prompts_from_dict_does_not_check_files(tmp_path: Path) -> None:
    prompts = prompts_from_dict(valid_data(), tmp_path, "memory")  # no image exists in tmp_path
    assert prompts.references[0].image == tmp_path / A
    path = write_json(tmp_path / "prompts.json", valid_data())
    with pytest.raises(PromptError) as err:
        load_prompts(path)
    assert str(err.value) == f"{path}: {REF1}: image: file not found: {tmp_path / A}"


# ----------------------------------------------------------------------------------------------
# EXIF orientation


def test_exif_rotated_reference_records_upright_size(tmp_path: Path) -> None:
    image = make_image(tmp_path / "rot.jpg", size=(W, H), orientation=6)  # stored 64x48, upright 48x64
    prompts = PromptSet([ReferenceGuides(image, H, W, [ObjectGuides(1, box=(1, 2, 47, 63))])])
    save_prompts(prompts, tmp_path / "prompts.json")
    data = json.loads((tmp_path / "prompts.json").read_text())
    assert (data["references"][0]["width"], data["references"][0]["height"]) == (H, W)
    assert load_prompts(tmp_path / "prompts.json") == prompts

    data["references"][0].update(width=W, height=H)  # the stored (not upright) size is wrong
    data["references"][0]["objects"][0]["box"] = [1, 2, 40, 40]
    with pytest.raises(PromptError) as err:
        load_prompts(write_json(tmp_path / "prompts.json", data))
    msg = str(err.value)
    assert "reference 1 (rot.jpg): width, height" in msg and "64x48" in msg and "48x64" in msg


def test_reference_from_image_reads_upright_size(tmp_path: Path) -> None:
    image = make_image(tmp_path / "rot.jpg", size=(W, H), orientation=6)  # stored 64x48, upright 48x64
    obj = ObjectGuides(id=1, box=[1, 2, 47, 63])
    ref = ReferenceGuides.from_image(image, [obj])
    assert (ref.image, ref.width, ref.height, ref.objects) == (image, H, W, [obj])
    plain = ReferenceGuides.from_image(make_image(tmp_path / "plain.png"))
    assert (plain.width, plain.height, plain.objects) == (W, H, [])


# ----------------------------------------------------------------------------------------------
# COCO RLE


def test_rle_round_trip_random_masks() -> None:
    rng = np.random.default_rng(0)
    shapes = [(1, 1), (1, 7), (9, 1), (H, W), (37, 53)]
    for shape in shapes:
        for mask in [np.zeros(shape, bool), np.ones(shape, bool)] + [rng.random(shape) < p for p in (0.05, 0.5, 0.95)]:
            encoded = rle_codec.encode(mask)
            assert encoded == rle(mask)  # the bytes pycocotools writes, as a JSON-ready dict
            assert json.loads(json.dumps(encoded)) == encoded
            back = rle_codec.decode(encoded)
            assert back.dtype == bool and back.flags.c_contiguous and np.array_equal(back, mask)
    assert rle_codec.encode(paint_mask().astype(np.uint8) * 255) == rle(paint_mask())


M45 = np.zeros((4, 5), bool)
M45[1:3, 2:4] = True  # encodes as "92203"


@pytest.mark.parametrize(
    "size, counts, reason",
    [
        ([4, 5], "!!!", "outside the RLE alphabet"),
        ([4, 5], "zz", "outside the RLE alphabet"),  # pycocotools decodes "zz" as two runs of 10
        ([4, 5], "\u00e9\u00e9", "outside the RLE alphabet"),
        ([4, 5], "4\x004", "outside the RLE alphabet"),  # pycocotools stops at the NUL
        ([4, 5], "l", "ends inside a number"),  # pycocotools would read past the string's end
        ([4, 5], "9220l", "ends inside a number"),
        ([4, 5], "", "not a valid RLE"),  # runs short of 20: pycocotools leaves pixels uninitialised
        ([4, 5], "9220", "not a valid RLE"),
        ([4, 5], "?", "not a valid RLE"),
        ([4, 5], "922033", "overrun"),
        ([4, 5], "b0" * 50, "overrun"),
        ([4, 5], "O", "overrun"),  # -1: a negative run
        ([4, 5], "92O03", "overrun"),
        ([1, 1], "Q0", "not a valid RLE"),  # 1 written with a redundant digit: not canonical
        ([4, 6], "92203", "not a valid RLE"),  # another size
        ([3, 5], "92203", "overrun"),
        ([4], "92203", "size must be"),
        ([4, -5], "92203", "size must be"),
        ([4, 5.0], "92203", "size must be"),
        ([4, 5], b"92203", "counts must be a string"),
    ],
)
def test_rle_decode_rejects_malformed(size, counts, reason: str) -> None:
    assert rle_codec.encode(M45)["counts"] == "92203"
    with pytest.raises(ValueError, match=reason):
        rle_codec.decode({"size": size, "counts": counts})


def test_rle_decode_survives_random_strings() -> None:
    """Each is rejected or decodes to a mask that re-encodes to it; none crashes (pycocotools alone
    may corrupt memory on a string that ends inside a number)."""
    rnd = random.Random(0)
    for _ in range(3000):
        counts = "".join(chr(rnd.randint(40, 120)) for _ in range(rnd.randint(0, 40)))
        size = [rnd.randint(0, 6), rnd.randint(0, 6)]
        try:
            mask = rle_codec.decode({"size": size, "counts": counts})
        except ValueError:
            continue
        assert mask.shape == tuple(size) and rle_codec.encode(mask)["counts"] == counts


def test_rle_encode_rejects_non_2d() -> None:
    with pytest.raises(ValueError, match="2-D"):
        rle_codec.encode(np.ones((2, 3, 3), bool))


# ----------------------------------------------------------------------------------------------
# Rejections: each names the file, the reference and the field


def _set(keys: tuple, value):
    def mutate(data: dict) -> None:
        target = data
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value

    return mutate


def _del(keys: tuple):
    def mutate(data: dict) -> None:
        target = data
        for k in keys[:-1]:
            target = target[k]
        del target[keys[-1]]

    return mutate


def _no_objects(data: dict) -> None:
    for ref in data["references"]:
        ref["objects"] = []


def _erase_only(data: dict) -> None:
    data["references"][0]["objects"][1] = {"id": 2, "erase": rle(erase_mask())}


def _empty_paint_only(data: dict) -> None:
    data["references"][0]["objects"][1] = {"id": 2, "paint": rle(np.zeros((H, W), bool))}


R0, O0, O1 = ("references", 0), ("references", 0, "objects", 0), ("references", 0, "objects", 1)
NAN, INF = math.nan, math.inf
SHORT_RLE = rle(paint_mask())["counts"][:-3]
REJECTIONS = {
    # top level
    "version missing": (_del(("version",)), ": version: missing field"),
    "version 2": (_set(("version",), 2), ": version: unknown version integer 2"),
    "version string": (_set(("version",), "1"), ": version: unknown version string"),
    "version true": (_set(("version",), True), ": version: unknown version boolean"),
    "unknown top field": (_set(("refs",), []), ": refs: unknown field"),
    "references missing": (_del(("references",)), ": references: missing field"),
    "references not a list": (_set(("references",), {}), ": references: expected a list"),
    "references empty": (_set(("references",), []), ": references: empty list"),
    "no object anywhere": (_no_objects, ": references: no object on any reference"),
    # classes
    "classes not an object": (_set(("classes",), ["scratch"]), ": classes: expected an object"),
    "class key 0": (_set(("classes", "0"), "x"), ': classes["0"]: key must be an object ID 1–255'),
    "class key 256": (_set(("classes", "256"), "x"), ': classes["256"]: key must be'),
    "class key text": (_set(("classes", "scratch"), "x"), ': classes["scratch"]: key must be'),
    "class key padded": (_set(("classes", "01"), "x"), ': classes["01"]: key must be'),
    "class name number": (_set(("classes", "1"), 5), ': classes["1"]: expected a class name string'),
    # reference fields
    "reference not an object": (_set(R0, A), ": reference 1: expected an object"),
    "image missing": (_del((*R0, "image")), ": reference 1: image: missing field"),
    "image not a string": (_set((*R0, "image"), 5), ": reference 1: image: expected a path string, got integer 5"),
    "width missing": (_del((*R0, "width")), f"{REF1}: width: missing field"),
    "width string": (_set((*R0, "width"), "64"), f'{REF1}: width: expected an integer, got string "64"'),
    "width float": (_set((*R0, "width"), 64.0), f"{REF1}: width: expected an integer"),
    "width bool": (_set((*R0, "width"), True), f"{REF1}: width: expected an integer, got boolean true"),
    "height zero": (_set((*R0, "height"), 0), f"{REF1}: height: 0 is below 1"),
    "height null": (_set((*R0, "height"), None), f"{REF1}: height: must not be null"),
    "objects missing": (_del((*R0, "objects")), f"{REF1}: objects: missing field"),
    "objects not a list": (_set((*R0, "objects"), {"id": 1}), f"{REF1}: objects: expected a list"),
    "unknown reference field": (_set((*R0, "mask"), 1), f"{REF1}: mask: unknown field"),
    "second reference": (_set(("references", 1, "width"), "64"), f"{REF2}: width: expected an integer"),
    # object IDs
    "object not an object": (_set(O0, 1), f"{REF1}: objects[0]: expected an object"),
    "id missing": (_del((*O0, "id")), f"{REF1}: objects[0].id: missing field"),
    "id zero": (_set((*O0, "id"), 0), f"{REF1}: objects[0].id: 0 is not an object ID"),
    "id 256": (_set((*O0, "id"), 256), f"{REF1}: objects[0].id: 256 is out of range (1–255)"),
    "id negative": (_set((*O0, "id"), -3), f"{REF1}: objects[0].id: -3 is out of range"),
    "id float": (_set((*O0, "id"), 1.5), f"{REF1}: objects[0].id: expected an integer, got number 1.5"),
    "id string": (_set((*O0, "id"), "1"), f"{REF1}: objects[0].id: expected an integer"),
    "id bool": (_set((*O0, "id"), True), f"{REF1}: objects[0].id: expected an integer, got boolean"),
    "duplicate id": (_set((*O1, "id"), 1), f"{REF1}: objects[1] (id 1).id: duplicate of objects[0]"),
    "unknown object field": (_set((*O0, "point"), [[1, 1]]), f"{OBJ0}.point: unknown field"),
    # guides
    "erase alone": (_erase_only, f"{OBJ1}: no guide"),
    "empty paint alone": (_empty_paint_only, f"{OBJ1}: no guide"),
    "box three numbers": (_set((*O0, "box"), [1, 2, 3]), f"{OBJ0}.box: expected 4 numbers"),
    "box not a list": (_set((*O0, "box"), "1,2,3,4"), f"{OBJ0}.box: expected 4 numbers"),
    "box string number": (_set((*O0, "box"), [1, 2, "3", 4]), f'{OBJ0}.box: expected a number, got string "3"'),
    "box bool": (_set((*O0, "box"), [0, 0, True, 4]), f"{OBJ0}.box: expected a number, got boolean"),
    "box x1 <= x0": (_set((*O0, "box"), [30, 5, 30, 40]), f"{OBJ0}.box: x1 (30.0) must be greater than x0"),
    "box y1 <= y0": (_set((*O0, "box"), [4, 40, 30, 5]), f"{OBJ0}.box: y1 (5.0) must be greater than y0"),
    "box past width": (_set((*O0, "box"), [4, 5, 64.5, 40]), f"{OBJ0}.box: [4.0, 5.0, 64.5, 40.0] lies outside"),
    "box past height": (_set((*O0, "box"), [4, 5, 30, 49]), f"{OBJ0}.box: [4.0, 5.0, 30.0, 49.0] lies outside"),
    "box negative": (_set((*O0, "box"), [-1, 5, 30, 40]), f"{OBJ0}.box: [-1.0, 5.0, 30.0, 40.0] lies outside"),
    "box NaN": (_set((*O0, "box"), [4, NAN, 30, 40]), f"{OBJ0}.box: nan is not a finite number"),
    "box huge integer": (_set((*O0, "box"), [4, 5, 10**400, 40]), f"{OBJ0}.box: integer 1000000000"),
    "box Infinity": (_set((*O0, "box"), [4, 5, INF, 40]), f"{OBJ0}.box: inf is not a finite number"),
    "points not a list": (_set((*O0, "points"), "10,12"), f"{OBJ0}.points: expected a list of [x, y] points"),
    "points flat": (_set((*O0, "points"), [10, 12]), f"{OBJ0}.points[0]: expected 2 numbers [x, y], got integer"),
    "point of three": (_set((*O0, "points"), [[1, 2], [1, 2, 3]]), f"{OBJ0}.points[1]: expected 2 numbers"),
    "point string": (_set((*O0, "points"), [[1, 2], ["a", 2]]), f"{OBJ0}.points[1]: expected a number"),
    "point past width": (_set((*O0, "points"), [[1, 2], [64.01, 2]]), f"{OBJ0}.points[1]: (64.01, 2.0) lies outside"),
    "point negative y": (_set((*O0, "points"), [[1, -2], [1, 2]]), f"{OBJ0}.points[0]: (1.0, -2.0) lies outside"),
    "point NaN": (_set((*O0, "points"), [[1, 2], [NAN, 2]]), f"{OBJ0}.points[1]: nan is not a finite number"),
    "point -Infinity": (_set((*O0, "points"), [[1, -INF], [1, 2]]), f"{OBJ0}.points[0]: -inf is not a finite"),
    "labels short": (_set((*O0, "labels"), [1]), f"{OBJ0}.labels: 1 labels for 2 points"),
    "labels missing": (_del((*O0, "labels")), f"{OBJ0}.labels: 0 labels for 2 points"),
    "labels without points": (_set((*O1, "labels"), [1]), f"{OBJ1}.labels: 1 labels for 0 points"),
    "label 2": (_set((*O0, "labels"), [1, 2]), f"{OBJ0}.labels[1]: expected 1 (positive) or 0 (negative), got integer 2"),
    "label bool": (_set((*O0, "labels"), [True, 0]), f"{OBJ0}.labels[0]: expected 1 (positive) or 0"),
    "label string": (_set((*O0, "labels"), [1, "0"]), f"{OBJ0}.labels[1]: expected 1 (positive) or 0"),
    # brush masks
    "paint not an object": (_set((*O1, "paint"), "c76Z1"), f"{OBJ1}.paint: expected"),
    "paint counts garbage": (_set((*O1, "paint", "counts"), "!!!"), f"{OBJ1}.paint.counts: malformed COCO RLE"),
    "paint counts truncated": (_set((*O1, "paint", "counts"), SHORT_RLE), f"{OBJ1}.paint.counts: malformed COCO RLE"),
    "paint counts cut mid-number": (_set((*O1, "paint", "counts"), "o"), f"{OBJ1}.paint.counts: malformed COCO RLE"),
    "paint counts not a string": (_set((*O1, "paint", "counts"), [3, 4]), f"{OBJ1}.paint.counts: expected a compressed"),
    "paint counts missing": (_del((*O1, "paint", "counts")), f"{OBJ1}.paint.counts: missing field"),
    "paint size swapped": (
        _set((*O1, "paint", "size"), [W, H]),
        f"{OBJ1}.paint.size: list [64, 48] is not [height, width] = [48, 64]",
    ),
    "paint size missing": (_del((*O1, "paint", "size")), f"{OBJ1}.paint.size: missing field"),
    "paint unknown field": (_set((*O1, "paint", "data"), 1), f"{OBJ1}.paint.data: unknown field"),
    "erase other size": (
        _set((*O1, "erase"), rle(np.ones((H, W - 1), bool))),
        f"{OBJ1}.erase.size: list [48, 63] is not",
    ),
    "erase garbage": (_set((*O1, "erase", "counts"), "\u00e9\u00e9"), f"{OBJ1}.erase.counts: malformed COCO RLE"),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_rejects_bad_field(project: Path, case: str) -> None:
    mutate, expected = REJECTIONS[case]
    data = valid_data()
    mutate(data)
    path = write_json(project / "prompts.json", data)
    with pytest.raises(PromptError) as err:
        load_prompts(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ")
    assert (f"{path}{expected}" if expected.startswith(":") else f"{path}: {expected}") in msg, msg
    assert "\n" not in msg
    # prompts_from_dict checks the same structure and values, naming the given source
    with pytest.raises(PromptError, match="^memory: "):
        prompts_from_dict(data, project, "memory")


def test_valid_data_is_accepted(project: Path) -> None:
    """The base every rejection case mutates is itself valid (so each case tests its own mutation)."""
    loaded = load_prompts(write_json(project / "prompts.json", valid_data()))
    assert loaded.object_ids == [1, 2]
    assert loaded.references[0].object(2) == ObjectGuides(2, paint=paint_mask(), erase=erase_mask())
    assert loaded.references[1].object(1).points == [(0.0, 48.0)]  # image edges are inside


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"version": 1, "references": [', "not valid JSON: Expecting value at line 1 column 31"),
        ("{'version': 1}", "not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        ("", "not valid JSON: Expecting value at line 1 column 1"),
        ("[1, 2]", "expected a prompts file (a JSON object), got list [1, 2]"),
        ('"prompts"', 'expected a prompts file (a JSON object), got string "prompts"'),
    ],
)
def test_rejects_bad_top_level(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "prompts.json"
    path.write_text(text)
    with pytest.raises(PromptError) as err:
        load_prompts(path)
    assert str(err.value) == f"{path}: {expected}"


def test_rejects_missing_prompts_file(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="nope.json: cannot read the prompts file"):
        load_prompts(tmp_path / "nope.json")


def test_rejects_missing_image(project: Path) -> None:
    (project / B).unlink()
    path = write_json(project / "prompts.json", valid_data())
    with pytest.raises(PromptError) as err:
        load_prompts(path)
    assert str(err.value) == f"{path}: {REF2}: image: file not found: {project / B}"


def test_rejects_unreadable_image(project: Path) -> None:
    (project / A).write_bytes(b"not an image at all")
    path = write_json(project / "prompts.json", valid_data())
    with pytest.raises(PromptError) as err:
        load_prompts(path)
    assert str(err.value).startswith(f"{path}: {REF1}: image: {project / A}: cannot read image")


def test_rejects_image_of_other_size(project: Path) -> None:
    make_image(project / A, size=(W, H + 1))
    path = write_json(project / "prompts.json", valid_data())
    with pytest.raises(PromptError) as err:
        load_prompts(path)
    assert str(err.value) == f"{path}: {REF1}: width, height: recorded 64x48, but the image is 64x49 (upright)"


def test_absolute_image_path_in_file(project: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    other = make_image(tmp_path_factory.mktemp("other") / "c.png")
    data = valid_data()
    data["references"][1]["image"] = str(other)
    loaded = load_prompts(write_json(project / "prompts.json", data))
    assert loaded.references[1].image == other
    other.unlink()
    with pytest.raises(PromptError, match=rf"reference 2 \({other}\): image: file not found"):
        load_prompts(project / "prompts.json")


# ----------------------------------------------------------------------------------------------
# Saving never writes a bad or partial file


def test_save_invalid_leaves_existing_file_unchanged(project: Path) -> None:
    path = project / "prompts.json"
    good = prompts_from_dict(valid_data(), project, "x")
    save_prompts(good, path)
    before = path.read_bytes()

    bad = prompts_from_dict(valid_data(), project, "x")
    bad.references[1].objects[0].points = [(70.0, 10.0)]
    with pytest.raises(PromptError) as err:
        save_prompts(bad, path)
    assert str(err.value) == f"{path}: {REF2}: objects[0] (id 1).points[0]: (70.0, 10.0) lies outside the 64x48 image"
    assert path.read_bytes() == before
    assert sorted(p.name for p in project.iterdir()) == ["prompts.json", "refs"]  # no temporary file left


@pytest.mark.parametrize(
    "spoil, expected",
    [
        (lambda p: setattr(p.references[0].objects[0], "box", (4, math.nan, 30, 40)), f"{OBJ0}.box: nan is not a finite"),
        (lambda p: setattr(p.references[0].objects[0], "box", (4, 5, 30)), f"{OBJ0}.box: expected 4 numbers"),
        (lambda p: setattr(p.references[0].objects[0], "labels", [1, 5]), f"{OBJ0}.labels[1]: expected 1"),
        (lambda p: setattr(p.references[0].objects[1], "paint", np.ones((H - 1, W), bool)), f"{OBJ1}.paint.size"),
        (lambda p: setattr(p.references[0].objects[1], "erase", np.ones((H, W, 3), bool)), f"{OBJ1}.erase.size"),
        (lambda p: setattr(p.references[0].objects[1], "paint", None), f"{OBJ1}: no guide"),
        (lambda p: setattr(p.references[0].objects[1], "id", 1), f"{REF1}: objects[1] (id 1).id: duplicate"),
        (lambda p: setattr(p.references[0].objects[1], "id", np.int64(300)), f"{REF1}: objects[1].id: 300 is out"),
        (lambda p: setattr(p.references[0], "width", 65), f"{REF1}: width, height: recorded 65x48"),
        (lambda p: p.classes.update({0: "background"}), ': classes["0"]: key must be'),
        (lambda p: p.classes.update({3: None}), ': classes["3"]: expected a class name string, got null'),
        (lambda p: p.references.clear(), ": references: empty list"),
        (lambda p: [r.objects.clear() for r in p.references], ": references: empty list"),
    ],
)
def test_save_rejects_invalid_prompt_set(project: Path, spoil, expected: str) -> None:
    prompts = prompts_from_dict(valid_data(), project, "x")
    spoil(prompts)
    path = project / "prompts.json"
    with pytest.raises(PromptError) as err:
        save_prompts(prompts, path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ")
    assert (f"{path}{expected}" if expected.startswith(":") else f"{path}: {expected}") in msg, msg
    assert not path.exists()
