"""Operators of your own: what ``register`` refuses, and how the command line and YAML find them
(``ragkit --import MODULE``, ``$RAGKIT_IMPORT``, a ``ragkit.operators`` entry point)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from ragkit import ConfigError, Operator, Params, Pipeline, registry
from ragkit.errors import InputTypeError, ParamError
from ragkit.registry import register

#: A module of one fitted retriever (it saves and loads what it learns); ``{name}`` is its registry name.
PROBE = '''
import json
import numpy as np
from ragkit import Operator, Params, Ranking
from ragkit.registry import register


class ProbeParams(Params):
    k: int = 3


@register
class Probe(Operator):
    """Ranks the documents in corpus order."""
    name = "{name}"
    kind = "retriever"
    Params = ProbeParams

    def _fit(self, corpus, train, upstream):
        self.n_ = len(corpus)

    def _call(self, state):
        out = state.copy()
        top = np.arange(min(self.k_for(state), self.n_))
        out.rankings = [Ranking(top, -top.astype(np.float32)) for _ in range(len(state))]
        return out

    def _save(self, folder):
        (folder / "n.json").write_text(json.dumps(self.n_))

    def _load(self, folder, mmap=False):
        self.n_ = json.loads((folder / "n.json").read_text())
'''


@pytest.fixture
def scratch_registry(monkeypatch):
    """The registry and ``sys.path`` as they were, after the test, and its modules (``ragkit_probe*``) forgotten."""
    registry.load_all()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    for name in [m for m in sys.modules if m.startswith("ragkit_probe")]:  # (every test module is named so)
        del sys.modules[name]


def _module(folder: Path, module: str, name: str) -> Path:
    path = folder / f"{module}.py"
    path.write_text(PROBE.replace("{name}", name), encoding="utf-8")
    return path


# ---------------------------------------------------------------------- register refuses a faulty class
def test_a_builtin_name_is_taken_before_its_family_is_imported():
    """Old code: a class named ``generate`` (its family not imported yet) was accepted, and then every YAML
    load failed on ragkit's own import (``operator name 'generate' is taken by __main__.Answer``)."""
    script = textwrap.dedent('''
        from ragkit import Operator, Params, Pipeline
        from ragkit.registry import register

        class AnswerParams(Params):
            pass

        class Answer(Operator):
            name = "generate"; kind = "generator"; Params = AnswerParams; stateless = True

        try:
            register(Answer)
        except ValueError as e:
            print("refused:", e)
        print(Pipeline.from_yaml("pipeline:\\n  - bm25: {k: 5}\\n"))
    ''')
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert ("refused: operator name 'generate' is taken by ragkit.generators.operator.Generate (a built-in "
            "operator); give operator class __main__.Answer another name") in res.stdout, res.stdout
    assert "BM25(k=5)" in res.stdout


class _P(Params):
    k: int = 3


@pytest.mark.parametrize("attrs, said", [
    ({"name": "probe_kind", "kind": "retreiver", "Params": _P},
     r"\('probe_kind'\) has kind 'retreiver'; expected one of retriever, reranker, filter, fuser, router, judge, "
     r"rewriter, generator; did you mean 'retriever'\?"),
    ({"name": "probe_kind", "Params": _P}, r"\('probe_kind'\) sets no 'kind'; expected one of retriever, "),
    ({"kind": "retriever", "Params": _P}, r"needs a lowercase snake_case 'name' .*got ''"),
    ({"name": "probe_params", "kind": "reranker"},
     r"\('probe_params'\) sets no 'Params': set Params to its parameter model, a subclass of ragkit.Params \(an "
     r"empty one, 'class NoParamsParams\(Params\): pass', when it has no parameters\)"),
    ({"name": "probe_params", "kind": "reranker", "Params": dict},
     r"has Params = <class 'dict'>, not a subclass of ragkit.Params"),
])
def test_register_refuses_a_class_without_a_known_kind_a_name_or_params(scratch_registry, attrs, said):
    """Old code: all accepted; a misspelt kind gave "the pipeline has no retriever" later, a missing Params
    "valid parameters of ... are: " with nothing listed."""
    cls = type("NoParams", (Operator,), dict(attrs))
    with pytest.raises(ParamError, match=said):  # a RagkitError, and a ValueError
        register(cls)
    assert attrs.get("name", "") not in registry._REGISTRY


def test_register_refuses_what_is_no_operator():
    with pytest.raises(InputTypeError, match="'dict' is not a subclass of ragkit.Operator"):  # and a TypeError
        register(dict)


# ---------------------------------------------------------------------- the ragkit.operators entry points
def test_entry_point_operators_are_found_by_yaml_and_a_broken_one_is_named(scratch_registry, tmp_path, monkeypatch):
    """Old code: an installed package's operators were unknown until something imported it."""
    from ragkit import Pipeline

    _module(tmp_path, "ragkit_probe_ep_ops", "probe_ep")
    (tmp_path / "ragkit_probe_ep_broken.py").write_text("raise RuntimeError('no licence key')\n")
    sys.path.insert(0, str(tmp_path))
    eps = [metadata.EntryPoint(name="broken", value="ragkit_probe_ep_broken", group="ragkit.operators"),
           metadata.EntryPoint(name="probe", value="ragkit_probe_ep_ops", group="ragkit.operators")]
    asked = []

    def entry_points(**kw):
        asked.append(kw)
        return [e for e in eps if e.group == kw.get("group")]

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    with pytest.warns(RuntimeWarning, match=r"the 'ragkit.operators' entry point broken = 'ragkit_probe_ep_broken' "
                                            r"failed to import, its operators are not registered: RuntimeError: "
                                            r"no licence key"):
        pipe = Pipeline.from_yaml("pipeline:\n  - probe_ep: {k: 2}\n")
    assert type(pipe.steps[0]).__name__ == "Probe" and pipe.steps[0].params.k == 2
    assert asked == [{"group": "ragkit.operators"}]
    assert "probe_ep" in registry.names() and len(asked) == 1  # imported once


# ---------------------------------------------------------------------- ragkit --import, RAGKIT_IMPORT
def _cli(*args, env=None):
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200", **(env or {})})


def test_cli_imports_a_module_named_by_import_or_ragkit_import(scratch_registry, tmp_path, monkeypatch):
    """Old code: ``ragkit validate p.yaml`` could not reach an operator of one's own (no --import), and
    the error said nothing of how."""
    monkeypatch.chdir(tmp_path)
    _module(tmp_path, "ragkit_probe_cli_ops", "probe_cli")
    (tmp_path / "p.yaml").write_text("pipeline:\n  - probe_cli: {k: 2}\n")
    monkeypatch.delenv("RAGKIT_IMPORT", raising=False)
    res = _cli("validate", "p.yaml")
    assert res.exit_code == 2 and "unknown operator 'probe_cli'" in res.output, res.output
    assert "`ragkit --import mymodule ...`" in res.output and "'ragkit.operators' entry point" in res.output

    res = _cli("--import", "ragkit_probe_cli_ops", "validate", "p.yaml")  # found in the current folder
    assert res.exit_code == 0 and "ok p.yaml: 1 operator" in res.output, res.output


def test_cli_imports_a_file_by_its_path_and_from_ragkit_import(scratch_registry, tmp_path, monkeypatch):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    _module(folder, "ragkit_probe_path_ops", "probe_path")
    _module(folder, "ragkit_probe_env_ops", "probe_env")
    monkeypatch.syspath_prepend(str(folder))  # (a module name from RAGKIT_IMPORT is looked up on sys.path)
    (tmp_path / "p.yaml").write_text("pipeline:\n  - parallel:\n"
                                     "      branches: [{probe_path: {k: 2}}, {probe_env: {}}]\n"
                                     "      fuse: {rrf: {}}\n")
    res = _cli("--import", folder / "ragkit_probe_path_ops.py", "validate", tmp_path / "p.yaml",
               env={"RAGKIT_IMPORT": " ragkit_probe_env_ops, "})
    assert res.exit_code == 0 and "ok" in res.output and "3 operators" in res.output, res.output


def test_cli_finds_the_operator_of_a_saved_folder_once_imported(scratch_registry, tmp_path, monkeypatch):
    from ragkit import Corpus, Pipeline

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAGKIT_IMPORT", raising=False)
    _module(tmp_path, "ragkit_probe_saved_ops", "probe_saved")
    sys.path.insert(0, str(tmp_path))
    import ragkit_probe_saved_ops  # noqa: F401

    corpus = Corpus(ids=["d0", "d1", "d2"], texts=["a b", "c d", "e f"])
    Pipeline.from_yaml("pipeline:\n  - probe_saved: {k: 2}\n").fit(corpus).save(tmp_path / "saved")
    del registry._REGISTRY["probe_saved"], sys.modules["ragkit_probe_saved_ops"]  # as in a new process
    res = _cli("search", "--index", "saved", "some words", "-o", "-")
    assert res.exit_code == 2 and "unknown operator 'probe_saved'" in res.output and "--import" in res.output
    res = _cli("--import", "ragkit_probe_saved_ops", "search", "--index", "saved", "some words", "-o", "-")
    assert res.exit_code == 0, res.output
    found = json.loads(res.stdout)["results"][0]["documents"]
    assert [hit["doc_id"] for hit in found] == ["d0", "d1", "d2"]


@pytest.mark.parametrize("spec, said", [
    ("ragkit_probe_nosuch", "--import ragkit_probe_nosuch: no module named 'ragkit_probe_nosuch' (searched the "
                            "current folder and sys.path; a module elsewhere is imported by its path, such as "
                            "./ragkit_probe_nosuch.py)"),
    ("./nosuch.py", "--import ./nosuch.py: no such file (expected a module name such as mymodule, or the path of "
                    "a .py file)"),
    ("my-ops", "--import my-ops: not a module name"),
    ("ragkit_probe_raises", "--import ragkit_probe_raises: importing it failed: "),
])
def test_cli_import_errors_say_what_was_given(scratch_registry, tmp_path, monkeypatch, spec, said):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAGKIT_IMPORT", raising=False)
    (tmp_path / "ragkit_probe_raises.py").write_text("x = 1\nraise KeyError('oops')\n")
    res = _cli("--import", spec, "validate", "bm25")
    assert res.exit_code == 2 and said in res.output, res.output
    if spec == "ragkit_probe_raises":
        assert "ragkit_probe_raises.py:2: KeyError: 'oops'" in res.output


def test_several_unknown_operators_give_the_plugin_advice_once():
    """Each unknown name keeps its own line (and suggestion); the advice and the registered names, a paragraph,
    come once, at the end, not once per name."""
    with pytest.raises(ConfigError) as e:
        Pipeline.from_yaml("pipeline:\n  - tfidf: {k: 3}\n  - splayd: {}\n  - bm_25: {}\n")
    text = str(e.value)
    assert text.count(registry.PLUGIN_HINT) == 1 and text.count("Registered operators: ") == 1, text
    lines = text.splitlines()
    assert "unknown operator 'tfidf'" in lines[-3] and "unknown operator 'splayd'" in lines[-2], text
    assert "did you mean 'bm25'?" in lines[-1] and registry.PLUGIN_HINT in lines[-1], text


def test_an_unrelated_operator_name_gets_no_suggestion():
    """A plugin's own name, not imported, is not 'close' to a built-in it merely shares letters with
    (difflib at 0.5 offered 'rule_router' for 'length_prior'); real typos still get one."""
    with pytest.raises(ParamError) as e:
        registry.get("length_prior")
    assert "did you mean" not in str(e.value), str(e.value)
    with pytest.raises(ParamError, match="did you mean 'muvera'"):
        registry.get("muvra")


def test_a_pipeline_of_an_unregistered_class_is_refused_when_written_not_when_loaded(tmp_path):
    """Forgetting @register: to_yaml wrote ``- unreg: {}`` and Pipeline.save succeeded, then Pipeline.load said
    'unknown operator ... once its module is imported' although it was.  Now writing the YAML says to register
    the class; a subclass that kept its parent's name (it would load as the parent) likewise."""
    from ragkit import Corpus
    from ragkit.retrievers import BM25

    class Unreg(registry.get("top_k")):  # type: ignore[misc,valid-type]
        name = "tp_unreg"

    class StillBM25(BM25):  # (name 'bm25': bm25's)
        pass

    corpus = Corpus.from_texts(["red apples", "green pears"])
    for op, said in ((Unreg(), r"no operator is registered as 'tp_unreg'.*@ragkit\.registry\.register$"),
                     (StillBM25(), r"the name 'bm25' is ragkit\.retrievers\.bm25\.BM25's.*name of its own")):
        pipe = Pipeline([BM25(k=2), op]) if op.kind != "retriever" else Pipeline([op])
        with pytest.raises(ParamError, match=said):
            pipe.to_yaml()
        with pytest.raises(ParamError, match=said):
            pipe.fit(corpus).save(tmp_path / op.name)
        assert not (tmp_path / op.name).exists()
    assert "decorated with @ragkit.registry.register" in registry.PLUGIN_HINT
