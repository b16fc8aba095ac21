"""kdtune analysis package."""
