"""The experiment's own record: manifest.json (spec, stages, winners) and summary.md.
"""
