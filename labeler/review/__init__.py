"""Reviewing a labeled output folder: accept, correct, exclude, teach, audit (session.py: `Review`); how good
the labels are, from a random audit (quality.py: the statistics; audit.py: quality.json, `python main.py quality`).
"""
