"""SAM 2.1 as a model backend: building the predictor (build.py), the only module touching SAM 2's private
API (internals.py), conditioning on references and labeling targets (tracker.py), the backend (backend.py).
"""
