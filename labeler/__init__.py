"""Few-shot batch labeling with SAM 2: guided references condition a pseudo-video of targets.

Usage:
    import labeler
    prompts = labeler.PromptSet.load("output/prompts.json")
    lab = labeler.Labeler.from_pretrained(prompts, checkpoint="none", image_size=256)
    result = lab.label("targets/t1.jpg")
    summary = labeler.label_batch(prompts, targets="targets/", output="output/", checkpoint="none")

In a notebook cell (ipympl): `session = labeler.guide_in_notebook("refs/")` shows the SmartSelector and
returns at once; a later cell reads `session.result()` (`review_in_notebook` likewise; docs/notebook.md).

Public names load on first use, so `import labeler` imports nothing heavy (no torch) and changes
nothing process-wide.
"""

import importlib

__version__ = "0.1.0"

_WHERE = {
    "BatchSummary": "batch.recorder",
    "Detection": "types.detections",
    "ImageReadError": "utils.images",
    "LabelResult": "api",
    "Labeler": "api",
    "ObjectGuides": "types.guides",
    "PromptError": "prompts.prompt_set",
    "PromptSet": "prompts.prompt_set",
    "ReferenceGuides": "types.guides",
    "Review": "review.session",
    "UsageError": "errors",
    "guide_in_notebook": "gui.notebook",
    "label_batch": "batch.pipeline",
    "quality_report": "review.audit",
    "review_in_notebook": "gui.notebook",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'labeler' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
