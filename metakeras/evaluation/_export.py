"""CSV and Markdown writers of the evaluation tables, atomic on disk."""

import numpy as np
import pandas as pd

from metakeras._io import atomic_path


def _write_csv(frame, path):
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def _write_markdown(frame, path, floatfmt):
    text = _markdown_table(frame, floatfmt)
    if path is not None:
        _write_text(path, text)
    return text


def _markdown_table(frame, floatfmt=".4f"):
    """Renders a DataFrame as a GitHub-flavoured Markdown table.

    Written here rather than with `DataFrame.to_markdown`, which needs the
    optional `tabulate` package.
    """
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(
            f"Expected a pandas DataFrame; received {type(frame).__name__}."
        )

    def cell(value):
        if value is None or value is pd.NA:
            return ""
        if isinstance(value, (bool, np.bool_)):
            return str(bool(value))
        if isinstance(value, (float, np.floating)):
            return "nan" if np.isnan(value) else format(float(value), floatfmt)
        if isinstance(value, tuple):
            value = " ".join(str(v) for v in value)
        return str(value).replace("|", "\\|").replace("\n", " ")

    numeric = [
        pd.api.types.is_numeric_dtype(frame[c])
        and not pd.api.types.is_bool_dtype(frame[c])
        for c in frame.columns
    ]
    lines = [
        "| " + " | ".join(cell(str(c)) for c in frame.columns) + " |",
        "|" + "|".join("---:" if n else ":---" for n in numeric) + "|",
    ]
    for values in frame.itertuples(index=False, name=None):
        lines.append("| " + " | ".join(cell(v) for v in values) + " |")
    return "\n".join(lines) + "\n"


def _write_text(path, text):
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
