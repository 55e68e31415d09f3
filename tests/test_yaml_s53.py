"""Review s53 of pipeline YAML and saved folders: plugin operators not imported at a load, unregistered classes
saved, the YAML builder's lazy error text and hints."""

from __future__ import annotations

import pytest
from conftest import edit_json, reseal

from ragkit import Corpus, Operator, Pipeline, registry
from ragkit.errors import ArtifactError
from ragkit.retrievers import BM25, Sharded
from ragkit.retrievers.bm25 import BM25Params

DOCS = Corpus(ids=["a", "b", "c", "d"], texts=["vitamin d", "cancer cells", "heart risk", "statins"])


class _S53Params(BM25Params):
    boost: float = 1.0


class _S53BM25(BM25):
    """A plugin's operator (its module is not ragkit's)."""

    name = "s53_bm25"
    Params = _S53Params


@pytest.fixture(autouse=True)
def _plugin(scratch):
    """``s53_bm25`` registered for each test (and the registry as it was after it: other tests list the names)."""
    registry.register(_S53BM25)


@pytest.fixture
def forget(monkeypatch):
    """A function that forgets ``s53_bm25`` for the rest of the test, as a process that did not import its plugin."""
    registry.load_all()
    return lambda: monkeypatch.setattr(registry, "_REGISTRY",
                                       {k: v for k, v in registry._REGISTRY.items() if k != "s53_bm25"})


# ---------------------------------------------------------------- 1. a plugin's operator not imported at a load
def _saved(tmp_path):
    sharded = Sharded(retriever={"s53_bm25": {"k": 2, "boost": 2.0}}, n_shards=2, k=2, backend="local").fit(DOCS)
    sharded.save(tmp_path / "sh")
    Pipeline([sharded]).save(tmp_path / "nested")
    Pipeline([_S53BM25(k=2)]).fit(DOCS).save(tmp_path / "step")
    _S53BM25(k=2).fit(DOCS).save(tmp_path / "op")
    return tmp_path


def test_a_plugin_operator_not_imported_is_said_so_at_a_load_not_a_changed_folder(tmp_path, forget):
    """Old code: the nested ones ended 'the folder was changed after saving' (the checksums had passed); the
    others advised 'did you mean 'bm25'?' (a rename, which would load another operator)."""
    saved = _saved(tmp_path)
    forget()
    for name in ("sh", "nested", "step", "op"):
        with pytest.raises(ArtifactError) as e:
            Operator.load(saved / name)
        said = str(e.value)
        # (a folder's or step's own operator: the module of the class that saved it; a nested one: none recorded)
        advice = (f"saved by {__name__}._S53BM25: import {__name__} (ragkit --import {__name__}) before loading. "
                  if name in ("step", "op") else "import the plugin that registers it before loading")
        assert "unknown operator 's53_bm25'" in said and advice in said, said
        assert "changed after saving" not in said and "did you mean" not in said, said
    with pytest.raises(ArtifactError, match=r"nested/ops/00-sharded/params\.json: sharded\.retriever: unknown "):
        Operator.load(saved / "nested")
    with pytest.raises(ArtifactError, match=r"step/manifest\.json: nodes: pipeline\[0\]\.s53_bm25: unknown operator"):
        Pipeline.load(saved / "step")


def test_an_unknown_operator_of_a_folder_saved_by_another_ragkit_says_that_one_may_have_it(tmp_path, forget):
    """Only where the class that saved it is ragkit's own, or none is recorded (an older save). Old code: said
    for a plugin's class too (no ragkit version has it built in), and without its module to import."""
    from ragkit import __version__

    saved = _saved(tmp_path)
    forget()
    edit_json(saved / "op" / "params.json", lambda m: m.update(ragkit_version="9.9.0"))
    edit_json(saved / "step" / "manifest.json", lambda m: m.update(ragkit_version="9.9.0"))
    step = next((saved / "step" / "ops").iterdir()) / "params.json"
    clause = (f"(the folder was saved by a newer ragkit (ragkit 9.9.0, this is {__version__}) whose operators may "
              "include it built in: upgrade ragkit)")
    for name in ("op", "step"):
        with pytest.raises(ArtifactError) as e:
            Operator.load(saved / name, verify=False)
        said = str(e.value)
        assert (f"none is registered so in this process: saved by {__name__}._S53BM25: import {__name__} (ragkit "
                f"--import {__name__}) before loading. {registry.PLUGIN_HINT}") in said, said
        assert "built in" not in said and "9.9.0" not in said, said
    for record in ({"class": "ragkit.retrievers.gone:Gone", "registered": True}, None):  # ragkit's own; none
        for params in (saved / "op" / "params.json", step):
            edit_json(params, lambda m: [m.pop("class", None), m.pop("registered", None), m.update(record or {})])
        for name in ("op", "step"):
            with pytest.raises(ArtifactError) as e:
                Operator.load(saved / name, verify=False)
            said = str(e.value)
            advice = ("saved by ragkit.retrievers.gone.Gone: import ragkit.retrievers.gone (ragkit --import "
                      "ragkit.retrievers.gone) before loading" if record else
                      "import the plugin that registers it before loading")
            assert f"{advice} {clause}" in said, said


def test_an_unknown_operator_saved_unregistered_names_its_class_and_a_step_its_module(tmp_path, forget):
    """A class recorded as saved unregistered: its own load, no import and no other ragkit; a pipeline's unknown
    step: the module of the class its params.json records. Old code: 'import the plugin that registers it', and
    for a step no module."""
    _S53BM25(k=2).fit(DOCS).save(tmp_path / "op")
    edit_json(tmp_path / "op" / "params.json", lambda m: m.update(registered=False, ragkit_version="0.0.1"))
    Pipeline([_S53BM25(k=2)]).fit(DOCS).save(tmp_path / "step")
    forget()
    with pytest.raises(ArtifactError) as e:
        Operator.load(tmp_path / "op", verify=False)
    assert str(e.value).startswith(
        f"{tmp_path / 'op' / 'params.json'}: unknown operator 's53_bm25': the folder names an operator 's53_bm25', "
        f"and none is registered so in this process: saved by {__name__}._S53BM25, not registered: "
        f"_S53BM25.load(folder). {registry.PLUGIN_HINT}. Registered operators: "), str(e.value)
    with pytest.raises(ArtifactError) as e:
        Pipeline.load(tmp_path / "step")
    assert str(e.value).startswith(
        f"{tmp_path / 'step' / 'manifest.json'}: nodes: pipeline[0].s53_bm25: unknown operator 's53_bm25': the "
        f"folder names an operator 's53_bm25', and none is registered so in this process: saved by "
        f"{__name__}._S53BM25: import {__name__} (ragkit --import {__name__}) before loading. "), str(e.value)


def test_a_plugin_saved_in_a_process_that_imported_it_names_its_module_where_it_was_not(tmp_path):
    """A real plugin module, not imported by the loading process (a subprocess): the message names it."""
    import subprocess
    import sys

    (tmp_path / "s53_plug_ops.py").write_text(
        "from ragkit import registry\nfrom ragkit.retrievers import BM25\n\n\n@registry.register\n"
        "class Plug(BM25):\n    name = 's53_plug'\n")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import s53_plug_ops; from ragkit import Corpus, Pipeline; "
            "Pipeline([s53_plug_ops.Plug(k=1)]).fit(Corpus(ids=['a'], texts=['x y'])).save(sys.argv[1] + '/p')")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    load = "import sys; from ragkit import Pipeline; Pipeline.load(sys.argv[1] + '/p')"
    run = subprocess.run([sys.executable, "-c", load, str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 1 and (
        "pipeline[0].s53_plug: unknown operator 's53_plug': the folder names an operator 's53_plug', and none is "
        "registered so in this process: saved by s53_plug_ops.Plug: import s53_plug_ops (ragkit --import "
        "s53_plug_ops) before loading. ") in run.stderr, run.stderr


@pytest.mark.parametrize("record, where", [("__main__:Plug", "the script that saved it"),
                                           ("pkg.ops:make.<locals>.Plug", "a function")])
def test_a_registered_class_no_import_registers_is_not_told_to_be_imported(record, where):
    """d5ac179 told a folder saved by a class registered in a script (``__main__``) or inside a function to
    ``ragkit --import __main__`` / its module, which registers nothing (as _plugins refuses such classes)."""
    said = registry.saved_unknown("s53_x", "", None, record, True)
    assert f"defined in {where}: no import registers it; define it at the top level of a module and import that " \
        "module before loading" in said, said
    assert "--import" not in said.split(registry.PLUGIN_HINT)[0], said


def test_an_unknown_operator_saved_alone_says_its_class_loads_it(tmp_path):
    """Old code: 'import the plugin that registers it' only, though a class saved unregistered under a name of its
    own loads with its own load."""

    class Mine(BM25):  # not registered
        name = "s53_unregistered"

    Mine(k=2).fit(DOCS).save(tmp_path / "mine")
    with pytest.raises(ArtifactError) as e:
        Operator.load(tmp_path / "mine")
    said = str(e.value)
    assert (f"none is registered so in this process: saved by {__name__}.{Mine.__qualname__}, not registered: "
            f"Mine.load(folder). {registry.PLUGIN_HINT}. Registered operators: ") in said, said
    assert type(Mine.load(tmp_path / "mine")) is Mine


def test_an_unknown_step_name_is_said_in_the_file_it_was_read_from(tmp_path):
    """Old code: a node path edited in manifest.json (loaded with verify=False) was said to be pipeline.yaml's."""
    Pipeline([BM25(k=2)]).fit(DOCS).save(tmp_path / "p")
    edit_json(tmp_path / "p" / "manifest.json",
              lambda m: m.update(nodes={k.replace("bm25", "s53_gone"): v for k, v in m["nodes"].items()}))
    with pytest.raises(ArtifactError) as e:
        Pipeline.load(tmp_path / "p", verify=False)
    said = str(e.value)
    assert said.startswith(f"{tmp_path / 'p' / 'manifest.json'}: nodes: pipeline[0].s53_gone: unknown operator "
                           "'s53_gone'"), said
    assert "pipeline.yaml" not in said


def test_get_raises_an_unknown_operator_error(forget):
    forget()
    with pytest.raises(registry.UnknownOperatorError, match="did you mean 'bm25'") as e:
        registry.get("s53_bm25", path="x")
    assert e.value.name == "s53_bm25" and e.value.path == "x" and isinstance(e.value, ValueError)


def test_a_nested_plugin_whose_params_changed_names_it_not_a_changed_folder(tmp_path, monkeypatch):
    """Old code: 'the folder was saved by this ragkit (0.1.0), whose Sharded took these parameters then: the
    folder was changed after saving' (the folder was as saved: the plugin's Params had changed)."""
    saved = _saved(tmp_path)

    class _NewParams(BM25Params):  # the plugin's next version: 'boost' is gone
        pass

    monkeypatch.setattr(_S53BM25, "Params", _NewParams)
    for name in ("sh", "nested"):
        with pytest.raises(ArtifactError) as e:
            Operator.load(saved / name)
        said = str(e.value)
        assert "boost: unknown parameter" in said and "changed after saving" not in said, said
        assert (f"the parameters of _S53BM25 ({__name__}._S53BM25), which Sharded's parameters name, changed since "
                "the folder was saved") in said, said
        assert "load it with the version of _S53BM25 that saved it" in said


def test_a_built_in_refusing_its_saved_params_says_what_is_known(tmp_path):
    """Saved by this version number: verified, the files are as their save wrote them; unverified, they may not be
    (old code said 'the folder was changed after saving' either way)."""
    from ragkit import __version__

    BM25(k=3).fit(DOCS).save(tmp_path / "ix")
    edit_json(tmp_path / "ix" / "params.json", lambda m: m["params"].update(old=3))
    with pytest.raises(ArtifactError) as e:
        Operator.load(tmp_path / "ix", verify=False)
    said = str(e.value)
    assert said.startswith(f"{tmp_path / 'ix' / 'params.json'}: bm25.old: unknown parameter")
    assert (f"; the saved parameters fail this ragkit's checks; saved by ragkit {__version__}, this one's version "
            "number; loaded with verify=False, its files were not checked against the checksums its save wrote") \
        in said and "changed after saving" not in said
    reseal(tmp_path / "ix")
    with pytest.raises(ArtifactError) as e:
        Operator.load(tmp_path / "ix")
    said = str(e.value)
    assert said.endswith(f"saved by ragkit {__version__}, this one's version number, and its files match the "
                         "checksums its save wrote: the code that reads them may have changed without a new version "
                         "number (a development checkout): fit the operator and save it again with this one"), said


def test_a_step_disagreeing_with_pipeline_yaml_says_what_is_known(tmp_path):
    """Old code: 'the folder was changed after saving' also when both files matched the manifest's checksums."""
    from ragkit import __version__

    Pipeline([BM25(k=3)]).fit(DOCS).save(tmp_path / "p")
    yaml_file = tmp_path / "p" / "pipeline.yaml"
    yaml_file.write_text(yaml_file.read_text().replace("k: 3", "k: 4"))
    with pytest.raises(ArtifactError) as e:
        Pipeline.load(tmp_path / "p", verify=False)
    said = str(e.value)
    assert said.startswith(f"{yaml_file}: pipeline[0].bm25 is {{bm25: {{'k': 4}}}}, but "), said
    assert said.endswith(f"; saved by ragkit {__version__}, this one's version number, whose save checked that they "
                         "agreed; loaded with verify=False, the two files were not checked against manifest.json's "
                         "checksums (either may have been edited since): load it verified to tell, or fit the "
                         "pipeline and save it again"), said
    reseal(tmp_path / "p")
    with pytest.raises(ArtifactError) as e:
        Pipeline.load(tmp_path / "p")
    said = str(e.value)
    assert said.endswith(f"; saved by ragkit {__version__}, this one's version number, whose save checked that they "
                         "agreed, and the two files match manifest.json's checksums: the code that reads them may have "
                         "changed without a new version number (a development checkout): fit the pipeline and save "
                         "it again with this one"), said
    assert "changed after" not in said
    edit_json(tmp_path / "p" / "manifest.json", lambda m: m.update(ragkit_version="0.0.1"))
    reseal(tmp_path / "p")
    with pytest.raises(ArtifactError, match=r"saved by another ragkit \(ragkit 0\.0\.1, this is .*\), whose BM25 may "
                                            r"read them otherwise: load it with that version \(or fit the pipeline"):
        Pipeline.load(tmp_path / "p")


@pytest.mark.parametrize("whole", [False, True])
def test_a_built_in_losing_a_learned_attribute_at_its_load_says_what_is_known(tmp_path, monkeypatch, whole):
    """Old code: 'the folder was saved by this ragkit (...), whose BM25 restores it: the folder was changed after it
    was saved', though its files matched their checksums (here, this ragkit's BM25._load drops one)."""
    from ragkit import __version__

    (Pipeline([BM25(k=3)]).fit(DOCS) if whole else BM25(k=3).fit(DOCS)).save(tmp_path / "x")
    it = "the pipeline" if whole else "the operator"
    load = BM25._load

    def dropping(self, folder, mmap=False):
        load(self, folder, mmap=mmap)
        del self.idf_

    monkeypatch.setattr(BM25, "_load", dropping)
    for verify in (True, False):
        with pytest.raises(ArtifactError) as e:
            Operator.load(tmp_path / "x", verify=verify)
        said = str(e.value)
        assert "lacks idf_ once loaded" in said and "changed after" not in said, said
        assert said.endswith(
            f"saved by ragkit {__version__}, this one's version number, and its files match the checksums its save "
            "wrote: the code that reads them may have changed without a new version number (a development "
            f"checkout): fit {it} and save it again with this one" if verify else
            f"saved by ragkit {__version__}, this one's version number; loaded with verify=False, its files were not "
            f"checked against the checksums its save wrote (one of them may have been edited since): load it "
            f"verified to tell, or fit {it} and save it again"), said


# ---------------------------------------------------------------- 2. an unregistered class saved
def test_an_unregistered_subclass_saves_loads_with_its_own_class_and_operator_load_refuses_it(tmp_path):
    """319ad17 refused Fast.save (it had loaded back with Fast.load); before it, Operator.load brought back a plain
    BM25. Now the folder records the class and that it was not the registered one: Fast.load loads it, Operator.load
    refuses it naming Fast. A class of a name of its own, registered or not, saves and loads with its class."""
    import json

    class Fast(BM25):  # not registered: it keeps BM25's name
        pass

    Fast(k=2).fit(DOCS).save(tmp_path / "x")
    meta = json.loads((tmp_path / "x" / "params.json").read_text())
    assert meta["class"] == f"{__name__}:{Fast.__qualname__}" and meta["registered"] is False
    loaded = Fast.load(tmp_path / "x")
    assert type(loaded) is Fast and loaded.search(["vitamin"]).to_dict()["q0"]
    with pytest.raises(ArtifactError) as e:
        Operator.load(tmp_path / "x")
    assert str(e.value) == (f"{tmp_path / 'x' / 'params.json'}: saved by {__name__}.{Fast.__qualname__}, which was not "
                            "registered under 'bm25' (the class registered so is ragkit.retrievers.bm25.BM25, which "
                            "Operator.load would build from it instead): load it with Fast.load(folder)")

    class Mine(BM25):
        name = "s53_mine"

    Mine(k=2).fit(DOCS).save(tmp_path / "mine")
    assert type(Mine.load(tmp_path / "mine")) is Mine


def test_a_registered_class_records_itself_and_older_saves_load_as_before(tmp_path):
    """A folder without the record (saved before it) loads through the registered class, as it did."""
    import json

    BM25(k=2).fit(DOCS).save(tmp_path / "b")
    meta = json.loads((tmp_path / "b" / "params.json").read_text())
    assert meta["class"] == "ragkit.retrievers.bm25:BM25" and meta["registered"] is True
    assert type(Operator.load(tmp_path / "b")) is BM25

    class Fast(BM25):
        pass

    Fast(k=2).fit(DOCS).save(tmp_path / "old")
    edit_json(tmp_path / "old" / "params.json", lambda m: [m.pop("class"), m.pop("registered")])
    reseal(tmp_path / "old")
    assert type(Operator.load(tmp_path / "old")) is BM25  # (what the folder says: no more is known)
    edit_json(tmp_path / "old" / "params.json", lambda m: m.update({"class": "Fast", "registered": False}))
    with pytest.raises(ArtifactError, match=r"'class' holds \"Fast\" \(a JSON string\); expected the class that "
                                            r"saved it, a string \"module:qualname\""):
        Operator.load(tmp_path / "old", verify=False)


# ---------------------------------------------------------------- 3. the builder's error text is made for errors only
def test_a_valid_file_loads_without_making_the_error_texts(monkeypatch):
    """Old code: build() made its 'expected ...' text (validating every registered example) for every node."""
    from ragkit.pipelines import yaml as pyaml

    def refuse(kind):
        raise AssertionError(f"_kind_example({kind!r}) called for a valid file")

    monkeypatch.setattr(pyaml, "_kind_example", refuse)
    pipe = pyaml.load_yaml("pipeline:\n  - parallel: {branches: [bm25: {}, bm25: {variant: okapi}], fuse: {rrf: {}}}\n"
                           "  - route: {router: {score_router: {feature: top1, threshold: 5.0}}, branches: {easy: [], "
                           "hard: [top_k: {k: 3}]}}\n  - loop: {body: [prf: {}, bm25: {}], until: {max_only: {}}}\n")
    assert len(pipe.steps) == 3


# ---------------------------------------------------------------- 4, 6, 7. hints
@pytest.mark.parametrize("text, said", [
    ("pipeline:\n  - parallel:\n      branchs: [bm25: {}, bm25: {}]\n",
     "pipeline[0].parallel.branchs: unknown key (did you mean 'branches'?); parallel takes ['branches', 'fuse', "
     "'names']"),
    ("pipeline:\n  - bm25: {}\n  - loop: {body: [bm25: {}], untill: {max_only: {}}}\n",
     "pipeline[1].loop.untill: unknown key (did you mean 'until'?); loop takes ['body', 'max_iters', 'until']"),
])
def test_a_misspelt_structural_key_is_one_problem_not_also_a_missing_key(text, said):
    """Old code: also 'pipeline[0].parallel.branches: missing; ...' on a line of its own."""
    from ragkit.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        Pipeline.from_yaml(text)
    assert str(e.value) == said


def test_a_date_where_a_string_goes_says_to_quote_it():
    from ragkit.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        Pipeline.from_yaml("pipeline:\n  - rule_router: {rules: [{label: 2020-01-01, max_words: 1}]}\n")
    assert str(e.value) == ('pipeline[0].rule_router.rules[0].label: expected a string, got date 2020-01-01; YAML '
                            'reads an unquoted 2020-01-01 as a date: quote it, "2020-01-01"')


def test_a_date_with_a_time_where_a_string_goes_is_quoted_as_written():
    """Old code: 'got datetime 2020-01-01T10:00:00; ... quote it, "2020-01-01T10:00:00"', its isoformat, not what
    the file holds."""
    from ragkit.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        Pipeline.from_yaml("pipeline:\n  - rule_router: {rules: [{label: 2020-01-01 10:00:00, max_words: 1}]}\n")
    said = str(e.value)
    assert said == ('pipeline[0].rule_router.rules[0].label: expected a string, got datetime 2020-01-01 10:00:00; YAML '
                    'reads unquoted dates with a time (2020-01-01 10:00:00) as datetimes: quote the value as you wrote '
                    'it: "2020-01-01 10:00:00"'), said
    assert "T10:00" not in said


def test_a_bare_operator_name_as_the_pipeline_is_shown_as_a_list():
    from ragkit.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        Pipeline.from_yaml("pipeline: bm25\n")
    assert str(e.value).endswith("pipeline: expected a non-empty list of operators, got 'bm25'; a list of steps, "
                                 "each an operator's name mapped to its parameters, e.g. `pipeline: [bm25: {}]`")


# ---------------------------------------------------------------- class_name of a nested class
@pytest.mark.parametrize("recorded, name", [
    ("pkg.ops:Outer.Inner", "Outer.Inner"), ("pkg.ops:Foo", "Foo"), ("tests.x:test_y.<locals>.Fast", "Fast"),
    ("m:f.<locals>.g.<locals>.Outer.Inner", "Outer.Inner"),
])
def test_class_name_keeps_a_nested_class_s_outer_class(recorded, name):
    """Old code: 'Inner' of Outer.Inner, which names no class of its module (Inner.load(folder) fails)."""
    assert registry.class_name(recorded) == name


class _S53Outer:
    class Fast(BM25):  # not registered: it keeps BM25's name
        pass


def test_a_nested_unregistered_class_is_named_with_its_outer_class(tmp_path):
    _S53Outer.Fast(k=2).fit(DOCS).save(tmp_path / "x")
    with pytest.raises(ArtifactError) as e:
        Operator.load(tmp_path / "x")
    assert str(e.value).endswith(f"saved by {__name__}._S53Outer.Fast, which was not registered under 'bm25' (the "
                                 "class registered so is ragkit.retrievers.bm25.BM25, which Operator.load would build "
                                 "from it instead): load it with _S53Outer.Fast.load(folder)"), str(e.value)
    assert type(_S53Outer.Fast.load(tmp_path / "x")) is _S53Outer.Fast
