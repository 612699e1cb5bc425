"""Path checks that keep every file a label table names inside the data root."""

from __future__ import annotations

from pathlib import Path


def resolve_inside(root: Path, relative: str, *, source: str) -> Path:
    """Resolve ``relative`` against ``root`` and reject paths that leave it.

    ``source`` names where the path came from (``labels.csv, line 7``) for the error.
    Symlinks are followed, so a link that points outside the root is rejected too.
    """
    if not relative or not str(relative).strip():
        raise ValueError(f"{source}: empty file path")
    candidate = Path(relative)
    if candidate.is_absolute():
        raise ValueError(
            f"{source}: file path {relative!r} is absolute; label files must use paths "
            f"relative to the data root {root}"
        )
    try:
        resolved = (root / candidate).resolve(strict=False)
    except RuntimeError as error:  # symlink loop on Python 3.11
        raise ValueError(f"{source}: file path {relative!r} is a symlink loop ({error})") from None
    if not resolved.is_relative_to(root):
        raise ValueError(
            f"{source}: file path {relative!r} resolves to {resolved}, outside the data root "
            f"{root}; fix the row or move the file under the root"
        )
    return resolved
