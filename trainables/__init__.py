"""kdtune trainables: what one Ray Tune trial runs.

Entry points (top-level functions, passed to Tune via `tune.with_parameters`):
    trainables.teacher.train_teacher(config, data=None)
    trainables.distill.distill_student(config, data=None, teacher_logits=None)

Modules: config (frozen per-stage configs), reporting (the one Ray wrapper; METRIC, MODE),
losses (the KD method registry), loop (THE train/eval loop), optim (optimiser and schedule registries),
runtime (device/precision/threads), outcome (best epoch, stopped early, reduction vs teacher),
checkpoint (kdtune checkpoint files), teacher_logits (cached / online teacher logits),
online_teacher (a teacher trained jointly with the student: online distillation),
stage (setup + resume + per-epoch checkpoint/report around the loop).

This __init__ imports nothing itself: importing one module pulls in only what it needs.
"""
