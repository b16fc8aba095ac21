"""What the user gives, checked before Ray starts: flags (cli), presets, the resolved
SearchSpec (spec), contradictions (flag_rules) and pre-flight validation (validate).
"""
