"""What single operators refuse (e94936b) is refused by composites and the data types too: ``Pipeline.search`` of a
set of queries, with a ``trace`` that is no bool or ``qrels`` without ``trace=True``; ``Pipeline | 5``, ``5 | Pipeline``
and ``Parallel + "x"`` say what combines; ``Queries.from_texts`` / ``Corpus.from_texts`` refuse a set; and
``Corpus.save`` into a folder that cannot be created or written is an ``ArtifactError`` naming it."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

import ragkit._corpus as corpus_module
from ragkit.errors import ArtifactError, DataError, InputTypeError, NotFittedError
from ragkit.pipelines import Pipeline
from ragkit.retrievers import BM25
from ragkit.types import Corpus, Queries


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus.from_texts(["red apples", "green apple pie", "running shoes", "a runner runs"],
                             ids=["a", "b", "c", "d"])


# ---------------------------------------------------------------------- 1. Pipeline.search's arguments
# (a set of queries, a trace that is no bool, qrels without the trace: tests/test_operator_inputs_stop51.py's
# ``searcher`` runs each check on a BM25 and on a Pipeline)
def test_pipeline_search_refuses_a_set_before_any_work():
    with pytest.raises(DataError, match=r"^Pipeline\.search: queries is a set"):  # not "not fitted yet"
        Pipeline([BM25()]).search({"apple", "shoes"})
    with pytest.raises(NotFittedError):
        Pipeline([BM25()]).search(["apple", "shoes"])


def test_a_parallel_search_names_the_parallel(corpus):
    par = (BM25() + BM25(stemmer="none")).fit(corpus)
    with pytest.raises(DataError, match=r"^Parallel\.search: queries is a set"):
        par.search({"apple", "shoes"})


# ---------------------------------------------------------------------- 2. composites combined with no operator
def test_a_pipeline_or_a_parallel_combined_with_what_is_no_operator_says_so():
    pipe = Pipeline([BM25()])
    with pytest.raises(InputTypeError, match=r"^Pipeline\(\) \| int: \| chains operators into a Pipeline .* both "
                                             r"sides must be operators .* got int 5 on the right"):
        pipe | 5  # type: ignore[operator]
    with pytest.raises(InputTypeError, match=r"^int \| Pipeline\(\): \| chains operators into a Pipeline .* got int 5 "
                                             r"on the left"):
        5 | pipe  # type: ignore[operator]
    with pytest.raises(InputTypeError, match=r"got the class BM25; pass an instance, BM25\(\) on the right"):
        pipe | BM25  # type: ignore[operator]
    par = BM25() + BM25(stemmer="none")
    with pytest.raises(InputTypeError, match=r"^Parallel\(\) \+ str: \+ runs operators side by side in a Parallel.* "
                                             r"got str 'x' on the right"):
        par + "x"  # type: ignore[operator]
    assert len(pipe | BM25(stemmer="none")) == 2
    assert len((par + BM25(k=5)).branches) == 3


def test_an_object_that_combines_with_a_composite_itself_still_may():
    from test_operator_inputs_stop51 import Runnable

    assert Pipeline([BM25()]) | Runnable() == "chained Pipeline"  # type: ignore[operator]
    assert (BM25() + BM25(stemmer="none")) + Runnable() == "added Parallel"  # type: ignore[operator]


# ---------------------------------------------------------------------- 3. a set of texts
@pytest.mark.parametrize("build, where", [(Queries.from_texts, "Queries"), (Corpus.from_texts, "Corpus")])
@pytest.mark.parametrize("texts", [{"apple", "shoes"}, frozenset({"apple", "shoes"})])
def test_from_texts_refuses_a_set(build, where, texts):
    with pytest.raises(DataError, match=rf"^{where}\.from_texts: got a (set|frozenset) of 2 texts, whose order .* "
                                        r"changes from run to run; pass a list \(sorted\(\.\.\.\)"):
        build(texts)
    assert len(build(sorted(texts))) == 2


# ---------------------------------------------------------------------- 4. Corpus.save's folder
def _refusing(err: int, reason: str):
    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(err, reason, str(self))

    return refuse


def test_corpus_save_into_a_folder_that_cannot_be_created_is_an_artifact_error(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "mkdir", _refusing(errno.EROFS, "Read-only file system"))
    target = tmp_path / "new" / "corpus.jsonl"
    with pytest.raises(ArtifactError, match=r"^Corpus\.save: .*new/corpus\.jsonl: the save could not be written "
                                            r"\(Read-only file system, creating the folder .*new\); nothing was "
                                            r"written") as info:
        corpus.save(target)
    assert isinstance(info.value.__cause__, OSError)
    assert not (tmp_path / "new").exists()


def test_corpus_save_into_a_folder_it_may_not_write_is_an_artifact_error(corpus, tmp_path, monkeypatch):
    real_open = open

    def forbidden(file: object, *args: object, **kwargs: object) -> object:
        if ".tmp" in str(file):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(corpus_module, "open", forbidden, raising=False)
    with pytest.raises(ArtifactError, match=r"^Corpus\.save: .*corpus\.jsonl: the save could not be written "
                                            r"\(Permission denied, creating its temporary file in "):
        corpus.save(tmp_path / "corpus.jsonl")
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_corpus_save_keeps_an_error_that_a_retry_may_get_past(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "mkdir", _refusing(errno.EIO, "Input/output error"))
    with pytest.raises(OSError) as info:
        corpus.save(tmp_path / "new" / "corpus.jsonl")
    assert not isinstance(info.value, ArtifactError) and info.value.errno == errno.EIO


def test_corpus_save_creates_its_folder_and_refuses_one_below_a_file(corpus, tmp_path):
    target = tmp_path / "a" / "b" / "corpus.jsonl"
    corpus.save(target)
    assert target.read_text(encoding="utf-8").count("\n") == len(corpus)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ArtifactError, match=r"^Corpus\.save: .*: .*/f is a file, not a folder"):
        corpus.save(tmp_path / "f" / "g" / "corpus.jsonl")


def test_an_operator_save_still_writes_its_corpus(corpus, tmp_path):
    BM25().fit(corpus).save(tmp_path / "b")
    assert BM25.load(tmp_path / "b").search("apple").query_ids == ["q0"]
    Pipeline([BM25()]).fit(corpus).save(tmp_path / "p")
    assert Pipeline.load(tmp_path / "p").search("apple").query_ids == ["q0"]
