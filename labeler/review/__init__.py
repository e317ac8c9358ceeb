"""Reviewing a labeled output folder: accept, correct, exclude, teach (session.py: `Review`).
"""
