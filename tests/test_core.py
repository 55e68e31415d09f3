"""The foundation's contracts: ids, masks, metadata, filters, options, parameters, saves."""

from __future__ import annotations

import datetime
import json

import numpy as np
import pytest
from pydantic import Field

from ragkit.errors import ArtifactError, DataError, ParamError
from ragkit.operator import Operator
from ragkit.params import Params
from ragkit.retrievers import BM25
from ragkit.types import Corpus, Queries, Ranking, State

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
    # positions are integers in range: 1.7 silently became row 1, 7 a bare IndexError
    for bad, match in (([1.7, 2.2], r"integer positions .* got float64 values such as 1\.7"),
                       ([7], r"row 7 is out of range for 3 rows"), ([-4], r"row -4 is out of range")):
        with pytest.raises(DataError, match=match):
            c.subset(bad)
        with pytest.raises(DataError, match=match):
            s.subset(bad)
    assert c.subset([-1]).ids.tolist() == ["2"] and c.subset(np.array([2, 0], dtype=object)).ids.tolist() == ["2", "0"]
    assert len(c.subset([])) == 0
    # a metadata value must be one per document: 'en' became ['e', 'n'] for two documents
    for value in ("en", 2020):
        with pytest.raises(DataError, match=r"metadata field 'lang': expected one value per document"):
            Corpus.from_texts(["x", "y"], lang=value)


def test_training_judgements_must_name_the_training_queries():
    from ragkit.types import TrainSet

    q = Queries(["1", "2"], ["x", "y"])
    with pytest.raises(DataError, match=r"none of the queries judged positive in the qrels \('train-1'.*is one of "
                                        r"the 2 training queries \('1', '2'\)"):
        TrainSet(q, {"train-1": {"d": 1}})
    TrainSet(q, {"1": {"d": 1}, "other": {"d": 1}})  # one shared judged query is enough


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
    nested = Corpus.from_texts(["a"], info=[{"source": "web", "when": datetime.date(2024, 1, 2)}])
    with pytest.raises(DataError, match=r"metadata field 'info' holds a date .*a dict with string keys"):
        nested.save(tmp_path / "n.jsonl")  # (a date inside a dict was a bare TypeError from json)
    Corpus.from_texts(["a"], info=[{"source": "web", "n": np.int64(3)}]).save(tmp_path / "n.jsonl")
    assert read_corpus(tmp_path / "n.jsonl").metadata["info"][0] == {"source": "web", "n": 3}


def test_filters_take_arrays_as_lists_and_refuse_query_operators():
    c = Corpus.from_texts(TEXTS, lang=["fr", "en", "en"], year=[2019, 2020, 2021])
    assert c.mask({"lang": np.array(["fr", "en", "en"])}).tolist() == [True, True, True]
    assert c.mask({"_id": np.array(["0", "2"])}).tolist() == [True, False, True]
    assert c.mask({"year": [2020.0, 2021]}).tolist() == [False, True, True]
    with pytest.raises(DataError, match=r"filter.year: \{'\$gte': 2020\} is not supported"):
        c.mask({"year": {"$gte": 2020}})


def test_coded_filter_masks_equal_python_equality_on_mixed_columns():
    """A filtered search codes each metadata column once; the masks equal a plain Python ``==`` test
    of every value, for mixed types (1 == 1.0 == True, "1" != 1), None, NaN, unhashable lists in
    the column or the filter, and repeated calls."""
    from ragkit.metadata import isin as _isin

    col = [1, 1.0, True, "1", None, float("nan"), 2.5, "a", 0, False, ["x"], np.int64(2), np.float32(2.5)]
    c = Corpus.from_texts([str(i) for i in range(len(col))], v=col, w=[x for x in col if not isinstance(x, list)] + [3])
    wants = [1, [1, "a"], "1", None, [None, 2], [["x"]], [["x"], 0], 2.5, np.float32(2.5), [], [False]]
    for field in ("v", "w"):
        for _ in range(2):  # the second pass reads the cached codes
            for want in wants:
                as_list = list(want) if isinstance(want, list) else [want]
                got = c.mask({field: want})
                np.testing.assert_array_equal(got, _isin(c.metadata[field], as_list), err_msg=f"{field}={want!r}")
    for nan in (float("nan"), [1, float("nan")]):  # NaN equals nothing: refused, not an empty mask
        with pytest.raises(DataError, match="holds NaN, which equals no value"):
            c.mask({"v": nan})


def test_a_list_valued_field_matches_the_values_it_holds():
    """A tags field (a list per document) filtered on one tag matched nothing, silently: only a value
    equal to the whole list matched.  A list value matches each of its elements too."""
    c = Corpus.from_texts(["a", "b", "c", "d"], tags=[["x", "y"], ["z"], [], "y"])
    assert c.mask({"tags": "y"}).tolist() == [True, False, False, True]
    assert c.mask({"tags": ["z", "x"]}).tolist() == [True, True, False, False]
    assert c.mask({"tags": [["z"]]}).tolist() == [False, True, False, False]  # the whole list, as before
    assert not c.mask({"tags": "q"}).any()


def test_a_list_valued_field_is_filtered_from_codes_not_a_python_pass_per_search(monkeypatch):
    """A list-valued field (tags) was compared in Python, value by value, on every search (10,000
    documents x a filter per call); it is coded element by element once, and filters on elements are
    one ``np.isin``, equal to the value-by-value comparison."""
    import ragkit._corpus as corpus_module
    import ragkit.metadata as metadata

    rng = np.random.default_rng(0)
    pool = ["x", "y", "z", 1, 2.0, True, ("t", 1)]
    tags = [[pool[j] for j in rng.choice(len(pool), rng.integers(0, 4))] if rng.random() < 0.8
            else pool[rng.integers(len(pool))] for _ in range(300)]
    c = Corpus.from_texts([f"d{i}" for i in range(300)], tags=tags)
    filters = [["x"], ["y", 1], [2], [1.0, "q"], [("t", 1)], [["x", "y"]], ["q"], []]
    expected = [metadata.isin(c.metadata["tags"], f) for f in filters]
    slow = metadata.isin
    monkeypatch.setattr(corpus_module, "isin", lambda column, wants: pytest.fail(f"a Python pass for {wants}")
                        if all(metadata.hashable(w) and not isinstance(w, tuple) for w in wants)
                        else slow(column, wants))
    for f, want in zip(filters, expected):
        assert c.mask({"tags": f}).tolist() == want.tolist(), f
    assert c.mask({"tags": "x"}).sum() > 0 and c.mask({"tags": [1]}).sum() > c.mask({"tags": [2]}).sum() > 0


def test_id_filters_on_document_ids_unless_a_field_has_that_name():
    """Returned Documents name their id ``metadata["id"]``, but ``filter={"id": ...}`` was refused (only
    ``_id`` was known)."""
    from ragkit.options import filter_value

    c = Corpus.from_texts(["a", "b", "c"], ids=["x", "y", "z"])
    assert c.mask({"id": ["x", "z"]}).tolist() == c.mask({"_id": ["x", "z"]}).tolist() == [True, False, True]
    assert filter_value({"id": "y"}, c) == {"id": "y"}
    own = Corpus.from_texts(["a", "b"], ids=["x", "y"], id=["y", "x"])  # a field named id is that field
    assert own.mask({"id": "y"}).tolist() == [True, False]


def test_a_corpus_is_immutable_so_its_cached_lookups_stay_true():
    """Row numbers and filter codes are cached from a corpus's ids and columns: changing one in place
    answered later filters and lookups from the old values.  The arrays are read-only, the metadata a
    read-only mapping, and the caller's own arrays are copied (they stay writable)."""
    import pickle

    lang = np.array(["en", "de", "en"], dtype=object)
    c = Corpus.from_texts(["a", "b", "c"], lang=lang)
    assert c.mask({"lang": "en"}).tolist() == [True, False, True] and c.row_of(["1"]).tolist() == [1]
    with pytest.raises(ValueError, match="read-only"):
        c.metadata["lang"][0] = "de"
    with pytest.raises(TypeError):
        c.metadata["lang"] = np.array(["de"] * 3, dtype=object)
    for arr in (c.ids, c.texts, c.titles):
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = "x"
    lang[0] = "de"  # the caller's array is theirs: the corpus holds a copy
    assert c.mask({"lang": "en"}).tolist() == [True, False, True]
    back = pickle.loads(pickle.dumps(c))  # Ray ships corpora to workers
    assert dict(back.metadata).keys() == {"lang"} and back.mask({"lang": "de"}).tolist() == [False, True, False]
    both = c.concat(Corpus.from_texts(["d"], ids=["3"], lang=["fr"]))
    assert both.metadata["lang"].tolist() == ["en", "de", "en", "fr"] and both.subset([3]).texts.tolist() == ["d"]
    # concat and subset of checked corpora skip the text checks (an edit of a large corpus re-checked
    # every text): their results are as read-only, and what they could break is still refused
    for made in (both, both.subset([3, 0]), both.subset(np.array([True, False, True, True]))):
        for arr in (made.ids, made.texts, made.titles, *made.metadata.values()):
            assert not arr.flags.writeable
    assert both.row_of(["3", "0"]).tolist() == [3, 0] and both.subset([3, 0]).row_of(["0"]).tolist() == [1]
    with pytest.raises(DataError, match="ids must be unique; repeated: \\['0'\\]"):
        both.subset([0, 0])
    with pytest.raises(DataError, match="ids must be unique; repeated: \\['1'\\]"):
        both.concat(Corpus.from_texts(["x"], ids=["1"]))


def test_a_corpus_is_built_from_plain_lists_with_titles_and_metadata_optional():
    """What the constructor's type hints promise (lists in, read-only arrays held; ``None`` for no
    titles or no metadata)."""
    c = Corpus(["a", "b"], ["x", "y"], None, None)
    assert c.titles.tolist() == ["", ""] and dict(c.metadata) == {} and isinstance(c.ids, np.ndarray)
    assert Corpus(ids=("a",), texts=("x",), metadata={"n": [1]}).metadata["n"].tolist() == [1]


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
    with pytest.raises(ParamError, match="k: expected an integer, got True; a boolean"):
        BM25(k=True)
    with pytest.raises(ParamError, match="k: expected an integer, got True; a boolean"):  # (numpy bool: a bool)
        BM25(k=np.True_)
    # a filter value that is not finite matches nothing, and JSON / YAML would save it as null
    for value in (float("inf"), [1, float("nan")]):
        with pytest.raises(ParamError, match=r"bm25\.filter: (filter )?field 'rating': .* (not a finite number|NaN)"):
            BM25(filter={"rating": value})
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


# ---------------------------------------------------------------------- run-time search options
class _RecorderParams(Params):
    k: int = Field(3, ge=1)


class _Recorder(Operator):
    """A retriever that records each call (the options it saw): proof that nothing ran."""

    name = "recorder"
    kind = "retriever"
    Params = _RecorderParams
    applies_filter = True  # (it takes the filter: it records the mask, which the tests read)

    def _fit(self, corpus, train, upstream):
        self.calls_ = []

    def _call(self, state):
        self.calls_.append((self.k_for(state), self.filter_mask(state)))
        out = state.copy()
        n = min(self.k_for(state), len(self.corpus_))
        out.rankings = [Ranking(np.arange(n), np.linspace(1, 0, n, dtype=np.float32)) for _ in state.queries]
        return out


def _options_pipeline():
    """A recorder and BM25 in a parallel, inside a route branch, then a loop with a threshold."""
    from ragkit.filters import ScoreThreshold, TopK
    from ragkit.pipelines import RRF, Loop, MaxOnly, Pipeline, Route, RuleRouter

    rec = _Recorder()
    hybrid = (rec + BM25(k=5)) | RRF(k=60)
    router = RuleRouter(rules=[{"label": "short", "max_words": 2}], default="long")
    pipe = Pipeline([Route(router, {"short": hybrid, "long": [BM25(k=4)]}),
                     Loop([ScoreThreshold(threshold=-1.0)], until=MaxOnly()), TopK(k=3)])
    return pipe.fit(Corpus.from_texts(TEXTS, year=[2019, 2020, 2021])), rec


@pytest.mark.parametrize("options, message", [
    ({"filtr": {"year": 2020}}, "search option 'filtr': not an option; expected k, filter, or an operator name: "
                                "rule_router, recorder, bm25, rrf, score_threshold, max_only, top_k (did you mean "
                                "'filter'?)"),
    ({"bm25": {"kk": 1}}, "search option bm25.kk: unknown option for operator 'bm25' (BM25); expected one of: k, "
                          "filter, n_jobs (did you mean 'k'?)"),
    ({"dense": {"k": 3}}, "search option 'dense': no 'dense' operator in this pipeline; expected k, filter, or an "
                          "operator name: rule_router, recorder, bm25, rrf"),
    ({"bm25": {"n_jobs": "x"}}, "search option bm25.n_jobs: expected an integer, got 'x'"),
    ({"bm25": {"n_jobs": -2}}, "search option bm25.n_jobs: expected a value >= -1"),
    ({"bm25": 3}, "search option bm25: expected a mapping of options {option: value} for operator 'bm25', got 3"),
    ({"rrf": {"k": 10}}, "search option rrf.k: unknown option for operator 'rrf' (RRF); it reads no run-time options"),
    ({"recorder": {"k": 0}}, "search option recorder.k: expected a positive integer, got 0"),
    ({"score_threshold": {"threshold": "high"}}, "search option score_threshold.threshold: expected a number, got "
                                                 "'high'"),
    ({"top_k": {"k": True}}, "search option top_k.k: expected a positive integer, got True"),
    ({"filter": {"yeer": 2020}}, "search option filter: field 'yeer' is not a metadata field of the corpus; "
                                 "available: ['year', '_id', 'title']"),
    ({"filter": {"year": {"$gte": 2020}}}, "search option filter: field 'year': {'$gte': 2020} is not supported"),
    ({"bm25": {"filter": ["year"]}}, "search option bm25.filter: expected a metadata filter"),
])
def test_search_options_are_checked_over_the_whole_tree_before_any_work(options, message):
    pipe, rec = _options_pipeline()
    with pytest.raises(ParamError) as err:
        pipe.search(["apples", "ripe apples and green pears"], **options)
    assert str(err.value).startswith(message), str(err.value)
    assert err.value.path.startswith("options.")
    assert rec.calls_ == [], "an operator ran before the options were checked"


def test_options_reach_operators_nested_in_routes_parallels_and_loops():
    pipe, rec = _options_pipeline()
    run = pipe.search(["apples"], recorder={"k": 2}, bm25={"n_jobs": "2", "filter": {"year": [2019, 2021]}},
                      score_threshold={"threshold": 0}, filter={"_id": ["0", "1", "2"]})
    (k, mask), = rec.calls_
    assert k == 2 and mask.tolist() == [True, True, True]
    assert set(run.doc_ids[0].tolist()) <= {"0", "1", "2"} and len(run.doc_ids[0]) > 0
    # a bare operator searches through the same check
    with pytest.raises(ParamError, match=r"search option bm25.kk: unknown option"):
        BM25(k=2).fit(Corpus.from_texts(TEXTS)).search(["apples"], bm25={"kk": 1})


def test_option_values_obey_the_parameter_models_rules_and_are_converted():
    from ragkit.options import check_options
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import Muvera, Sharded

    assert check_options(BM25(), {"bm25": {"n_jobs": "2", "k": 7}}) == {"bm25": {"n_jobs": 2, "k": 7}}
    two = Pipeline([Muvera(k=10, candidates=50) + Muvera(k=10, candidates=20)])
    assert check_options(two, {"muvera": {"candidates": 40, "prune": None}}) == \
        {"muvera": {"candidates": 40, "prune": None}}
    with pytest.raises(ParamError, match=r"search option muvera.candidates: candidates \(5\) must be >= k \(10\)"):
        check_options(two, {"muvera": {"candidates": 5}})
    with pytest.raises(ParamError, match=r"search option muvera.k: candidates \(20\) must be >= k \(30\).*for the "
                                         r"'muvera' at pipeline\[0\].parallel.branches\[1\]"):
        check_options(two, {"muvera": {"k": 30}})
    # a sharded retriever hands the call's options to its per-shard retriever, and applies no filter itself
    sharded = Sharded(retriever={"bm25": {"k": 5}}, n_shards=2)
    assert check_options(sharded, {"bm25": {"n_jobs": 2}, "sharded": {"k": 3}}) == \
        {"bm25": {"n_jobs": 2}, "sharded": {"k": 3}}
    with pytest.raises(ParamError, match="search option sharded.filter: unknown option for operator 'sharded'"):
        check_options(sharded, {"sharded": {"filter": {"year": 2020}}})


def test_opt_refuses_an_option_its_class_does_not_declare():
    class Sloppy(_Recorder):
        name = "sloppy"

        def _call(self, state):
            self.opt(state, "depth", 3)
            return state

    op = Sloppy().fit(Corpus.from_texts(TEXTS))
    with pytest.raises(TypeError, match=r"Sloppy.opt\(state, 'depth'\): 'depth' is not a run-time option declared by "
                                        r"Sloppy \(declared: k, filter\); add it to Sloppy.run_options"):
        op(State(["apples"]))


def test_distributed_search_checks_k_before_ray_starts(monkeypatch):
    from ragkit import _distributed, scale

    monkeypatch.setattr(_distributed, "ray_init", lambda: pytest.fail("Ray was started before k was checked"))
    with pytest.raises(ParamError, match="search option k: expected a positive integer, got 0"):
        scale.search_distributed(BM25().fit(Corpus.from_texts(TEXTS)), ["apples"], k=0)


def _reads(cls: type[Operator]) -> set[str]:
    """Run-time options the source of ``cls`` (and its ragkit bases) reads."""
    import inspect
    import re

    keys: set[str] = set()
    for klass in cls.__mro__:
        if klass in (Operator, object) or not klass.__module__.startswith("ragkit"):
            continue
        src = inspect.getsource(klass)
        keys |= set(re.findall(r"self\.opt\(\s*state,\s*\"(\w+)\"", src))
        keys |= {"k"} if "self.k_for(" in src or "cut_k(self, state)" in src else set()
        keys |= {"filter"} if "self.filter_mask(" in src else set()
    return keys


def test_every_registered_operator_declares_exactly_the_options_it_reads():
    """Declaration and use cannot drift: an option is declared iff the class reads it, a param-backed
    one is a field of the parameter model, and each accepts the operator's own value."""
    from ragkit import registry
    from ragkit.options import PARAM, check_options

    for name in registry.names():
        cls = registry.get(name)
        declared = cls.declared_options()
        assert set(declared) == _reads(cls), (name, sorted(declared), sorted(_reads(cls)))
        op = cls(**cls.example)
        for key, how in declared.items():
            if how == PARAM:
                assert key in cls.Params.model_fields, f"{name}.{key} is declared PARAM but is not a parameter"
                value = getattr(op.params, key)
                assert check_options(op, {name: {key: value}}) == {name: {key: value}}
            else:
                assert callable(how), f"{name}.{key}: expected PARAM or a function, got {how!r}"


def test_filter_values_in_any_collection_mean_membership():
    import pandas as pd

    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    b = BM25(k=10).fit(Corpus.from_texts(["apple a", "apple b", "apple c"], year=[2019, 2020, 2021]))
    for want in (range(2019, 2021), {2019: 1, 2020: 2}.keys(), pd.Series([2019, 2020]), np.array([2019, 2020]),
                 (2019, 2020), {2019, 2020}):
        assert sorted(b.search(["apple"], filter={"year": want}).doc_ids[0].tolist()) == ["0", "1"]
    assert b.search(["apple"], filter={"year": 2021}).doc_ids[0].tolist() == ["2"]


def test_a_retrievers_filter_parameter_follows_the_filter_options_rules(tmp_path):
    from ragkit.errors import ConfigError, ParamError
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    with pytest.raises(ParamError, match=r"bm25\.filter: field 'year': \{'\$gte': 2001\} is not supported"):
        BM25(filter={"year": {"$gte": 2001}})
    with pytest.raises(ConfigError, match=r"pipeline\[0\]\.bm25\.filter: field 'year'"):
        Pipeline.from_yaml("pipeline:\n  - bm25: {k: 5, filter: {year: {$gte: 2001}}}\n")
    c = Corpus.from_texts(["apple a", "apple b", "apple c"], year=[2001, 2002, 2003])
    b = BM25(filter={"year": np.array([2001, 2002])[0]}).fit(c)  # a numpy value, e.g. from df.year.unique()
    assert b.params.filter == {"year": 2001} and "filter: {year: 2001}" in b.to_yaml()
    b.save(tmp_path / "b")
    many = BM25(filter={"year": np.array([2001, 2003])}).fit(c)
    assert many.params.filter == {"year": [2001, 2003]} and many.search(["apple"]).doc_ids[0].tolist() == ["0", "2"]


def test_a_corpus_refuses_lone_surrogates_before_any_work():
    """Text decoded with errors='surrogateescape' fitted, then failed to save with a raw UnicodeEncodeError."""
    bad = b"caf\xe9".decode("utf-8", "surrogateescape")
    with pytest.raises(DataError, match=r"Corpus.texts\[1\] \(document 'b'\) holds a lone surrogate '\\udce9' at "
                                        r"character 3"):
        Corpus.from_texts(["ok", bad], ids=["a", "b"])
    with pytest.raises(DataError, match=r"Corpus.ids\[0\]"):
        Corpus.from_texts(["ok"], ids=[bad])
    from ragkit._checks import _check_encodable  # scanned in chunks (a whole column joined and encoded: 5x its size)

    col = np.array(["a", "b\u00e9", "c", "d", "e\U0001f600", f"xy{bad}"], dtype=object)
    with pytest.raises(DataError, match=r"t\[5\] \(document 'f'\) holds a lone surrogate '\\udce9' at character 5"):
        _check_encodable(col, "t", np.array(list("abcdef"), dtype=object), chunk=2)
    _check_encodable(col[:5], "t", np.array(list("abcde"), dtype=object), chunk=2)
    with pytest.raises(DataError, match=r"Corpus.texts\[1\] \(document 'b'\) holds a lone surrogate"):
        Corpus.from_texts(["x\x00\x00\x00\x00", f"bad {bad}"], ids=["a", "b"])  # was an IndexError (NULs counted)


def test_operators_that_search_with_torch_import_it_at_fit_and_load(tmp_path, monkeypatch):
    """``ragkit eval --pipeline dense`` reported 2.1 s of search (143 q/s) where a second search took 0.08 s:
    the first search imported PyTorch (torch.topk), and --trace charged it to dense.  fit and load import it."""
    from ragkit import operator
    from ragkit.retrievers import BM25, Dense

    called = []
    monkeypatch.setattr(operator, "warm_torch", lambda: called.append(1))
    docs = Corpus.from_texts(["cells divide", "proteins fold", "genes express"])
    BM25().fit(docs)
    assert called == []
    dense = Dense(k=2).fit(docs)
    assert called == [1]
    dense.save(tmp_path / "d")
    Dense.load(tmp_path / "d")
    assert called == [1, 1]


def test_a_filter_on_a_field_of_mixed_kinds_warns_once(caplog):
    """A corpus may hold 2020 and "2020" in one field (it loads: a BEIR file can); a filter then finds one kind
    and misses the other, so its first use on that field says so, once."""
    corpus = Corpus.from_records([{"_id": "a", "text": "x", "metadata": {"year": 2020, "tag": "t"}},
                                  {"_id": "b", "text": "y", "metadata": {"year": "2020", "tag": "u"}},
                                  {"_id": "c", "text": "z", "metadata": {"year": None, "tag": "t"}}])
    with caplog.at_level("WARNING", logger="ragkit"):
        assert corpus.mask({"year": 2020}).tolist() == [True, False, False]
        assert corpus.mask({"year": "2020"}).tolist() == [False, True, False]
        assert corpus.mask({"tag": "t"}).tolist() == [True, False, True]
    notes = [r.getMessage() for r in caplog.records if r.name == "ragkit"]
    assert len(notes) == 1 and "'year': the field holds numbers and strings (e.g. 2020, '2020')" in notes[0], notes


def test_the_mixed_kinds_warning_reads_tuples_of_mixed_kinds():
    """A tuple value holding a string and a number, the only value of either kind, made the warning's example
    lookup raise StopIteration inside a generator: the filter failed with RuntimeError."""
    corpus = Corpus.from_texts(["x", "y"], tags=[("covid", 2020), "b"])
    assert corpus.mask({"tags": "b"}).tolist() == [False, True]
    # a tuple is a list, as a save writes it and a load reads it back (587e282): a filter matches its elements
    assert Corpus.from_texts(["x", "y"], tags=[("a", 1), ("b", 2)]).mask({"tags": "a"}).tolist() == [True, False]


def test_row_of_refuses_an_unknown_missing_option():
    """``row_of(ids, missing="Drop")`` (a typo) behaved as "raise": a DataError about the id, not the option."""
    c = Corpus.from_texts(["a", "b"], ids=["x", "y"])
    with pytest.raises(ParamError, match="missing must be 'raise' or 'drop', got 'Drop'"):
        c.row_of(["w"], missing="Drop")
    assert c.row_of(["w", "y"], missing="drop").tolist() == [1]
