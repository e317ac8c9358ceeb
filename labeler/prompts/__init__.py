"""Prompts: the prompts.json file (prompt_set.py) and the state of guides being drawn (guide_state.py).
"""
