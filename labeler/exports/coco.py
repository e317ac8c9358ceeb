"""COCO instance segmentation: `coco.json` with one exact RLE mask (pycocotools) per present object.

images: one per labeled target (excluded ones left out), `file_name` as in the target folder, upright
width/height, `review` (unreviewed, accepted or corrected).
categories: id = object ID, name = class name or `object_<id>`, for every object ID of the prompts.
annotations: per present object: `segmentation` (compressed RLE, counts as a string), `area`
(pixels), `bbox` ([x, y, width, height], integers), `score` (sigmoid of the object-score logit, full precision),
`iscrowd` 0.

Usage: `write_coco(folder, folder.labeled(targets), {1: "disc"}, [1, 2])` -> Path("out/coco.json").
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pycocotools import mask as mask_util

from ..outputs.folder import OutputFolder, TargetRecord
from ..types.guides import class_name
from ..utils.files import atomic_write_text
from ..utils.images import upright_size
from ..utils.rle import encode
from .common import read_id_mask

log = logging.getLogger(__name__)


def coco_dataset(folder: OutputFolder, items: list[TargetRecord], classes: dict[int, str],
                 object_ids: list[int]) -> dict:
    """The COCO dict; masks are read from id_masks one at a time."""
    images, annotations = [], []
    for image_id, item in enumerate(items, start=1):
        width, height = upright_size(item.path)
        images.append({"id": image_id, "file_name": item.path.name, "width": width, "height": height,
                       "review": item.review_state})
        for obj_id, score in item.present:
            mask = read_id_mask(folder, item, obj_id)
            if mask is None:
                continue
            if mask.shape != (height, width):
                log.warning("export: id mask of object %d of %s is %dx%d, the image %dx%d; left out",
                            obj_id, item.path.name, mask.shape[1], mask.shape[0], width, height)
                continue
            rle = encode(mask)
            bbox = mask_util.toBbox(rle)
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": obj_id,
                "segmentation": rle,
                "area": int(mask_util.area(rle)),
                "bbox": [int(v) for v in bbox],  # integer-valued floats from pycocotools
                "iscrowd": 0,
                "score": score,
            })
    categories = [{"id": k, "name": class_name(classes, k), "supercategory": "object"} for k in object_ids]
    return {
        "info": {"description": "few-shot SAM 2 labeler export", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def write_coco(folder: OutputFolder, items: list[TargetRecord], classes: dict[int, str], object_ids: list[int]) -> Path:
    atomic_write_text(folder.coco_json, json.dumps(coco_dataset(folder, items, classes, object_ids)) + "\n")
    return folder.coco_json


def write(export) -> Path:
    """The format's entry (`exports.FORMATS`): coco.json."""
    return write_coco(export.folder, export.items, export.classes, export.object_ids)
