"""Few-shot batch labeling with SAM 2: guided references condition a pseudo-video of targets."""

__version__ = "0.1.0"
