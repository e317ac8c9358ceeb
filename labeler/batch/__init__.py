"""Running a batch: `label_batch` (pipeline.py), its settings as one value (settings.py), the bookkeeping
every executor shares (recorder.py), the local and Ray executors (local.py, ray_executor.py), and the
feature cache (feature_cache.py). Layer: above models, outputs and exports; below review, the API and the GUI.
"""
