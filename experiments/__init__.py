"""Research harnesses with their own README, run from the repository root: `python -m experiments.<name>.<script>`."""
