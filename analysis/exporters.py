"""Writing a trained model in formats that run without kdtune, and running them back.

Three files per model, all taking normalised float32 NCHW images with any batch size:

    model.onnx             torch.onnx.export(dynamo=True): onnxruntime, any ONNX runtime
    model.pt2              torch.export's ExportedProgram (torch.export.load(...).module())
    model.torchscript.pt   torch.jit.trace: torch.jit.load, and C++ libtorch's torch::jit::load

Why both TorchScript and torch.export: torch 2.14 marks torch.jit deprecated (FutureWarning
on trace and load) and names torch.export its successor, so model.pt2 is the file to build
on (AOTInductor, ExecuTorch); TorchScript is still what most serving code and libtorch
load today. torch.export captures the graph once with a symbolic batch dimension, and the
ONNX file is converted from that same program. TorchScript is *traced*, not scripted: the
registry's models have no data-dependent control flow, and tracing accepts every module
that runs, where scripting refuses ordinary Python (kwargs dicts, registries).

`compare` states what "the same outputs" means, so the script and its tests agree.
"""
from __future__ import annotations

import contextlib
import io
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
FILES = {"onnx": "model.onnx", "torch_export": "model.pt2", "torchscript": "model.torchscript.pt"}
# Elementwise |exported - checkpoint| <= ATOL + RTOL * |checkpoint| (numpy.allclose's rule).
# fp32 kernels that reorder sums differ by ~1e-7 relative per op; 1e-4 leaves room for deep
# ResNets and still catches a wrong weight, a missing normalisation or a train-mode layer.
ATOL = 1e-4
RTOL = 1e-4
EXAMPLE_BATCH = 4  # torch.export specialises sizes 0 and 1: trace the batch dim with >= 2


def missing_runtimes() -> list[str]:
    """The optional packages (the `export` extra) that are not importable here."""
    import importlib.util

    return [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]


def export_program(model: nn.Module, in_shape: tuple[int, int, int]) -> torch.export.ExportedProgram:
    """The eval-mode model as a torch.export program with a dynamic batch dimension."""
    example = torch.zeros(EXAMPLE_BATCH, *in_shape)
    batch = torch.export.Dim("batch")
    return torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},))


def write_all(model: nn.Module, in_shape: tuple[int, int, int], folder: Path) -> dict[str, Path]:
    """Write the three files into `folder`; returns format -> path."""
    model = model.eval()
    program = export_program(model, in_shape)
    paths = {fmt: folder / name for fmt, name in FILES.items()}
    torch.export.save(program, paths["torch_export"])
    # The exporter prints progress lines ("[torch.onnx] Obtain model graph ..."): keep the
    # script's output to its own report.
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(program, (torch.zeros(EXAMPLE_BATCH, *in_shape),), str(paths["onnx"]), dynamo=True,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False,
                          external_data=False)  # one self-contained file: students are far below 2 GB
    with torch.no_grad(), _quiet_jit():
        traced = torch.jit.trace(model, torch.zeros(EXAMPLE_BATCH, *in_shape))
        torch.jit.save(traced, str(paths["torchscript"]))
    return paths


Runner = Callable[[np.ndarray], np.ndarray]


def load_runners(paths: dict[str, Path], threads: int | None = None) -> dict[str, Runner]:
    """format -> function(float32 NCHW array) -> logits array, each read back from its file
    with its own runtime (onnxruntime, torch.export.load, torch.jit.load): what a user runs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads  # the same thread budget torch gets
    session = ort.InferenceSession(str(paths["onnx"]), options, providers=["CPUExecutionProvider"])
    program = torch.export.load(paths["torch_export"]).module()
    with _quiet_jit():
        scripted = torch.jit.load(str(paths["torchscript"]), map_location="cpu").eval()

    def torch_runner(module) -> Runner:
        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(x)).numpy()
        return run

    return {"onnx": lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x})[0],
            "torch_export": torch_runner(program), "torchscript": torch_runner(scripted)}


def run_batched(runner: Runner, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits of every row of `x`, `batch_size` rows at a time (the last batch may be short,
    which also exercises the dynamic batch dimension)."""
    return np.concatenate([runner(np.ascontiguousarray(x[i:i + batch_size]))
                           for i in range(0, len(x), batch_size)])


@dataclass(frozen=True)
class Comparison:
    """How far one runtime's logits are from the checkpoint's, on the same images."""

    max_abs_diff: float
    top1_agreement: float  # fraction of images with the same argmax
    disagreements: int  # images whose argmax differs although the reference is no near-tie
    near_ties: int  # images whose top-2 reference margin is within twice the tolerance
    within_tolerance: bool  # every logit obeys |a - ref| <= ATOL + RTOL * |ref|

    @property
    def passed(self) -> bool:
        return self.within_tolerance and self.disagreements == 0

    def as_dict(self) -> dict:
        return {"max_abs_diff": self.max_abs_diff, "top1_agreement": self.top1_agreement,
                "top1_disagreements": self.disagreements, "near_ties": self.near_ties,
                "within_tolerance": self.within_tolerance, "passed": self.passed}


def compare(out: np.ndarray, ref: np.ndarray, atol: float = ATOL, rtol: float = RTOL) -> Comparison:
    """Compare logits `out` (N, K) with reference logits `ref` (N, K).

    An argmax may legitimately flip where the reference's two best logits are closer than
    the tolerance allows either to move; those near-ties are counted, not failed."""
    if out.shape != ref.shape:
        raise ValueError(f"logits shape {out.shape} != reference {ref.shape}")
    out, ref = out.astype(np.float64), ref.astype(np.float64)
    diff = np.abs(out - ref)
    same = out.argmax(1) == ref.argmax(1)
    top2 = np.sort(ref, axis=1)[:, -2:] if ref.shape[1] > 1 else np.zeros((len(ref), 2))
    slack = 2 * (atol + rtol * np.abs(top2).max(axis=1))
    tie = (top2[:, 1] - top2[:, 0]) <= slack
    return Comparison(max_abs_diff=float(diff.max()) if diff.size else 0.0,
                      top1_agreement=float(same.mean()) if len(same) else 1.0,
                      disagreements=int((~same & ~tie).sum()), near_ties=int(tie.sum()),
                      within_tolerance=bool((diff <= atol + rtol * np.abs(ref)).all()))


def timings_ms(fn: Callable[[], object], repeats: int, warmup: int = 5) -> tuple[float, float]:
    """(median, fastest) wall time of fn() in milliseconds, after `warmup` untimed calls
    (allocation, kernel selection and onnxruntime's first-run graph work are paid there).
    The fastest run is what the model costs when nothing else competes for the cores; on a
    busy machine the median can be many times larger."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times), min(times)


@contextlib.contextmanager
def _quiet_jit():
    """torch.jit's deprecation FutureWarnings (see the module docstring): known, and nothing
    a user of the export can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        yield
