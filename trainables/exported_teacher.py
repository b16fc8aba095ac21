"""Exported teachers: a torch.export program (.pt2) or an ONNX file (onnxruntime) as the teacher.

The search asks its teacher for logits only (the cache's Ray tasks, an online teacher), so
a network from any framework that can write ONNX, or a torch.export program, can teach. The
file stands in for a kdtune checkpoint: `payload(path)` gives the fields a checkpoint
carries (model spec with classes and input shape, dataset, params) and `load(path)` a frozen
module whose forward returns logits.

What the file expects as input comes from `model_card.json` beside it (analysis/export.py
writes one: input shape, classes, dataset, normalisation), else from the file's own input
and output shapes; `checkpoint.check_compatible` then refuses a teacher made for other data,
other classes, another input shape or another normalisation (kdtune feeds
(pixels / 255 - mean) / std with the dataset's mean and std).

Exported teachers run in float32 whatever the trial's precision: an ONNX session has no
autocast, and a .pt2 program's weights are kept as exported, so the cached logits equal the
exporting module's.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

SUFFIXES = (".onnx", ".pt2")
CARD = "model_card.json"  # analysis/export.py writes it beside model.onnx / model.pt2


def is_exported(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in SUFFIXES


class ExportedTeacher(nn.Module):
    """Logits from an exported file; frozen, float32, no parameters of its own to train."""

    kdtune_exported = True

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        super().__init__()
        self.path = str(Path(path).resolve())
        if self.path.lower().endswith(".onnx"):
            import onnxruntime as ort

            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = options.inter_op_num_threads = int(threads)
            self._session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
            self._input = self._session.get_inputs()[0].name
            program = None
        else:
            self._session = None
            program = torch.export.load(self.path).module()
        # Not a registered submodule: an exported program refuses train()/eval(), which
        # nn.Module would pass down to it. It is frozen and runs as exported.
        self.__dict__["program"] = program

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Outside autocast: both runtimes compute in float32 (see the module docstring).
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float().contiguous()
            if self._session is not None:
                out = self._session.run(None, {self._input: x.detach().cpu().numpy()})[0]
                return torch.from_numpy(np.ascontiguousarray(out)).to(x.device)
            return self.program(x)

    def __deepcopy__(self, memo):  # an onnxruntime session cannot be copied: the file is re-read
        return ExportedTeacher(self.path)


def _card(path: Path) -> dict[str, Any] | None:
    card = path.parent / CARD
    if not card.is_file():
        return None
    data = json.loads(card.read_text())
    return data if data.get("format") == "kdtune-model-card" else None


def _file_shapes(path: Path) -> tuple[list[int], int]:
    """(input shape C, H, W; classes) read from the exported file itself."""
    if path.suffix.lower() == ".onnx":
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        def dims(value):
            return [d.dim_value for d in value.type.tensor_type.shape.dim]
        in_dims, out_dims = dims(graph.input[0]), dims(graph.output[0])
    else:
        program = torch.export.load(str(path))
        inputs = [n for n in program.graph.nodes if n.op == "placeholder"
                  and n.name in program.graph_signature.user_inputs]
        outputs = [n for n in program.graph.nodes if n.op == "output"][0].args[0]
        in_dims = list(inputs[0].meta["val"].shape)
        out_dims = list(outputs[0].meta["val"].shape)
    if len(in_dims) != 4 or len(out_dims) != 2 or not all(isinstance(d, int) and d > 0 for d in in_dims[1:]):
        raise ValueError(f"{path}: expected an (N, C, H, W) -> (N, classes) model, its shapes are "
                         f"{in_dims} -> {out_dims}; add a model_card.json beside it")
    return [int(d) for d in in_dims[1:]], int(out_dims[1])


def payload(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint-like record of an exported teacher (no state_dict: the file is the model)."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no exported model at {path}")
    card = _card(path)
    if card is not None:
        in_shape = [int(d) for d in card["input"]["shape"][1:]]
        classes = len(card["classes"])
        norm = card["input"].get("normalisation") or {}
        info = card.get("model", {})
        out: dict[str, Any] = {"dataset": {"name": card.get("dataset")},
                               "normalisation": {"mean": norm.get("mean"), "std": norm.get("std")},
                               "metrics": {"params": info.get("params")} if info.get("params") else {},
                               # what it trained on, for the leak check (kdtune export writes it)
                               "split": card.get("split")}
    else:
        in_shape, classes = _file_shapes(path)
        out = {"dataset": {}, "metrics": {}}
    name = f"exported:{path.name}"
    out.update(model_spec={"name": name, "num_classes": classes, "in_shape": in_shape},
               config={"model": name}, exported=str(path))
    return out


def load(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """(frozen ExportedTeacher, its payload)."""
    record = payload(path)
    model = ExportedTeacher(path).eval()
    model.kdtune_spec = record["model_spec"]
    return model, record
