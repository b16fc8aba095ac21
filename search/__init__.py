"""kdtune search package."""
