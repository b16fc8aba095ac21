"""Each search stage's Optuna study, kept in SQLite inside the stage's folder.

    <experiment>/<stage>/optuna.db     study name "kdtune-<stage>"

Ray's OptunaSearch is given this storage (`OptunaSearch(storage=...)`), so every trial it
asks for and every result it tells is written to the file as it happens, and Optuna's own
tools open it: `optuna.load_study(study_name="kdtune-distill", storage="sqlite:///.../optuna.db")`,
`optuna-dashboard sqlite:///<experiment>/distill/optuna.db`, optuna.visualization.

Resume: Ray pickles the searcher with its experiment state, and the pickled study holds the
storage's URL, not a copy of the trials (RDBStorage drops its engine when pickled and
reconnects on load). `Tuner.restore` therefore reconnects to this same file and the study
continues with the trials it has. Ray only adds files to the stage folder and never removes
ones it did not write, so the database survives the restore. The path is absolute (the
experiment folder is resolved), which is what the pickled URL needs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from kdtune.search.record.stage_names import ASSISTANT, BASELINE, DISTILL, TA_DISTILL

STUDY_FILE = "optuna.db"


def study_name(stage: str) -> str:
    """Stable per stage: a resumed or warm-started search finds the study by it."""
    return f"kdtune-{stage}"


def study_path(stage_dir: Path) -> Path:
    return Path(stage_dir) / STUDY_FILE


def storage_url(stage_dir: Path) -> str:
    return f"sqlite:///{study_path(stage_dir).resolve()}"


def open_storage(stage_dir: Path) -> optuna.storages.RDBStorage:
    """The stage's RDBStorage, creating the folder and the file when they are new."""
    Path(stage_dir).mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(storage_url(stage_dir))


def load_study(stage_dir: Path, stage: str) -> optuna.Study:
    """A stage's study, read back (ValueError when the stage has none)."""
    path = study_path(stage_dir)
    if not path.is_file():
        raise ValueError(f"{path} does not exist (no Optuna study for stage {stage})")
    try:
        return optuna.load_study(study_name=study_name(stage), storage=storage_url(stage_dir))
    except KeyError:  # optuna: "Record does not exist"
        raise ValueError(f"{path} holds no study named {study_name(stage)}") from None


def study_directions(objective) -> list[optuna.study.StudyDirection]:
    """What OptunaSearch optimises (search/stages/tune_stage.py): val_acc up, and for pareto params down."""
    from kdtune.search.tune.objective import objective as as_objective

    return as_objective(objective).directions()


def stage_space(spec, name: str, teacher_checkpoint: str | None = None,
                architecture: dict[str, Any] | None = None):
    """The define-by-run space of search stage `name` (baseline, distill, assistant, ta_distill)."""
    from kdtune.search.tune import search_spaces as spaces

    distill = name != BASELINE
    constants = spec.student_constants(teacher_checkpoint, distill=distill)
    return spaces.make_space(spec.space, spec.students, constants, distill=distill, architecture=architecture,
                             methods=spec.methods, budget=None if architecture else spec.size_budget())


def search_spaces(spec) -> dict[str, Any]:
    """Every search stage this run plans, with its space (the samplers a warm start seeds)."""
    links = spec.chain_links()
    student = links[-1] if links else None
    pinned = {BASELINE: student, DISTILL: student}
    if links:
        pinned.update({ASSISTANT: links[1], TA_DISTILL: links[-1]})
    return {name: stage_space(spec, name, architecture=arch) for name, arch in pinned.items()}
