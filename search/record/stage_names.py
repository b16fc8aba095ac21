"""The names of an experiment's stages, declared once: the stage folders, the manifest's keys,
the final stage's `source_stage` values and every analysis table's `stage` column are these.

Plain strings (not an Enum), so they are JSON keys and folder names as they are.
"""
from __future__ import annotations

TEACHER = "teacher"        # one trial of the teacher, or --teacher-checkpoint adopted
BASELINE = "baseline"      # the students without KD (alpha 0)
DISTILL = "distill"        # the KD search
ASSISTANT = "assistant"    # --chain: the teacher assistant, distilled from the teacher
TA_DISTILL = "ta_distill"  # --chain: the student, distilled from the assistant
SWEEP = "sweep"            # a preset's grid instead of the searches
FINAL = "final"            # the winners retrained over seeds, tested once
TWIN = "twin"              # a final candidate's source: a distilled config's undistilled twin (no stage of its own)

# The Tune stages with trials of their own, in run order (FINAL's trials are retraining runs).
STAGES = (TEACHER, BASELINE, DISTILL, ASSISTANT, TA_DISTILL, SWEEP)
# Searches whose students distil (their final candidates get a twin and the KD gains).
DISTILLED_STAGES = (DISTILL, TA_DISTILL)
