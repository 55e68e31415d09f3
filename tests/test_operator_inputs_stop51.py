"""Bad input to a single operator is refused before any work, saying what was given and what is expected: a filter
value of the wrong type given to the constructor (at fit, not after encoding the corpus), a save into a folder that
cannot be written (named, not the hidden temporary folder), a missing saved folder (``ArtifactNotFoundError``),
``op | 5`` / ``op + "x"``, a set of queries, a ``trace`` / ``verify`` / ``mmap`` that is no bool, ``qrels`` without
``trace=True``; and ``Operator.search`` documents what it accepts."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import ragkit._saves as saves_module
from ragkit.errors import ArtifactError, ArtifactNotFoundError, DataError, InputTypeError, ParamError
from ragkit.pipelines import Pipeline
from ragkit.retrievers import BM25
from ragkit.types import Corpus


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus.from_texts(["red apples", "green apple pie", "running shoes", "a runner runs"],
                             ids=["a", "b", "c", "d"], year=[2001, 2002, 2003, 2003])


@pytest.fixture(scope="module")
def bm25(corpus: Corpus) -> BM25:
    return BM25(k=3).fit(corpus)


@pytest.fixture(scope="module", params=["BM25", "Pipeline"])
def searcher(request, corpus: Corpus) -> BM25 | Pipeline:
    """A single operator and a pipeline (37e5340): both refuse the same ``search`` arguments."""
    return BM25(k=3).fit(corpus) if request.param == "BM25" else Pipeline([BM25(k=3)]).fit(corpus)


# ---------------------------------------------------------------------- 1. a filter value of the wrong type
def test_fit_refuses_a_filter_value_of_another_type_than_the_field_before_any_work(corpus, monkeypatch):
    fitted: list[int] = []
    monkeypatch.setattr(BM25, "_fit", lambda self, *a: fitted.append(1))
    op = BM25(filter={"year": "2001"})
    with pytest.raises(DataError, match=r"^bm25\.filter\.year: the field holds int values; got '2001' \(str\)"):
        op.fit(corpus)
    assert fitted == [] and not op.is_fitted  # refused before the fit's work (a dense one encodes the corpus)
    BM25(filter={"year": [2001, 2003]}).fit(corpus)  # the right type fits
    assert fitted == [1]


# ---------------------------------------------------------------------- 2. a folder that cannot be written
def test_a_save_whose_temporary_folder_cannot_be_made_names_the_target_and_the_reason(bm25, tmp_path, monkeypatch):
    def forbidden(parent: Path, prefix: str) -> Path:
        raise PermissionError(13, "Permission denied", str(parent / f"{prefix}123@host-abc"))

    monkeypatch.setattr(saves_module, "shared_tempdir", forbidden)  # (tests run as root: chmod stops nothing)
    target = tmp_path / "p"
    with pytest.raises(ArtifactError, match=r"the save could not be written \(Permission denied, creating its "
                                            r"temporary folder in ") as info:
        bm25.save(target)
    assert str(info.value).startswith(f"{target}: ") and ".tmp-" not in str(info.value)
    assert isinstance(info.value.__cause__, PermissionError) and not target.exists()


def test_a_save_whose_parent_folder_cannot_be_made_names_it(bm25, tmp_path, monkeypatch):
    def read_only(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(30, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(ArtifactError, match=r"\(Read-only file system, creating the folder .*new\)"):
        bm25.save(tmp_path / "new" / "p")


# ---------------------------------------------------------------------- 3. a missing saved folder
@pytest.mark.parametrize("load", [Pipeline.load, BM25.load], ids=["Pipeline.load", "BM25.load"])
def test_loading_a_folder_that_does_not_exist_is_an_artifact_not_found_error(load, tmp_path):
    with pytest.raises(ArtifactNotFoundError, match=r"nope: (not a saved pipeline folder \(it does not exist|no such "
                                                    r"folder)") as info:
        load(tmp_path / "nope")
    assert isinstance(info.value, FileNotFoundError)


def test_loading_a_file_is_still_an_artifact_error_and_not_a_missing_one(tmp_path):
    (tmp_path / "f").write_text("x")
    for load in (Pipeline.load, BM25.load):
        with pytest.raises(ArtifactError) as info:
            load(tmp_path / "f")
        assert not isinstance(info.value, FileNotFoundError)


# ---------------------------------------------------------------------- 4. op | 5, op + "x"
def test_combining_an_operator_with_what_is_no_operator_says_so():
    with pytest.raises(InputTypeError, match=r"^BM25\(\) \| int: \| chains operators into a Pipeline .* both sides "
                                             r"must be operators .* got int 5 on the right"):
        BM25() | 5  # type: ignore[operator]
    with pytest.raises(InputTypeError, match=r"^BM25\(\) \+ str: \+ runs operators side by side in a Parallel.* got "
                                             r"str 'x' on the right"):
        BM25() + "x"  # type: ignore[operator]
    with pytest.raises(TypeError, match=r"got the class BM25; pass an instance, BM25\(\)"):
        BM25() | BM25  # type: ignore[operator]


class Runnable:
    """Combines with what is on its left itself, as a LangChain runnable's ``__ror__`` / ``__radd__`` do."""

    def __ror__(self, other: object) -> str:
        return f"chained {type(other).__name__}"

    def __radd__(self, other: object) -> str:
        return f"added {type(other).__name__}"


def test_an_object_that_combines_with_an_operator_itself_still_may():
    assert BM25() | Runnable() == "chained BM25"  # type: ignore[operator]
    assert BM25() + Runnable() == "added BM25"  # type: ignore[operator]
    assert len(BM25() | BM25(stemmer="none")) == 2


# ---------------------------------------------------------------------- 5. a set of queries
@pytest.mark.parametrize("queries", [{"apple", "shoes"}, frozenset({"apple", "shoes"})])
def test_a_set_of_queries_is_refused(searcher, queries):
    with pytest.raises(DataError, match=rf"^{type(searcher).__name__}\.search: queries is a (set|frozenset) of 2, "
                                        r"whose order .* changes from run to run; pass a list \(sorted\(queries\)\)"):
        searcher.search(queries)
    assert searcher.search(sorted(queries)).query_ids == ["q0", "q1"]
    assert searcher.search({}.fromkeys(["x", "y"], "apple")).query_ids == ["x", "y"]


# ---------------------------------------------------------------------- 6. flags, qrels without the trace
@pytest.mark.parametrize("trace", ["yes", 1, None])
def test_search_takes_trace_as_true_or_false_only(searcher, trace):
    with pytest.raises(ParamError, match=rf"^{type(searcher).__name__}\.search: trace must be True or False, got"):
        searcher.search("apple", trace=trace)


def test_search_refuses_qrels_without_the_trace_that_reads_them(searcher, bm25):
    with pytest.raises(ParamError, match=rf"^{type(searcher).__name__}\.search: qrels is read by trace=True only"):
        searcher.search("apple", qrels={"q0": {"a": 1}})
    run = searcher.search("apple", trace=True, qrels={"q0": {"a": 1}}, relevance_level=1, ignore_identical_ids=False)
    assert run.trace and run.query_ids == ["q0"]
    assert searcher.search("apple", trace=False, qrels=None).query_ids == ["q0"]
    with pytest.raises(ParamError, match=r"relevance_level must be an integer grade >= 1, got 0"):
        bm25.search("apple", trace=True, qrels={"q0": {"a": 1}}, relevance_level=0)


@pytest.mark.parametrize("flag", ["verify", "mmap"])
def test_load_takes_verify_and_mmap_as_true_or_false_only(bm25, tmp_path, flag):
    bm25.save(tmp_path / "b")
    Pipeline([bm25]).save(tmp_path / "p")
    with pytest.raises(ParamError, match=rf"^BM25\.load: {flag} must be True or False, got str 'no'"):
        BM25.load(tmp_path / "b", **{flag: "no"})
    with pytest.raises(ParamError, match=rf"^Pipeline\.load: {flag} must be True or False, got str 'no'"):
        Pipeline.load(tmp_path / "p", **{flag: "no"})
    assert BM25.load(tmp_path / "b", **{flag: False}).is_fitted


# ---------------------------------------------------------------------- 7. what Operator.search documents
def test_operator_search_has_the_keywords_and_documentation_of_pipeline_search():
    params = inspect.signature(BM25.search).parameters
    assert {"relevance_level", "ignore_identical_ids"} <= set(params)
    doc = inspect.getdoc(BM25.search) or ""
    for part in ("Parameters", "Returns", "Raises", "relevance_level", "qrels", "(n_q,)"):
        assert part in doc
    assert "shape (n_docs,)" in (inspect.getdoc(BM25.filter_mask) or "")
    assert inspect.getdoc(BM25.is_fitted)
