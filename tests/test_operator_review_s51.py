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


# ---------------------------------------------------------------------- 3. k, PARAM options, defaults
def test_a_retriever_without_a_k_parameter_declares_no_k_option(scratch):
    import numpy as np

    from ragkit import Corpus, Operator, Params, Ranking
    from ragkit.errors import ParamError
    from ragkit.registry import register

    class _AllParams(Params):
        pass

    @register
    class S51AllDocs(Operator):
        """Every document, score 0."""
        name = "s51_all_docs"
        kind = "retriever"
        Params = _AllParams

        def _fit(self, corpus, train, upstream):
            self.n_ = len(corpus)

        def _call(self, state):
            out = state.copy()
            out.rankings = [Ranking(np.arange(self.n_), np.zeros(self.n_)) for _ in state.queries]
            return out

    assert "k" not in S51AllDocs.declared_options() and "filter" in S51AllDocs.declared_options()
    op = S51AllDocs().fit(Corpus.from_texts(["a b", "b c", "c d"]))
    assert len(op.search(["a"], k=1).rankings[0]) == 1  # (the call's k still cuts)
    with pytest.raises(ParamError, match=r"s51_all_docs\.k: unknown option"):
        op.search(["a"], s51_all_docs={"k": 1})


def test_a_param_run_option_with_no_field_of_that_name_is_refused_at_register(scratch):
    from ragkit import Operator, Params
    from ragkit.errors import ParamError
    from ragkit.options import PARAM
    from ragkit.registry import register

    class _WParams(Params):
        weight: float = 0.0

    with pytest.raises(ParamError, match=r"S51Boost \('s51_boost'\) declares the run-time option 'alpha' as PARAM.*"
                                         r"_WParams has no field 'alpha' \(fields: weight\)"):
        @register
        class S51Boost(Operator):
            name = "s51_boost"
            kind = "reranker"
            Params = _WParams
            stateless = True
            reads_rankings = True
            run_options = {"alpha": PARAM}


def test_a_params_model_whose_default_fails_its_own_bounds_is_refused_at_register(scratch):
    from pydantic import Field

    from ragkit import Operator, Params
    from ragkit.errors import ParamError
    from ragkit.registry import get, register

    class _BadDefault(Params):
        k: int = Field(default=0, ge=1)

    with pytest.raises(ParamError, match=r"S51Bad \('s51_bad'\): the defaults of .*_BadDefault fail its own checks "
                                         r"\(k: .*greater than or equal to 1 \(default 0\)\)"):
        @register
        class S51Bad(Operator):
            name = "s51_bad"
            kind = "retriever"
            Params = _BadDefault
    get("score_reached")  # (a model check that asks for a value, threshold unless learn=true, is no default's failure)


# ---------------------------------------------------------------------- 5. a stateless retriever
def test_a_stateless_retriever_is_refused_at_register(scratch):
    from ragkit import Operator, Params
    from ragkit.errors import ParamError
    from ragkit.registry import register

    class _NoParams(Params):
        pass

    with pytest.raises(ParamError, match=r"S51Stateless \('s51_stateless'\) is a retriever with stateless = True.*"
                                         r"leave stateless False"):
        @register
        class S51Stateless(Operator):
            name = "s51_stateless"
            kind = "retriever"
            Params = _NoParams
            stateless = True


# ---------------------------------------------------------------------- 7. reads_rankings from the kind
def test_reads_rankings_defaults_from_the_kind_and_an_explicit_setting_is_kept(scratch):
    from ragkit import Operator, Params, Pipeline
    from ragkit.registry import register

    class _NoParams(Params):
        pass

    def make(name, kind, **attrs):
        return register(type(f"S51_{name}", (Operator,), {"name": name, "kind": kind, "Params": _NoParams,
                                                          "stateless": True, "__module__": __name__,
                                                          "_call": lambda self, state: state.copy(), **attrs}))

    unset = make("s51_unset_filter", "filter")
    assert unset.reads_rankings is True
    assert make("s51_unset_reranker", "reranker").reads_rankings is True
    assert make("s51_blind_filter", "filter", reads_rankings=False).reads_rankings is False
    assert make("s51_fuser", "fuser").reads_rankings is False
    from ragkit import Corpus
    from ragkit.errors import ConfigError
    from ragkit.retrievers import BM25

    with pytest.raises(ConfigError, match=r"s51_unset_filter \(filter\) works on the rankings of the steps before"):
        Pipeline([unset(), BM25()]).fit(Corpus.from_texts(["a b", "b c"]))  # (refused before any work)


# ---------------------------------------------------------------------- 6. op.params = ...
def test_assigning_op_params_validates_it_into_the_model():
    from ragkit.errors import ParamError
    from ragkit.retrievers import BM25

    op = BM25(k=5)
    op.params = op.params.updated(k=7)
    assert op.params.k == 7
    op.params = {"k": 3}  # (a mapping is validated into the model)
    assert isinstance(op.params, BM25.Params) and op.params.k == 3
    with pytest.raises(ParamError, match=r"bm25\.k"):
        op.params = {"k": "ten"}
    with pytest.raises(ParamError, match=r"bm25.*kk"):
        op.params = {"kk": 3}
    assert op.params.k == 3  # (a refused assignment changes nothing)


# ---------------------------------------------------------------------- 8. names read by the pipeline's own YAML loader
def test_an_operator_name_is_checked_with_the_pipeline_yaml_loaders_number_rules(scratch):
    from ragkit import Pipeline
    from ragkit.errors import ParamError
    from ragkit.registry import register

    # the pipeline loader reads an exponent without a dot as a float (YAML 1.2): "- 1e3: {}" is 1000.0, no name;
    # names start with a letter (the documented snake_case rule, session 56), so no number-like name is taken
    for name in ("1e3", "010"):
        with pytest.raises(ParamError, match=rf"needs a lowercase snake_case 'name' .*got '{name}'"):
            register(_filter_class(name))
    cls = register(_filter_class("s51_e3"))  # (a name a pipeline YAML finds)
    pipe = Pipeline.from_yaml("- bm25: {}\n- s51_e3: {}")
    assert type(pipe.steps[1]) is cls


def test_a_plugin_file_named_as_an_installed_module_not_imported_yet_is_refused(tmp_path, monkeypatch):
    import importlib.util

    from ragkit._plugins import _import_module

    site = tmp_path / "site"  # an installed package, found on sys.path and never imported
    (site / "s51_installed_pkg").mkdir(parents=True)
    (site / "s51_installed_pkg" / "__init__.py").write_text("def evaluate():\n    return 1\n")
    monkeypatch.syspath_prepend(str(site))
    assert importlib.util.find_spec("s51_installed_pkg") is not None and "s51_installed_pkg" not in sys.modules
    (tmp_path / "s51_installed_pkg.py").write_text("X = 1\n")
    with pytest.raises(RagkitError, match=r"--import: .*s51_installed_pkg\.py would be imported as the module "
                                          r"'s51_installed_pkg', but a module named 's51_installed_pkg' is "
                                          r"installed, at .*site.*__init__\.py.*rename the file "
                                          r"\(such as my_s51_installed_pkg\.py\)"):
        _import_module(str(tmp_path / "s51_installed_pkg.py"), "--import")
    assert "s51_installed_pkg" not in sys.modules  # (neither replaced nor imported)
    for name in ("pytrec_eval", "torch"):  # the installed ones, where this environment has them unimported
        if name not in sys.modules and importlib.util.find_spec(name) is not None:
            (tmp_path / f"{name}.py").write_text("X = 1\n")
            with pytest.raises(RagkitError, match=rf"a module named '{name}' is installed"):
                _import_module(str(tmp_path / f"{name}.py"), "--import")
            assert name not in sys.modules

    own = tmp_path / "own"  # the file itself on sys.path (a plugin in the current folder) still imports
    own.mkdir()
    (own / "s51_own_ops.py").write_text("X = 2\n")
    monkeypatch.syspath_prepend(str(own))
    try:
        _import_module(str(own / "s51_own_ops.py"), "--import")
        assert sys.modules["s51_own_ops"].X == 2
    finally:
        sys.modules.pop("s51_own_ops", None)
