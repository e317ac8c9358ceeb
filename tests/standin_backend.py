"""A model backend that is not SAM 2: proves the backend interface (`labeler.models.backend`) is complete.

It imports nothing of SAM 2. Its "image encoder" is an area-resize to a small square (the features,
which the feature cache stores); an object is the colour its guides cover on the references (box,
points' neighbourhoods and paint, less erase), and a pixel belongs to it when its colour is within
`RADIUS` of that colour. Deterministic and fast, so batch, cache, Ray, review and the selector's preview
all run on it in seconds.

    register()   # --model standin, from then on in this process
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from labeler.models.backend import encode, register_backend
from labeler.types.detections import Detection
from labeler.types.guides import class_name, compose_mask
from labeler.utils.images import read_rgb

SIZE = 32  # the stand-in's input side
RADIUS = 60.0  # colour distance within which a pixel is the object's


def register() -> None:
    register_backend("standin", f"{__name__}:StandInBackend", ["standin"])


class StandInBackend:
    family = "standin"
    title = "stand-in"
    models = ("standin",)
    forwards = 0  # images encoded, over all instances in this process (the cache tests count them)

    @staticmethod
    def check(settings):
        return None  # no weights

    @staticmethod
    def input_size(settings):
        return settings.image_size or SIZE

    def __init__(self, settings, seed: int = 0):
        self.settings = settings
        self.image_size = self.input_size(settings)
        self.device = torch.device("cpu")
        self.precision = "fp32"  # it computes in float32 whatever the settings ask

    def identity(self) -> dict:
        return {"model": "standin", "image_size": self.image_size, "device": "cpu"}

    def prepare(self, rgb: np.ndarray) -> torch.Tensor:
        small = cv2.resize(rgb, (self.image_size, self.image_size), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(small.astype(np.float32)).permute(2, 0, 1).contiguous()

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        type(self).forwards += len(inputs)
        return torch.stack(inputs)

    def split_features(self, features: torch.Tensor):
        return [([features[j : j + 1]], ["float32"]) for j in range(features.shape[0])]

    def join_features(self, entries: list[dict]) -> torch.Tensor:
        return torch.cat([e["levels"][0] for e in entries])

    def condition(self, prompts, memory="refs", threshold=0.0, num_targets=None, features=None):
        return StandInLabeler(self, prompts, memory, threshold, features)

    def preview(self, rgb: np.ndarray):
        return StandInPreview(rgb)


def _guided(obj, height: int, width: int) -> np.ndarray:
    """The pixels an object's guides cover: its box, a disc around each positive point, paint, less erase."""
    mask = np.zeros((height, width), bool)
    if obj.box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in obj.box)
        mask[max(y0, 0):y1, max(x0, 0):x1] = True
    yy, xx = np.mgrid[:height, :width]
    for (x, y), label in zip(obj.points, obj.labels):
        disc = (xx - x) ** 2 + (yy - y) ** 2 <= 100
        mask = mask | disc if label == 1 else mask & ~disc
    return compose_mask(mask, obj)


class StandInPreview:
    def __init__(self, rgb: np.ndarray):
        self.rgb = rgb

    def mask(self, obj) -> np.ndarray:
        return _guided(obj, *self.rgb.shape[:2])


class StandInLabeler:
    def __init__(self, backend, prompts, memory, threshold, features):
        self.backend, self.memory, self.threshold, self.features = backend, memory, threshold, features
        self.classes = dict(prompts.classes)
        colours: dict[int, list[np.ndarray]] = {}
        for ref in prompts.references:
            rgb = read_rgb(ref.image)
            for obj in ref.objects:
                if obj.absent:
                    continue
                covered = _guided(obj, *rgb.shape[:2])
                if covered.any():
                    colours.setdefault(obj.id, []).append(rgb[covered].astype(np.float32))
        self.colours = {k: np.concatenate(v).mean(axis=0) for k, v in sorted(colours.items())}

    @property
    def object_ids(self) -> list[int]:
        return list(self.colours)

    def label_many(self, rgbs, image_hashes=None, inputs=None):
        features = encode(self.backend, rgbs, self.features, image_hashes, inputs).numpy()
        results = []
        for rgb, small in zip(rgbs, features):
            pixels = small.transpose(1, 2, 0)
            detections = []
            for obj_id, colour in self.colours.items():
                logits = RADIUS - np.linalg.norm(pixels - colour, axis=-1)
                mask = cv2.resize(logits, rgb.shape[1::-1], interpolation=cv2.INTER_LINEAR) > 0
                score = float(logits.max())
                present = score > self.threshold and bool(mask.any())
                detections.append(Detection(obj_id, score, mask, present, class_name(self.classes, obj_id)))
            results.append(detections)
        return results

    def label(self, rgb):
        return self.label_many([rgb])[0]
