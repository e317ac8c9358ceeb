"""Generate the bundled demo set: assets/demo/{refs,targets}/*.jpg and assets/demo/prompts.json.

Scenes hold a disc (object 1) and a square (object 2) on a textured background; the references
carry every kind of guide (box, positive and negative points, brush paint and erase).
Run: `python assets/make_demo.py` (deterministic; rewrites the files).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from labeler.prompts.prompt_set import ObjectGuides, PromptSet, ReferenceGuides, save_prompts

DEMO = Path(__file__).resolve().parent / "demo"


def scene(seed: int, size: tuple[int, int]) -> tuple[np.ndarray, dict]:
    """An RGB scene and the geometry of its disc (cx, cy, r) and square (x0, y0, x1, y1)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.integers(60, 200, 3)
    img = base + 25 * np.sin(xx[..., None] / 17.0 + yy[..., None] / 23.0 + np.arange(3)) + rng.normal(0, 8, (h, w, 3))
    r = int(rng.integers(h // 8, h // 5))
    cx, cy = int(rng.integers(r + 5, w // 2 - 5)), int(rng.integers(r + 5, h - r - 5))
    img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = (220, 60, 50) + rng.normal(0, 6, 3)
    s = int(rng.integers(h // 5, h // 3))
    x0, y0 = int(rng.integers(w // 2 + 5, w - s - 5)), int(rng.integers(5, h - s - 5))
    img[y0:y0 + s, x0:x0 + s] = (40, 90, 210) + rng.normal(0, 6, 3)
    return np.clip(img, 0, 255).astype(np.uint8), {"disc": (cx, cy, r), "square": (x0, y0, x0 + s, y0 + s)}


def main() -> None:
    for sub in ("refs", "targets"):
        (DEMO / sub).mkdir(parents=True, exist_ok=True)
    references = []
    for k, seed in enumerate((1, 2)):
        img, geo = scene(seed, (320, 240))
        path = DEMO / "refs" / f"ref{k + 1}.jpg"
        Image.fromarray(img).save(path, quality=92)
        cx, cy, r = geo["disc"]
        x0, y0, x1, y1 = geo["square"]
        if k == 0:
            objects = [
                ObjectGuides(1, box=(cx - r - 2, cy - r - 2, cx + r + 2, cy + r + 2), points=[(cx, cy)], labels=[1]),
                ObjectGuides(2, box=(x0 - 2, y0 - 2, x1 + 2, y1 + 2)),
            ]
        else:
            paint = np.zeros((240, 320), dtype=bool)
            paint[y0 + 2:y1 - 2, x0 + 2:x1 - 2] = True
            erase = np.zeros_like(paint)
            erase[y0:y0 + 6, x0:x1] = True  # trim the top edge back off
            objects = [
                ObjectGuides(1, points=[(cx, cy), (min(cx + 2 * r, 310), cy)], labels=[1, 0]),
                ObjectGuides(2, paint=paint, erase=erase),
            ]
        references.append(ReferenceGuides(path, 320, 240, objects))
    sizes = [(320, 240), (400, 300), (320, 240), (256, 256), (480, 320), (320, 240)]
    for i, size in enumerate(sizes):
        Image.fromarray(scene(100 + i, size)[0]).save(DEMO / "targets" / f"target{i + 1:02d}.jpg", quality=92)
    save_prompts(PromptSet(references, {1: "disc", 2: "square"}), DEMO / "prompts.json")
    print(f"demo written to {DEMO}")


if __name__ == "__main__":
    main()
