"""The Ray Tune machinery: the Optuna searcher and its study, capped ASHA and its rungs,
search spaces, result loggers, the progress console, trackers, and every Ray internal
relied on (ray_adapter).
"""
