"""SmallImageResNet: torchvision's ResNet class with kdtune's gradient probes and linear probing.

Its own module because it subclasses torchvision's ResNet: importing torchvision costs ~2 s
of every process start (it pulls in torch._dynamo through torchvision.ops), so
models/torchvision_resnets.py imports this module only when a resnet18 / resnet50 is built,
not when kdtune.models is imported by every trial, cache task and CLI call.
"""
from __future__ import annotations

from torch import nn
from torchvision.models.resnet import ResNet

from kdtune.models.layers import first_weighted


class SmallImageResNet(ResNet):
    """torchvision ResNet + the kdtune gradient-probe hook.

    With `frozen_backbone` (linear probing) everything but `fc` stays in eval mode whatever
    `train()` is asked: frozen weights are not enough, BatchNorm would still update its
    running statistics from every training batch and the "frozen" backbone would drift.
    """

    frozen_backbone = False

    def train(self, mode: bool = True) -> "SmallImageResNet":
        super().train(mode)
        if self.frozen_backbone:
            for name, child in self.named_children():
                if name != "fc":
                    child.train(False)
        return self

    def gradient_probes(self) -> list[tuple[str, nn.Module]]:
        """Stem conv, the first conv of every block, fc: input to output."""
        probes: list[tuple[str, nn.Module]] = [("conv1", self.conv1)]
        for s, stage in enumerate((self.layer1, self.layer2, self.layer3, self.layer4)):
            for b, blk in enumerate(stage):
                probes.append((f"layer{s + 1}.{b}", first_weighted(blk.conv1)))
        probes.append(("fc", self.fc))
        return probes
