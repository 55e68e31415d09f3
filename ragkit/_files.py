"""Atomic file writes: a temporary sibling renamed into place.

Every file ragkit saves (JSON, ``.npy`` arrays, run files, caches, index files) goes through
:func:`atomic_file`, so an interrupted write never leaves a truncated file where a good one
was, and two writers never share a temporary name.
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_file"]


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a unique temporary path beside ``path`` (same suffix, so ``np.save`` and
    ``safetensors`` keep the name); when the block ends it is renamed onto ``path``
    (``os.replace``), and deleted if the block raises.

    Examples
    --------
    >>> import json, tempfile
    >>> target = Path(tempfile.mkdtemp()) / "x.json"
    >>> with atomic_file(target) as tmp:
    ...     _ = tmp.write_text(json.dumps({"a": 1}))
    >>> json.loads(target.read_text())
    {'a': 1}
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
