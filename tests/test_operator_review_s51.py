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


# ---------------------------------------------------------------------- 2. names search() or YAML reads otherwise
def _filter_class(name: str) -> type:
    from ragkit import Operator, Params

    class _NoParams(Params):
        pass

    return type(f"S51_{name}", (Operator,), {"name": name, "kind": "filter", "Params": _NoParams, "stateless": True,
                                             "reads_rankings": True, "__module__": __name__,
                                             "_call": lambda self, state: state.copy()})


@pytest.mark.parametrize("name", ["k", "filter", "trace", "qrels", "queries", "relevance_level",
                                  "ignore_identical_ids"])
def test_an_operator_named_as_a_keyword_of_search_is_refused(scratch, name):
    from ragkit.errors import ParamError
    from ragkit.registry import call_keywords, register

    assert name in call_keywords()
    with pytest.raises(ParamError, match=rf"cannot be named '{name}': '{name}' is a keyword of search\(\) itself.*"
                                         rf"name = \"my_{name}\""):
        register(_filter_class(name))


@pytest.mark.parametrize("name", ["on", "null", "off", "yes"])
def test_an_operator_name_yaml_reads_as_no_string_is_refused(scratch, name):
    from ragkit.errors import ParamError
    from ragkit.registry import register

    with pytest.raises(ParamError, match=rf"cannot be named '{name}': YAML reads {name} as (bool|NoneType)"):
        register(_filter_class(name))


def test_no_builtin_operator_is_named_as_a_keyword_of_search_or_a_yaml_value():
    import yaml

    from ragkit import registry

    for name in registry.names():
        assert name not in registry.call_keywords() and yaml.safe_load(name) == name, name
