"""The plain data that flows through the labeler: guides per object (guides.py), results (detections.py).
"""
