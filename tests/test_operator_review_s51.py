"""What a plugin author's operator class, file and calls are refused, and where: at the import of its file, at
``@register``, at the assignment of ``op.params``, and the types a ``State`` and a ``Ranking`` are built from."""

from __future__ import annotations

import sys

import pytest

from ragkit.errors import RagkitError


# ---------------------------------------------------------------------- 1. a plugin file named as another module
def test_a_plugin_file_named_as_a_stdlib_module_is_refused_and_the_module_kept(tmp_path):
    from ragkit._plugins import _import_module

    (tmp_path / "operator.py").write_text("X = 1\n")
    before = sys.modules["operator"]
    with pytest.raises(RagkitError, match=r"--import ./operator.py: .*operator\.py would be imported as the module "
                                          r"'operator'.*standard library.*rename the file \(such as my_operator\.py\)"):
        _import_module(str(tmp_path / "operator.py"), "--import ./operator.py")
    assert sys.modules["operator"] is before
    from operator import itemgetter  # noqa: F401 - the standard library's still

    (tmp_path / "json.py").write_text("X = 1\n")  # (imported already, from another file)
    json_before = sys.modules["json"]
    with pytest.raises(RagkitError, match=r"'json' is imported already, from .*json.*rename the file"):
        _import_module(str(tmp_path / "json.py"), "--import")
    assert sys.modules["json"] is json_before


def test_a_plugin_file_imported_twice_and_a_fresh_name_still_import(tmp_path):
    from ragkit._plugins import _import_module

    (tmp_path / "s51_fresh_ops.py").write_text("X = 1\n")
    try:
        _import_module(str(tmp_path / "s51_fresh_ops.py"), "--import")
        first = sys.modules["s51_fresh_ops"]
        _import_module(str(tmp_path / "s51_fresh_ops.py"), "--import")  # (the same file: kept)
        assert sys.modules["s51_fresh_ops"] is first and first.X == 1
    finally:
        sys.modules.pop("s51_fresh_ops", None)
