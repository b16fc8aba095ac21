"""Errors and copy fidelity of kdtune checkpoints on one split, in fp32: what the Hinton et al.
(2015) table counts (test errors of 10,000) and how closely a distilled student copies its teacher."""
from __future__ import annotations

from collections.abc import Sequence

import torch


def split_logits(checkpoint_path: str, bundle, split: str) -> tuple[torch.Tensor, int]:
    """(fp32 eval-mode logits of the checkpoint's model on bundle.<split>, rows in the split's
    order; its parameter count)."""
    from kdtune import models
    from kdtune.datasets import DeviceLoader
    from kdtune.trainables import checkpoint
    from kdtune.trainables.loop import evaluate
    from kdtune.trainables.runtime import Runtime

    model, _ = checkpoint.load_model(checkpoint_path)
    rt = Runtime(torch.device("cpu"), None, False, torch.get_num_threads())
    images = getattr(bundle, split)
    loader = DeviceLoader(images, batch_size=1000, mean=bundle.mean, std=bundle.std)
    logits = torch.empty(len(images), bundle.num_classes)
    evaluate(model, loader, rt, out_logits=logits)
    return logits, models.count_params(model)


def count_test_errors(checkpoint_path: str, bundle, split: str = "test") -> tuple[int, int]:
    """(errors on bundle.<split>, parameters) of the model in a kdtune checkpoint, fp32;
    split "val" counts on the held-out validation images instead of the test set."""
    logits, params = split_logits(checkpoint_path, bundle, split)
    return int((logits.argmax(1) != getattr(bundle, split).labels).sum()), params


def copy_fidelity(student: str, teacher: str, bundle, splits: Sequence[str]) -> dict[str, dict]:
    """How closely a distilled student copies its teacher, per split: {split: {disagree: images
    whose top-1 class differs, logit_rmse: RMS difference of the per-image centred logits (the
    quantity a high-T KD loss regresses; logits are compared up to a shift, as softmax is),
    teacher_logit_sd (the SD of the teacher's centred logits, the scale that RMSE is read
    against: teachers of other logit scales compare by the ratio), teacher_errors /
    student_errors, lost: images the teacher gets right and the student wrong, and the teacher's
    top-2 logit margin, median over those (lost_teacher_margin, None when none are lost) and over
    all images (teacher_margin)}}. On the transfer set it says whether the student fitted its
    targets; on held-out images, how far that copy carries. A copy whose logit error flips only
    the teacher's near-ties loses images at a margin far below the teacher's usual one."""
    out = {}
    for split in splits:
        s, _ = split_logits(student, bundle, split)
        t, _ = split_logits(teacher, bundle, split)
        labels = getattr(bundle, split).labels
        t_centred = t - t.mean(1, keepdim=True)
        diff = (s - s.mean(1, keepdim=True)) - t_centred
        top2 = t.topk(2, dim=1).values
        margin = top2[:, 0] - top2[:, 1]  # logits by which the teacher's top class leads
        s_wrong, t_wrong = s.argmax(1) != labels, t.argmax(1) != labels
        lost = s_wrong & ~t_wrong
        out[split] = {"disagree": int((s.argmax(1) != t.argmax(1)).sum()),
                      "lost": int(lost.sum()),
                      "lost_teacher_margin": round(float(margin[lost].quantile(0.5)), 4) if lost.any() else None,
                      "teacher_margin": round(float(margin.quantile(0.5)), 4),
                      "logit_rmse": round(float(diff.pow(2).mean().sqrt()), 4),
                      "teacher_logit_sd": round(float(t_centred.pow(2).mean().sqrt()), 4),
                      "teacher_errors": int(t_wrong.sum()),
                      "student_errors": int(s_wrong.sum())}
    return out
