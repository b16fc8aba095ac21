"""Online distillation: a teacher trained in the student's trial, batch by batch.

Zhang et al. (2018) / the seed "Lab 3" setting: teacher and student start together; on each
training batch the teacher takes one optimiser step on cross-entropy with the labels only,
and the student is trained on the Hinton loss against the logits the teacher produced for
that batch. Those logits are returned detached: the student never back-propagates into the
teacher, so the teacher's trajectory does not depend on alpha or on the student.

`OnlineTeacher` is a `loop.TeacherSource`, so THE loop runs both models: its `train_logits`
is the teacher's training step, its `end_epoch` evaluates the teacher with the loop's
`evaluate` (teacher_val_acc, teacher_val_loss; the val logits then give the student's
`agreement`), and its `state_dict` goes into the trial's checkpoint for an exact resume.
The teacher uses the student's optimiser and schedule settings (lr, weight decay, momentum,
schedule, grad_clip, label smoothing), the same precision and memory layout.

    python -c "from trainables.distill import distill_student as d; print(d({'epochs': 2, \\
               'online_teacher': 'mlp', 'online_teacher_kwargs': {'width': 256}}))"
"""
from __future__ import annotations

import math

import torch
from torch import nn

from kdtune.trainables import checkpoint
from kdtune.trainables.loop import Diverged, evaluate, optimizer_step
from kdtune.trainables.optim import Schedule, create_optimizer, create_schedule
from kdtune.trainables.runtime import Runtime
from kdtune.trainables.teacher_logits import LOGITS_DTYPE


class OnlineTeacher:
    """A teacher model with its own optimiser and schedule, trained by `train_logits`."""

    trains = True  # the loop calls train_logits every batch, even when alpha == 0

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Schedule,
                 loss_fn: nn.Module, rt: Runtime, *, num_val: int,
                 grad_clip: float | None = None) -> None:
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.loss_fn, self.rt, self.grad_clip = loss_fn, rt, grad_clip
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.val_logits: torch.Tensor | None = None  # set by end_epoch
        self._num_val = num_val
        self._loss_sum = torch.zeros((), device=rt.device)  # this epoch's, on the device
        self._images = 0

    @classmethod
    def build(cls, cfg, rt: Runtime, bundle, steps_per_epoch: int) -> "OnlineTeacher":
        """The teacher `cfg.online_teacher` for `bundle`, optimised with the student's settings."""
        from kdtune import models
        from kdtune.models.mlp import resolve_input_fill
        from kdtune.models.zoo import resolve_zoo_input
        from kdtune.trainables.losses import supervised_loss

        kwargs = resolve_input_fill(cfg.online_teacher, cfg.online_teacher_kwargs_dict(), bundle.mean, bundle.std)
        kwargs = resolve_zoo_input(cfg.online_teacher, kwargs, bundle.mean, bundle.std)
        model = models.create_model(cfg.online_teacher, bundle.num_classes, bundle.in_shape, **kwargs)
        model = rt.prepare(model)
        optimizer = create_optimizer(cfg, model)
        schedule = create_schedule(cfg, optimizer, steps_per_epoch)
        # Plain cross-entropy on the labels, the same loss as the teacher stage.
        loss = supervised_loss(cfg.label_smoothing)
        return cls(model, optimizer, schedule, loss, rt, num_val=len(bundle.val),
                   grad_clip=cfg.grad_clip)

    def train_logits(self, x: torch.Tensor, idx: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One teacher step on (x, y); the logits of its forward pass, detached, float32."""
        self.model.train()  # end_epoch left it in eval mode
        with self.rt.autocast():
            out = self.model(x)
        loss = self.loss_fn(out, y)
        optimizer_step(loss, self.optimizer, self.schedule, self.params, grad_clip=self.grad_clip)
        self._loss_sum += loss.detach() * y.shape[0]
        self._images += y.shape[0]
        return out.detach().to(LOGITS_DTYPE)

    def end_epoch(self, val_loader) -> dict[str, float]:
        """Step a per-epoch schedule, evaluate the teacher and keep its val logits."""
        self.schedule.after_epoch()
        if self.val_logits is None:
            classes = self.model.kdtune_spec["num_classes"]
            self.val_logits = torch.empty(self._num_val, classes, dtype=LOGITS_DTYPE,
                                          device=self.rt.device)
        val = evaluate(self.model, val_loader, self.rt, out_logits=self.val_logits)
        train_loss = self._loss_sum.item() / max(self._images, 1)
        self._loss_sum.zero_()
        self._images = 0
        if not (math.isfinite(train_loss) and math.isfinite(val["val_loss"])):
            raise Diverged("the online teacher's loss is not finite")
        return {"teacher_train_loss": train_loss, "teacher_val_loss": val["val_loss"],
                "teacher_val_acc": val["val_acc"]}

    def state_dict(self) -> dict:
        """Weights (default layout, CPU), optimiser and schedule: what a resume needs."""
        return {
            "model_spec": self.model.kdtune_spec,
            "state_dict": {k: v.detach().cpu().contiguous()
                           for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
        }

    def load_state_dict(self, state: dict | None) -> None:
        if state is None:
            raise checkpoint.CheckpointError(
                "the checkpoint has no online teacher state (it was written by a trial "
                "without online_teacher): resume with the config that wrote it")
        if state["model_spec"] != self.model.kdtune_spec:
            raise checkpoint.CheckpointError(
                f"cannot resume: the checkpoint's online teacher is {state['model_spec']}, "
                f"this trial builds {self.model.kdtune_spec}")
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state.get("scheduler"))
