"""Model backends: the interface the rest of the labeler reaches a model through (backend.py), what
backends share (common.py), and one subpackage per backend (sam2/, sam3/).
"""
