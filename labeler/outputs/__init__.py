"""The output folder and what is written into it: paths, stems, the manifest and its records (folder.py),
per-target files and results.csv (writers.py), report.png (report.py), SAM 3D meshes (meshes.py).
"""
