"""The pipeline's stages, each one Ray Tune experiment: teacher, baseline, distill, the
teacher-assistant chain, sweeps and the final stage; the teacher-logit cache between them.
"""
