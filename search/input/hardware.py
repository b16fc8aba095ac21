"""Fit a preset's per-trial resources to the machine a local run starts on.

A preset's `resources:` are defaults for a bigger machine; a trial asking more CPUs or GPUs
than exist would wait forever. So, for a local run (no --address): GPUs asked by the preset
but absent here become 0 (with a warning), and the preset's CPUs per trial are capped at this
machine's count. A flag the user gave is never changed (validate refuses an impossible one),
and a resumed run re-reads its own spec. Kept out of build_spec, which only merges what the
user and the preset said.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection

from kdtune.search.input.spec import SearchSpec


def local_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def fit_to_machine(spec: SearchSpec, given: Collection[str]) -> SearchSpec:
    """`spec` with its resources fitted to this machine (unchanged for a cluster run)."""
    if spec.address:
        return spec
    changes = {}
    if "gpus_per_trial" not in given and spec.gpus_per_trial and not local_gpus():
        if not spec.resume:
            from kdtune.search.input.errors import warn

            warn(f"preset {spec.preset} asks {spec.gpus_per_trial:g} GPU per trial but this machine has none: "
                 "trials run on the CPU (pass --address of a cluster with GPUs to use them)")
        changes["gpus_per_trial"] = 0
    if "cpus_per_trial" not in given and spec.cpus_per_trial > (os.cpu_count() or 1):
        changes["cpus_per_trial"] = min(spec.cpus_per_trial, os.cpu_count() or 1)
    return dataclasses.replace(spec, **changes) if changes else spec
