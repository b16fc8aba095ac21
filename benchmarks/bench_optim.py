"""kdtune's optimisers (trainables/optim.py: torch's fused kernels where every parameter can
take them) against torch's default implementation (foreach), on CPU.

Per model and optimiser, interleaved repeats (default, fused, default, ...), medians:
  - the optimiser update alone (`opt.step()` on fixed gradients), microseconds;
  - a whole training step (forward, cross-entropy, backward, update) on a fixed batch, ms;
  - the largest weight difference after one training step from the same start: the two
    implementations do the same arithmetic in a different order, so they differ by rounding
    (~1e-8). Over many steps of a deep net that difference grows like any other rounding
    change (threads, BLAS): a CIFAR ResNet-20 at lr 0.05 on random data agrees bitwise for ~20
    SGD steps, then drifts to ~0.1 by step 50, as two runs on different thread counts would.

    python -m benchmarks.bench_optim
    python -m benchmarks.bench_optim --threads 1 --repeats 3
"""
from __future__ import annotations

import argparse

import torch

from benchmarks.common import median, timed, train_step
from kdtune.models import create_model
from kdtune.trainables.config import DistillConfig
from kdtune.trainables.optim import create_optimizer

# (label, model name, kwargs, batch shape): the digits default's student, a CIFAR student, and
# the 96 px MLP of bench_image_store (one 27,648 x 128 weight: the update is memory traffic).
MODELS = [
    ("mlp 2x64, digits 8x8", "mlp", {"depth": 2, "width": 64}, (128, 1, 8, 8)),
    ("cifar_resnet 20x16, 32 px", "cifar_resnet", {"depth": 20, "width": 16}, (128, 3, 32, 32)),
    ("mlp 1x128, 96 px", "mlp", {"depth": 1, "width": 128}, (128, 3, 96, 96)),
]
# kdtune's configs for the two optimisers compared (the presets' usual settings).
CONFIGS = {"sgd": DistillConfig(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4),
           "adamw": DistillConfig(optimizer="adamw", lr=1e-3, weight_decay=0.01)}


def _optimizer(model, name: str, kind: str) -> torch.optim.Optimizer:
    """kdtune's optimiser (`kind` "kdtune") or the same one with torch's default implementation."""
    cfg = CONFIGS[name]
    if kind == "kdtune":
        return create_optimizer(cfg, model)
    if name == "sgd":  # torch's default implementation: foreach on CPU
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _model(spec):
    _, name, kwargs, shape = spec
    torch.manual_seed(0)
    return create_model(name, 10, shape[1:], **kwargs)


def _median_s(fn, n: int, warmup: int) -> float:
    """Median seconds of `n` calls of `fn` after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    return median([timed(fn)[0] for _ in range(n)])


def update_us(spec, name: str, kind: str, n: int = 100) -> float:
    model = _model(spec)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    return 1e6 * _median_s(_optimizer(model, name, kind).step, n, warmup=10)


def step_ms(spec, name: str, kind: str, n: int = 20) -> float:
    model = _model(spec)
    opt = _optimizer(model, name, kind)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(*spec[3], generator=g), torch.randint(0, 10, (spec[3][0],), generator=g)
    return 1e3 * _median_s(lambda: train_step(model, opt, x, y), n, warmup=3)


def max_weight_diff(spec, name: str, steps: int = 1) -> float:
    """Largest |w_default - w_kdtune| after `steps` steps on the same batches from the same start."""
    models = [_model(spec), _model(spec)]
    opts = [_optimizer(models[0], name, "default"), _optimizer(models[1], name, "kdtune")]
    g = torch.Generator().manual_seed(2)
    batch = (min(spec[3][0], 32), *spec[3][1:])
    for _ in range(steps):
        x, y = torch.randn(*batch, generator=g), torch.randint(0, 10, (batch[0],), generator=g)
        for model, opt in zip(models, opts):
            train_step(model, opt, x, y)
    return max((a - b).abs().max().item() for a, b in zip(*(m.parameters() for m in models)))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="interleaved (default, kdtune) pairs per figure")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    args = p.parse_args(argv)
    from benchmarks.common import interleave, machine_line, print_table

    torch.set_num_threads(args.threads)
    print(machine_line(), f"torch threads {args.threads}", flush=True)
    rows = []
    for spec in MODELS:
        for name in CONFIGS:
            print(f"{spec[0]}, {name}", flush=True)
            assert create_optimizer(CONFIGS[name], _model(spec)).param_groups[0]["fused"] is True  # kdtune: fused
            upd = interleave({"update default us": lambda r: update_us(spec, name, "default"),
                              "update kdtune us": lambda r: update_us(spec, name, "kdtune")}, args.repeats)
            stp = interleave({"step default ms": lambda r: step_ms(spec, name, "default"),
                              "step kdtune ms": lambda r: step_ms(spec, name, "kdtune")}, args.repeats)
            u0, u1 = median(upd["update default us"]), median(upd["update kdtune us"])
            s0, s1 = median(stp["step default ms"]), median(stp["step kdtune ms"])
            # Paired ratios (each default run over the kdtune run right after it), then their median.
            ur = median([a / b for a, b in zip(upd["update default us"], upd["update kdtune us"])])
            sr = median([a / b for a, b in zip(stp["step default ms"], stp["step kdtune ms"])])
            rows.append((spec[0], name, f"{u0:,.0f}", f"{u1:,.0f}", f"{ur:.2f}x", f"{s0:.2f}", f"{s1:.2f}",
                         f"{sr:.2f}x", f"{max_weight_diff(spec, name):.1e}"))
    print()
    print_table(["model, batch 128", "optimiser", "update default us", "update kdtune (fused) us",
                 "update speed-up", "step default ms", "step kdtune ms", "step speed-up",
                 "max |dw| after 1 step"], rows)


if __name__ == "__main__":
    main()
