"""``ragkit --import MODULE`` (and ``$RAGKIT_IMPORT``): importing a module by name or from a ``.py`` file so
the operators it registers are known, with an error that says what went wrong (the code lives in
:mod:`ragkit._plugins`, which Ray workers import without the command line)."""

from __future__ import annotations

from ragkit._plugins import _import_module, _where

__all__ = ["_import_module", "_where"]
