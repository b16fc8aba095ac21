"""Writing what a script found: Markdown tables, text to stdout and a file, Agg figures.

Every script prints its report and writes the same text beside its CSVs and PNGs, so the
terminal and `<experiment>/analysis/` always agree.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in tests

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

Formatter = Callable[[Any], str]


def fmt_pct(x: Any) -> str:
    """A fraction in [0, 1] as a percentage (val_acc 0.9731 -> 97.31%)."""
    return "" if _missing(x) else f"{100 * float(x):.2f}%"


def fmt_points(x: Any) -> str:
    """An already-percent value (reduction 87.5 -> 87.5%)."""
    return "" if _missing(x) else f"{float(x):.1f}%"


def fmt_int(x: Any) -> str:
    return "" if _missing(x) else f"{int(round(float(x))):,}"


def fmt_float(x: Any) -> str:
    return "" if _missing(x) else f"{float(x):.4g}"


def fmt_bool(x: Any) -> str:
    return "" if _missing(x) else ("yes" if bool(x) else "no")


def _missing(x: Any) -> bool:
    if x is None or x is pd.NA:
        return True
    try:
        return isinstance(x, float) and math.isnan(x)
    except TypeError:
        return False


def markdown_table(df: pd.DataFrame, formats: Mapping[str, Formatter] | None = None,
                   headers: Mapping[str, str] | None = None) -> str:
    """A GitHub Markdown table of `df` (no tabulate dependency); numbers right-aligned."""
    formats, headers = formats or {}, headers or {}
    cols = list(df.columns)
    cells = [[formats.get(c, _default)(v) for c, v in zip(cols, row)] for row in df.itertuples(index=False)]
    names = [headers.get(c, c) for c in cols]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in cols]
    lines = ["| " + " | ".join(names) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines)


def _default(x: Any) -> str:
    if _missing(x):
        return ""
    if isinstance(x, bool):
        return fmt_bool(x)
    if isinstance(x, float):
        return fmt_float(x)
    return str(x)


def write_text(path: Path, text: str) -> Path:
    """Print `text` and write it to `path` (runs of blank lines squeezed to one)."""
    text = re.sub(r"\n{3,}", "\n\n", text)
    print(text)
    path.write_text(text if text.endswith("\n") else text + "\n")
    return path


def notes_block(notes: list[str]) -> str:
    """Skipped stages and other caveats, as Markdown quotes ("" when there are none)."""
    return "".join(f"> note: {n}\n" for n in notes)


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Save at a resolution that reads well on screen and in a report; free the figure."""
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}")
    return path
