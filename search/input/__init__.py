"""What the user gives, checked before Ray starts: the run options declared once (options/,
Option in schema), flags (cli), presets, the resolved SearchSpec (spec), contradictions and
the resume rule (flag_rules) and pre-flight validation (validate).
"""
