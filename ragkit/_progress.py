"""Quiet progress bars: what ragkit switches off while a library it calls would draw over its own output."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["quiet_progress"]


@contextmanager
def quiet_progress(*tqdm_modules: str) -> Iterator[None]:
    """No progress bars while the block runs: transformers' (its logging switch) and the plain ``tqdm`` that each
    module named in ``tqdm_modules`` draws with (replaced by a disabled one; a module that cannot be imported is
    skipped); all restored afterwards."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    patched: list[tuple[Any, Any]] = []
    for name in tqdm_modules:
        try:
            module: Any = importlib.import_module(name)
        except ImportError:  # (a version without it draws no such bar either)
            continue
        bar = getattr(module, "tqdm", None)
        if bar is not None:
            module.tqdm = functools.partial(bar, disable=True)
            patched.append((module, bar))
    try:
        yield
    finally:
        for module, bar in patched:
            module.tqdm = bar
        if was:
            hf_logging.enable_progress_bar()
