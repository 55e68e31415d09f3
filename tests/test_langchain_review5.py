"""RagkitRetriever, fifth review (typed fields and pydantic's own model API).

- ``model_dump(mode="json")`` / ``model_dump_json()`` raised ``PydanticSerializationError`` (a Pipeline is no
  JSON): the pipeline is written as its YAML.
- ``model_copy(update={"pipeline": folder})`` left the string in the field (pydantic skips validation there), and
  the next ``invoke`` failed with ``AttributeError``: an update is checked and built as an assignment is.
- ``pipeline=`` an ``os.PathLike`` other than ``Path`` was refused, though ``save`` / ``load`` take one.
- A missing folder was "no such file (expected a pipeline YAML file, ...)", saved folders unmentioned; a
  ``pipeline=1`` error left YAML text and an operator's name out of what is taken.
(The ``r.pipeline = "app-index"`` typing regression is checked by mypy: ``tests/typing/user_code.py``.)
"""
from __future__ import annotations

import json
import os
import typing

import pytest

from ragkit.errors import ConfigError, NotFittedError, ParamError, RagkitError
from ragkit.integrations.langchain import RagkitRetriever
from ragkit.operator import Operator
from ragkit.pipelines import Pipeline
from ragkit.retrievers import BM25

TEXTS = ["a cat sat", "a dog ran", "fish swim", "cat and dog", "the cat ate fish"]


class _PathLike:
    """An ``os.PathLike`` that is no ``pathlib.Path`` (a framework's own path object)."""

    def __init__(self, path: os.PathLike[str] | str) -> None:
        self.path = os.fspath(path)

    def __fspath__(self) -> str:
        return self.path


def _ids(docs) -> list[str | None]:
    return [d.id for d in docs]


@pytest.fixture()
def retriever() -> RagkitRetriever:
    return RagkitRetriever(pipeline=Pipeline([BM25(k=10)]), corpus=TEXTS, k=2)


# ------------------------------------------------------------------ 1. JSON dumps
def test_json_dump_writes_the_pipeline_as_yaml(retriever):
    dumped = retriever.model_dump(mode="json")
    assert dumped["pipeline"] == retriever.pipeline.to_yaml() and dumped["k"] == 2
    assert json.loads(retriever.model_dump_json())["pipeline"] == dumped["pipeline"]
    assert isinstance(retriever.model_dump()["pipeline"], Operator)  # python mode: the operator itself
    again = RagkitRetriever(pipeline=dumped["pipeline"], corpus=TEXTS, k=2)  # the YAML builds it again
    assert _ids(again.invoke("cat")) == _ids(retriever.invoke("cat"))


def test_json_dump_of_a_pipeline_yaml_cannot_write_is_its_repr(retriever, monkeypatch):
    def no_yaml(self):
        raise ValueError("no YAML for this parameter")

    monkeypatch.setattr(Pipeline, "to_yaml", no_yaml)
    assert retriever.model_dump(mode="json")["pipeline"] == repr(retriever.pipeline)


def test_langchain_serialisation_of_the_retriever(retriever):
    from langchain_core.load import dumpd, dumps

    assert dumpd(retriever)["id"][-1] == "RagkitRetriever"
    assert "RagkitRetriever" in dumps(retriever)


# ------------------------------------------------------------------ 2. model_copy(update=...)
def test_model_copy_update_loads_a_saved_folder(retriever, tmp_path):
    RagkitRetriever(pipeline=Pipeline([BM25(k=10)]), corpus=TEXTS[:3], k=3).save(tmp_path / "saved")
    copy = retriever.model_copy(update={"pipeline": str(tmp_path / "saved")})
    assert isinstance(copy.pipeline, Operator) and copy.pipeline is not retriever.pipeline
    assert copy.k == 2  # the retriever's own k (set at construction) wins over the folder's, as assigning it does
    assert {d.page_content for d in copy.invoke("cat fish dog", k=5)} == set(TEXTS[:3])
    assert len(retriever.invoke("cat fish dog", k=5)) == 5  # the original is untouched


def test_model_copy_update_fits_a_new_pipeline_on_new_documents(retriever):
    copy = retriever.model_copy(update={"pipeline": BM25(), "corpus": ["x y", "y z"]})
    assert sorted(d.page_content for d in copy.invoke("y")) == ["x y", "y z"]
    assert copy.corpus is None and retriever.invoke("cat")[0].page_content in TEXTS


def test_model_copy_update_keeps_k_and_search_kwargs_k_equal(retriever):
    r = RagkitRetriever(pipeline=Pipeline([BM25(k=10)]), corpus=TEXTS, search_kwargs={"k": 2})
    assert r.model_copy(update={"k": 3}).search_kwargs == {"k": 3}
    assert r.model_copy(update={"search_kwargs": {"k": 1}}).k == 1
    with pytest.raises(ParamError, match=r"k=2 and search_kwargs=\{'k': 3\} disagree"):
        r.model_copy(update={"k": 2, "search_kwargs": {"k": 3}})


@pytest.mark.parametrize("update, error, said", [
    ({"k": 0}, ParamError, "RagkitRetriever.k: expected a positive integer, got 0"),
    ({"pipeline": "no/such/dir"}, RagkitError, "no such file or folder"),
    ({"pipeline": BM25()}, NotFittedError, "not fitted"),
    ({"top_k": 3}, ParamError, "unknown argument 'top_k' .did you mean k"),
    ({"search_kwargs": {"nope": 1}}, ParamError, "nope"),
])
def test_model_copy_refuses_a_bad_update(retriever, update, error, said):
    with pytest.raises(error, match=said):
        retriever.model_copy(update=update)
    assert retriever.k == 2 and retriever.search_kwargs == {} and len(retriever.invoke("cat")) == 2


def test_model_copy_without_update(retriever):
    assert retriever.model_copy().pipeline is retriever.pipeline
    deep = retriever.model_copy(deep=True)
    assert deep.pipeline is not retriever.pipeline and _ids(deep.invoke("cat")) == _ids(retriever.invoke("cat"))


# ------------------------------------------------------------------ 3. os.PathLike
def test_pipeline_takes_any_path_like(retriever, tmp_path):
    retriever.save(_PathLike(tmp_path / "saved"))
    loaded = RagkitRetriever(pipeline=_PathLike(tmp_path / "saved"))
    assert loaded.k == 2 and _ids(loaded.invoke("cat")) == _ids(retriever.invoke("cat"))
    (tmp_path / "p.yaml").write_text("pipeline:\n  - bm25: {k: 3}\n")
    assert len(RagkitRetriever(pipeline=_PathLike(tmp_path / "p.yaml"), corpus=TEXTS, k=5).invoke("cat")) == 3
    retriever.pipeline = _PathLike(tmp_path / "saved")  # assigned: reloaded in place
    assert isinstance(retriever.pipeline, Pipeline)


def test_path_hints_take_path_like():
    hints = typing.get_type_hints(RagkitRetriever.save)
    assert hints["path"] == str | os.PathLike[str]
    assert typing.get_type_hints(RagkitRetriever.load)["path"] == str | os.PathLike[str]


# ------------------------------------------------------------------ 4. messages
def test_a_missing_folder_names_saved_folders():
    with pytest.raises(RagkitError, match=r"no/such/dir: no such file or folder .*saved pipeline folder"):
        RagkitRetriever(pipeline="no/such/dir")
    with pytest.raises(ConfigError, match=r"^no/such/dir: no such file or folder .*Pipeline\.load"):
        Pipeline.from_yaml("no/such/dir")


def test_a_pipeline_of_no_kind_lists_every_kind_taken():
    with pytest.raises(RagkitError, match=r"saved pipeline folder, a YAML file, YAML text or an operator's "
                                              r"name \('bm25'\), got int \(1\)"):
        RagkitRetriever(pipeline=1)


def test_save_and_load_expand_a_leading_tilde(tmp_path, monkeypatch):
    """``RagkitRetriever.save("~/x")`` wrote into a folder named ``~`` here, while ``Pipeline.save`` expands it."""
    from ragkit.integrations.langchain import RagkitRetriever
    from ragkit.retrievers import BM25

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    r = RagkitRetriever(pipeline=BM25(k=2), corpus=["red apple", "green pear", "blue sky"])
    r.save("~/idx")
    assert (tmp_path / "idx").is_dir() and not (tmp_path / "~").exists()
    assert [d.page_content for d in RagkitRetriever.load("~/idx").invoke("apple")] == ["red apple"]


def test_a_saved_folder_given_as_pipeline_expands_a_leading_tilde(tmp_path, monkeypatch):
    """``RagkitRetriever(pipeline="~/rs")`` and ``r.pipeline = "~/rs"`` said no such file or folder."""
    from ragkit.integrations.langchain import RagkitRetriever
    from ragkit.retrievers import BM25

    monkeypatch.setenv("HOME", str(tmp_path))
    RagkitRetriever(pipeline=BM25(k=2), corpus=["red apple", "green pear"], k=1).save("~/rs")
    r = RagkitRetriever(pipeline="~/rs")
    assert r.k == 1 and [d.page_content for d in r.invoke("apple")] == ["red apple"]
    r.pipeline = "~/rs"
    assert [d.page_content for d in r.invoke("pear")] == ["green pear"]
