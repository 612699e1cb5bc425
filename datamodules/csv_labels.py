"""Reading label CSVs with errors that name the file, the row and the fix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd


def read_label_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """Read a label CSV as strings and check that ``required`` columns exist.

    The file must be UTF-8; a byte-order mark, as spreadsheet programs write, is accepted.
    The returned frame has a ``_line`` column with the 1-based line number of each row in
    the file (the header is line 1), so later errors can point at the row. Cells are
    read as ``str`` and an empty cell stays ``""``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"label file {path} is empty; expected a header row with {list(required)}")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"label file {path} is not UTF-8 ({error.reason} at byte {error.start}); "
            "re-save it as UTF-8, e.g. `iconv -f latin1 -t utf-8`"
        ) from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"label file {path} has no header row; expected columns {list(required)}") from None
    except pd.errors.ParserError as error:
        raise ValueError(f"label file {path} is not a valid CSV: {error}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"label file {path} lacks required column(s) {missing}; found columns "
            f"{list(frame.columns)}"
        )
    if frame.empty:
        raise ValueError(f"label file {path} has a header but no rows")
    frame["_line"] = range(2, len(frame) + 2)
    return frame


def check_labels(
    frame: pd.DataFrame,
    column: str,
    allowed: list[str] | tuple[str, ...],
    path: Path,
    fix: str = "Fix the label file or choose a group scheme that knows this label.",
) -> None:
    """Raise if ``column`` contains a value outside ``allowed``, naming the first bad row."""
    bad = ~frame[column].isin(allowed)
    if bad.any():
        row = frame.loc[bad].iloc[0]
        raise ValueError(
            f"{path}, line {row['_line']}: unknown {column} value {row[column]!r} "
            f"({int(bad.sum())} rows affected); allowed values: {list(allowed)}. {fix}"
        )


def check_duplicates(frame: pd.DataFrame, column: str, path: Path) -> None:
    """Raise if a value of ``column`` (e.g. the file name) appears in more than one row."""
    duplicated = frame[column].duplicated(keep=False)
    if duplicated.any():
        value = frame.loc[duplicated, column].iloc[0]
        lines = frame.loc[frame[column] == value, "_line"].tolist()
        raise ValueError(
            f"{path}: {column} {value!r} is listed on lines {lines} "
            f"({int(duplicated.sum())} rows share a {column} with another row); "
            "remove the duplicate rows"
        )


def check_not_empty(frame: pd.DataFrame, column: str, path: Path) -> None:
    """Raise if ``column`` has an empty cell, naming the first such line."""
    empty = frame[column].str.strip() == ""
    if empty.any():
        line = frame.loc[empty, "_line"].iloc[0]
        raise ValueError(
            f"{path}, line {line}: empty {column} ({int(empty.sum())} rows affected); "
            f"every row needs a {column}"
        )


def resolve_label_file(value: str | Path, root: Path | list[Path], key: str) -> Path:
    """Return the label file that config key ``key`` names.

    An absolute path is used as given. A relative path is looked up under ``root`` (each
    folder in turn when it is a list) first, then in the working directory.
    """
    path = Path(value).expanduser()
    folders = root if isinstance(root, list) else [root]
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = [folder / path for folder in folders] + [Path.cwd() / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"{key}={value} not found (looked at {tried}); set {key} to the label file")


def order_groups(frame: pd.DataFrame, column: str, path: Path, group_names: Sequence[str] | None) -> list[str]:
    """Return the report order of the groups in ``frame[column]``.

    Without ``group_names`` the order is sorted. With it, a group label outside the list is
    an error naming the first row that has it.
    """
    found = sorted(frame[column].unique())
    if not group_names:
        return found
    names = [str(g) for g in group_names]
    unknown = ~frame[column].isin(names)
    if unknown.any():
        row = frame.loc[unknown].iloc[0]
        raise ValueError(f"{path}, line {row['_line']}: group {row[column]!r} is not in data.group_names {names}")
    return names
