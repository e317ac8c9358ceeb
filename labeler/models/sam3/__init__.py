"""SAM 3's tracker as a model backend (`--model sam3`, docs/sam3.md): building it (build.py), the only module
touching sam3's private API (internals.py), conditioning on references and labeling targets (tracker.py), the
backend (backend.py).
"""
