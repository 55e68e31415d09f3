"""The foundation's contracts: ids, masks, metadata, filters, options, parameters, saves."""

from __future__ import annotations

import datetime
import json

import numpy as np
import pytest

from ragkit.errors import ArtifactError, DataError, ParamError
from ragkit.operator import Operator
from ragkit.retrievers import BM25
from ragkit.types import Corpus, Queries, State

TEXTS = ["red apples", "green pears", "ripe apples and pears"]


def test_ids_are_strings_so_a_number_names_the_same_document_before_and_after_a_save(tmp_path):
    c = Corpus.from_records([{"_id": "1", "text": "a"}]).concat(Corpus(ids=[2], texts=["b"]))
    assert c.ids.tolist() == ["1", "2"] and c.mask({"_id": 2}).tolist() == [False, True]
    assert c.row_of(["2"]).tolist() == [1]
    with pytest.raises(DataError, match="ids must be unique"):
        Corpus(ids=[1, "1"], texts=["a", "b"])  # the same id once saved
    assert Queries([1, 2], ["a", "b"]).ids == ["1", "2"]
    with pytest.raises(DataError, match="'q1' is repeated"):
        Queries(["q1", "q1"], ["apple", "pear"])  # evaluation keyed by id kept one of them


def test_boolean_masks_select_rows_not_positions_0_and_1():
    c = Corpus.from_texts(TEXTS, lang=["fr", "en", "fr"])
    assert c.subset(c.mask({"lang": "fr"})).ids.tolist() == ["0", "2"]
    q = Queries(["a", "b", "c"], ["x", "y", "z"])
    assert q[[True, False, True]].ids == ["a", "c"] and q[np.array([False, True, False])].ids == ["b"]
    s = State(["x", "y", "z"])
    assert s.subset(np.array([True, False, True])).queries == ["x", "z"]
    with pytest.raises(DataError, match="a boolean mask selects rows of 3"):
        c.subset([True, False])


def test_list_metadata_stays_one_column_and_saves(tmp_path):
    c = Corpus.from_texts(["a", "b"], tags=[["red", "big"], ["blue", "big"]])
    assert c.metadata["tags"].shape == (2,)
    c.save(tmp_path / "c.jsonl")
    from ragkit.eval.beir import read_corpus

    back = read_corpus(tmp_path / "c.jsonl")
    assert back.metadata["tags"].shape == (2,) and back.metadata["tags"][0] == ["red", "big"]


def test_metadata_keeps_its_values_across_a_save_or_names_the_field(tmp_path):
    from ragkit.eval.beir import read_corpus

    c = Corpus.from_texts(["a", "b"], f32=np.array([0.1, 0.2], np.float32))
    before = c.mask({"f32": np.float32(0.1)}).tolist()
    c.save(tmp_path / "c.jsonl")
    assert read_corpus(tmp_path / "c.jsonl").mask({"f32": 0.1}).tolist() == before == [True, False]
    dated = Corpus.from_texts(["a"], when=[datetime.date(2024, 1, 2)])
    with pytest.raises(DataError, match="metadata field 'when' holds a date"):
        dated.save(tmp_path / "d.jsonl")


def test_filters_take_arrays_as_lists_and_refuse_query_operators():
    c = Corpus.from_texts(TEXTS, lang=["fr", "en", "en"], year=[2019, 2020, 2021])
    assert c.mask({"lang": np.array(["fr", "en", "en"])}).tolist() == [True, True, True]
    assert c.mask({"_id": np.array(["0", "2"])}).tolist() == [True, False, True]
    assert c.mask({"year": [2020.0, 2021]}).tolist() == [False, True, True]
    with pytest.raises(DataError, match=r"filter.year: \{'\$gte': 2020\} is not supported"):
        c.mask({"year": {"$gte": 2020}})


def test_a_call_filter_narrows_the_configured_one_even_on_the_same_field():
    c = Corpus.from_texts(["acme apples", "evil apples"], tenant=["acme", "evil"])
    bm = BM25(k=5, filter={"tenant": "acme"}).fit(c)
    assert bm.search(["apples"]).doc_ids[0].tolist() == ["0"]
    assert bm.search(["apples"], filter={"tenant": "evil"}).doc_ids[0].tolist() == []  # was ['1']


def test_run_time_k_is_checked():
    bm = BM25(k=5).fit(Corpus.from_texts(TEXTS))
    for bad, where in ((-1, "options.bm25.k"), (True, "options.bm25.k")):
        with pytest.raises(ParamError, match=rf"{where}: expected a positive integer, got {bad!r}"):
            bm(State(["apples"], options={"bm25": {"k": bad}}))
    with pytest.raises(ParamError, match="options.k: expected a positive integer, got 'ten'"):
        bm(State(["apples"], options={"k": "ten"}))


def test_load_refuses_a_corpus_other_than_the_one_fitted(tmp_path):
    c = Corpus.from_texts(["pear", "plum", "apple"], ids=["d0", "d1", "d2"])
    BM25(k=1).fit(c).save(tmp_path / "b")
    other = Corpus.from_texts(["apple", "pear", "plum"], ids=["z0", "z1", "z2"])
    with pytest.raises(ArtifactError, match="fitted on a corpus of 3 documents, but load\\(corpus=...\\) was given 3"):
        Operator.load(tmp_path / "b", corpus=other)
    assert Operator.load(tmp_path / "b", corpus=c).search(["apple"]).doc_ids[0].tolist() == ["d2"]


def test_a_file_merely_named_params_json_is_not_a_ragkit_save(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "params.json").write_text(json.dumps({"learning_rate": 0.1}))
    (mine / "results.csv").write_text("keep")
    with pytest.raises(ArtifactError, match="not a ragkit save"):
        BM25(k=1).fit(Corpus.from_texts(TEXTS)).save(mine)
    assert sorted(p.name for p in mine.iterdir()) == ["params.json", "results.csv"]


def test_parameters_refuse_inf_nan_and_booleans_for_integers():
    from ragkit.filters import ScoreThreshold
    from ragkit.pipelines import RRF

    with pytest.raises(ParamError, match="bm25.k1: expected a finite number, got inf"):
        BM25(k1=float("inf"))
    with pytest.raises(ParamError, match="expected a finite number, got nan"):
        ScoreThreshold(threshold=float("nan"))
    with pytest.raises(ParamError, match="k: expected an integer, got True; YAML reads"):
        BM25(k=True)
    with pytest.raises(ParamError, match=r"rrf.k: expected a value > 0(\.0)?, got 0"):  # a real number, not a count
        RRF(k=0)


def test_subset_options_are_the_subsets_own():
    s = State(["a", "b"], options={"k": 3})
    sub = s.subset([0])
    sub.options["k"] = 7
    assert s.options == {"k": 3}


def test_a_bug_inside_an_operator_family_is_not_taken_for_a_missing_extra(monkeypatch):
    import importlib

    from ragkit import registry

    real = importlib.import_module

    def broken(name, *a, **k):
        if name == "ragkit.generators":
            raise ModuleNotFoundError("No module named 'numpy.nothing'", name="numpy.nothing")
        return real(name, *a, **k)

    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(ModuleNotFoundError, match="numpy.nothing"):
        registry.load_all()
