"""Training on one's own judged collection (a reviewer's run: 300 documents, 44 graded queries).

Qrels naming other document ids, queries judged only 0, train given as plain qrels, queries of every
split with qrels of one, a threshold fitted on one query, qrels as a DataFrame or a file: model-free
(BM25 and a hashed encoder) on a tiny corpus built here.
"""

from __future__ import annotations

import logging

import pytest
from conftest import HashedEncoder

from ragkit import Corpus, Queries, TrainSet
from ragkit.encoders import register_encoder
from ragkit.errors import DataError
from ragkit.pipelines import Pipeline
from ragkit.retrievers import BM25
from ragkit.types import usable_query_ids

pd = pytest.importorskip("pandas")

TOPICS = ["stem cells", "protein folding", "vitamin d", "bone density", "insulin resistance", "gut bacteria",
          "blood pressure", "tumour growth", "sleep apnea", "heart failure", "liver enzymes", "lung fibrosis"]
#: learned RRF over two BM25s: learns from judgements, needs no model
RRF_YAML = ("pipeline:\n  - parallel:\n      branches: [{bm25: {k: 10}}, {bm25: {k: 10, k1: 1.5}}]\n"
            "      fuse: {rrf: {learn: true}}\n")
HASHED = "train-review-hashed"


def _corpus() -> Corpus:
    """36 documents doc-0..doc-35, three per topic (doc-3t is topic t's best match)."""
    texts = [f"{t} {w}" for t in TOPICS for w in ("study in patients", "trial results", "review of mechanisms")]
    return Corpus(ids=[f"doc-{i}" for i in range(len(texts))], texts=texts)


def _queries(n: int = len(TOPICS)) -> Queries:
    return Queries([f"myq-{i}" for i in range(n)], [f"what about {t}?" for t in TOPICS[:n]])


def _qrels(ids: list[str]) -> dict[str, dict[str, int]]:
    """myq-i judges doc-3i relevant (2), doc-3i+1 partly (1), another topic's document not (0)."""
    out = {}
    for q in ids:
        i = int(q.split("-")[1])
        out[q] = {f"doc-{3 * i}": 2, f"doc-{3 * i + 1}": 1, f"doc-{(3 * i + 9) % 36}": 0}
    return out


def _renamed(rel: dict[str, int]) -> dict[str, int]:
    """The same judgements under another id scheme (doc-172 -> DOC_172): none is in the corpus."""
    return {d.replace("doc-", "DOC_"): g for d, g in rel.items()}


# ------------------------------------------------------------------ 1. judgements of documents not in the corpus
def test_usable_queries_have_a_relevant_document_in_the_corpus():
    corpus, queries = _corpus(), _queries(5)
    qrels = _qrels(queries.ids)
    qrels["myq-1"] = _renamed(qrels["myq-1"])          # relevant documents all missing
    qrels["myq-2"] = {"doc-6": 0, "doc-7": 0}          # judged, nothing relevant
    qrels["myq-3"] = {"doc-9": 1, "DOC_10": 2}         # one relevant document of the corpus is enough
    del qrels["myq-4"]                                 # unjudged
    train = TrainSet(queries, qrels)
    assert train.usable() == ["myq-0", "myq-1", "myq-3"]  # any document
    assert train.usable(corpus) == ["myq-0", "myq-3"]
    assert train.usable(corpus.ids) == ["myq-0", "myq-3"]  # the corpus's ids as an array
    assert train.usable(corpus, min_grade=2) == ["myq-0"]
    assert usable_query_ids(["myq-3", "myq-0", "nope"], qrels, corpus) == ["myq-3", "myq-0"]
    assert train.judged().ids == ["myq-0", "myq-1", "myq-2", "myq-3"]


def test_qrels_of_another_id_scheme_for_most_queries_are_refused_and_for_some_warned(caplog):
    """31 of 32 training queries judged DOC_172 for doc-172: fit learned from the one left, silently (a fitted
    dense | cosine_adapter then returned nothing for every query).  More than half lost to another spelling
    of the corpus's ids is now refused, fewer warned about, both naming counts and ids."""
    corpus, queries = _corpus(), _queries()
    qrels = _qrels(queries.ids)
    most = {q: (rel if q in ("myq-0", "myq-1") else _renamed(rel)) for q, rel in qrels.items()}
    pipe = Pipeline.from_yaml(RRF_YAML)
    with pytest.raises(DataError, match=r"^fit: 10 of the 12 training queries judged relevant \('myq-2', 'myq-3', "
                                        r"'myq-4', \.\.\.\) have none of their relevant documents in the corpus of 36 "
                                        r"documents \(they judge 'DOC_10', .*; the corpus holds 'doc-0', .*\); "
                                        r"learning would read 2 queries\. The qrels spell the corpus's document "
                                        r"ids another way \('DOC_10' for 'doc-10'"):
        pipe.fit(corpus, TrainSet(queries, most))
    assert not pipe.steps[0].branches[0].is_fitted  # refused before anything was fitted
    some = {q: (_renamed(rel) if q in ("myq-3", "myq-5") else rel) for q, rel in qrels.items()}
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        Pipeline.from_yaml(RRF_YAML).fit(corpus, TrainSet(queries, some))
    said = [r.getMessage() for r in caplog.records if r.name == "ragkit" and "judged relevant" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("fit: 2 of the 12 training queries judged relevant ('myq-3', "
                                                 "'myq-5') have none of their relevant documents in the corpus")
    assert "learned as unjudged (10 usable queries)" in said[0]


def test_a_learned_fuser_counts_usable_queries_not_judged_ones():
    """Learned RRF's "at least 2 judged queries" counted queries judged only 0 and queries whose relevant
    documents are missing: cross-validation ran on one query that could teach anything."""
    corpus, queries = _corpus(), _queries(4)
    qrels = _qrels(queries.ids)
    qrels["myq-1"] = _renamed(qrels["myq-1"])
    qrels["myq-2"] = {"doc-6": 0}
    qrels["myq-3"] = {"doc-9": 0, "doc-10": 0}
    with pytest.raises(DataError, match=r"1 usable \(with a relevant document in the corpus\)"):
        Pipeline.from_yaml(RRF_YAML).fit(corpus, TrainSet(queries, qrels))


def test_learned_weights_ignore_queries_that_score_zero_for_every_weight():
    """Queries judged only 0 (or of missing documents) add nDCG 0 to every weight: leaving them out keeps
    the weights on the usable queries' folds and the estimates theirs."""
    corpus, queries = _corpus(), _queries()
    qrels = _qrels(queries.ids)
    clean = Pipeline.from_yaml(RRF_YAML).fit(corpus, TrainSet(queries[:8], {q: qrels[q] for q in queries.ids[:8]}))
    noisy = dict(qrels)
    for q in queries.ids[8:]:
        noisy[q] = {"doc-0": 0}
    learned = Pipeline.from_yaml(RRF_YAML).fit(corpus, TrainSet(queries, noisy))
    a, b = clean.steps[0].fuse.learned_, learned.steps[0].fuse.learned_
    assert a == b and a["cv_ndcg@10"] > 0.5


# ------------------------------------------------------------------ 2. train that is no TrainSet
@pytest.mark.parametrize("train", [{"myq-0": {"doc-0": 1}}, ({"myq-0": "stem cells"}, {"myq-0": {"doc-0": 1}})])
def test_train_that_is_no_trainset_says_how_to_build_one(train):
    with pytest.raises(TypeError, match=r"^bm25\.fit: train must be a ragkit TrainSet, got (dict|tuple); build one "
                                        r"with TrainSet\(queries, qrels\)"):
        BM25().fit(_corpus(), train=train)


def test_ray_fit_refuses_train_that_is_no_trainset_before_ray():
    from ragkit.scale import fit_pipeline

    with pytest.raises(TypeError, match=r"train must be a ragkit TrainSet, got dict; build one with TrainSet"):
        fit_pipeline(Pipeline.from_yaml(RRF_YAML), _corpus(), {"myq-0": {"doc-0": 1}})  # type: ignore[arg-type]


@pytest.mark.parametrize("how", ["qrels", "pair", "records"])
def test_a_pipeline_fit_with_train_that_is_no_trainset_says_what_it_got(how):
    """pipe.fit(corpus, train=qrels) raised AttributeError: 'dict' object has no attribute 'check_corpus'."""
    corpus, queries = _corpus(), _queries()
    qrels = _qrels(queries.ids)
    args = {"qrels": (corpus, qrels), "pair": (corpus, (queries, qrels)),
            "records": ([{"_id": "doc-0", "text": "x"}], TrainSet(queries, qrels))}[how]
    with pytest.raises(TypeError, match=r"(train must be a ragkit TrainSet, got (dict|tuple); build one with "
                                        r"TrainSet\(queries, qrels\)|expects a ragkit Corpus, got list)"):
        Pipeline.from_yaml(RRF_YAML).fit(*args)


# ------------------------------------------------------------------ 3. queries given without judgements
def test_unjudged_training_queries_are_not_recorded_as_learned_from():
    """TrainSet(all queries, train qrels) marked the unjudged test queries as learned from, and ragkit eval
    --split test then refused the fitted pipeline."""
    corpus, queries = _corpus(), _queries()
    train_ids, test_ids = queries.ids[:8], queries.ids[8:]
    pipe = Pipeline.from_yaml(RRF_YAML).fit(corpus, TrainSet(queries, _qrels(train_ids)))
    assert pipe.learned_from(queries[8:]) == []
    assert pipe.learned_from(queries) == train_ids
    assert test_ids == ["myq-8", "myq-9", "myq-10", "myq-11"]


def test_a_query_bank_of_training_queries_records_every_one_of_them():
    """dbnorm's query bank reads every training query's text, judged or not: all are recorded."""
    register_encoder(HASHED, HashedEncoder(f"{HASHED}-v1", 16), replace=True)
    corpus, queries = _corpus(), _queries()
    pipe = Pipeline.from_yaml(f"pipeline:\n  - dense: {{k: 10, model: {HASHED}}}\n"
                              f"  - dbnorm: {{model: {HASHED}, query_bank: train}}\n")
    pipe.fit(corpus, TrainSet(queries, _qrels(queries.ids[:3])))
    assert pipe.learned_from(queries) == queries.ids


# ------------------------------------------------------------------ 4. cosine_adapter on too few queries
def _adapter_pipe(extra: str = "") -> Pipeline:
    register_encoder(HASHED, HashedEncoder(f"{HASHED}-v1", 16), replace=True)
    return Pipeline.from_yaml(f"pipeline:\n  - dense: {{k: 36, model: {HASHED}}}\n"
                              f"  - cosine_adapter: {{model: {HASHED}, max_iter: 50{extra}}}\n")


def _thin_warnings(caplog) -> list[str]:  # noqa: ANN001
    return [r.getMessage() for r in caplog.records if r.name == "ragkit" and "fitted on little" in r.getMessage()]


def test_a_threshold_chosen_on_the_one_training_query_is_warned_about(caplog):
    """Trained on one query, the adapter chose its threshold on that query's own relevant documents
    (threshold 0.998: held-out queries kept 2-12 of 100 candidates), without a word."""
    corpus, queries = _corpus(), _queries()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        pipe = _adapter_pipe().fit(corpus, TrainSet(queries[:1], _qrels(queries.ids[:1])))
    said = _thin_warnings(caplog)
    assert pipe.steps[1].info_["held_out"] is False
    assert len(said) == 1
    assert "1 usable training query (with a relevant document in the corpus; at least 10 recommended)" in said[0]
    assert "2 relevant candidates retrieved (at least 5 recommended)" in said[0]
    assert "a threshold chosen on the queries it was fitted on (too few to hold any out)" in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):  # an explicit threshold: nothing is chosen
        _adapter_pipe(", threshold: 0.5").fit(corpus, TrainSet(queries[:1], _qrels(queries.ids[:1])))
    said = _thin_warnings(caplog)
    assert len(said) == 1 and "1 usable training query" in said[0] and "threshold chosen" not in said[0]


def test_queries_whose_relevant_documents_are_missing_are_not_learned_as_no_answer_queries(caplog):
    """A query whose relevant documents are none of the corpus's was kept as a judged "no answer" query:
    every candidate of it a negative.  It is left out now; a query judged only 0 stays."""
    corpus, queries = _corpus(), _queries()
    qrels = _qrels(queries.ids)
    qrels["myq-4"] = _renamed(qrels["myq-4"])  # left out
    qrels["myq-5"] = {"doc-0": 0}              # kept: nothing relevant
    del qrels["myq-6"]                         # left out: unjudged
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        ca = _adapter_pipe().fit(corpus, TrainSet(queries, qrels)).steps[1]
    used = ca.info_["train_queries"]  # (every usable query: the threshold is chosen on their out-of-fold scores)
    assert used == 10
    assert any("1 of the 10 training queries judged relevant ('myq-4')" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ 6. qrels and queries in usual shapes
def test_trainset_takes_a_qrels_dataframe_a_qrels_file_and_a_series_of_queries(tmp_path):
    queries = _queries()
    qrels = _qrels(queries.ids)
    rows = [(q, d, g) for q, rel in qrels.items() for d, g in rel.items()]
    df = pd.DataFrame(rows, columns=["query-id", "corpus-id", "score"])
    assert TrainSet(queries, df).qrels == qrels
    path = tmp_path / "train.tsv"
    path.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in rows))
    assert TrainSet(queries, str(path)).qrels == qrels
    assert TrainSet(queries, path).qrels == qrels
    series = pd.Series(queries.texts, index=queries.ids)
    assert TrainSet(series, qrels).queries == queries
    with pytest.raises(DataError, match=r"the qrels DataFrame needs a column for each of the query id, the document id "
                                        r"and the grade .*got columns \['q', 'd', 'g'\].*df\.rename\(columns="
                                        r"\{'q': 'query-id', 'd': 'corpus-id', 'g': 'score'\}\)"):
        TrainSet(queries, df.set_axis(["q", "d", "g"], axis=1))
    with pytest.raises(DataError, match=r"judges document 'doc-0' for query 'myq-0' twice, 2 and 0"):
        TrainSet(queries, pd.concat([df, pd.DataFrame([("myq-0", "doc-0", 0)], columns=df.columns)]))
    with pytest.raises(DataError, match=r"file not found"):
        TrainSet(queries, str(tmp_path / "nope.tsv"))
    with pytest.raises(DataError, match=r"needs the query ids as its index .*RangeIndex.*set_index\('_id'\)\['text'\]"):
        TrainSet(pd.Series(queries.texts), qrels)
    with pytest.raises(DataError, match=r"from a DataFrame: Queries\(df\['id'\]\.tolist\(\), df\['text'\]\.tolist"):
        TrainSet(pd.DataFrame({"id": queries.ids, "text": queries.texts}), qrels)


def test_a_sample_of_the_corpus_warns_and_only_another_spelling_of_its_ids_is_refused(caplog):
    """Refusing whenever more than half the judged queries lost their relevant documents refused fitting on
    a sample of the corpus (261 of 809 SciFact train queries kept theirs, with the right ids): that is a
    warning; the refusal is for qrels that spell the corpus's ids another way, and names both spellings."""
    import logging

    corpus, queries = _corpus(), _queries()
    sample = corpus.subset(list(range(9)))  # topics 0..2 only: most queries lose their documents
    ts = TrainSet(queries, _qrels(queries.ids))
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        ts.check_corpus(sample)
    assert any("have none of their relevant documents" in r.getMessage() for r in caplog.records)
    respelt = {q: ({d.replace("doc-", "DOC_0"): g for d, g in rel.items()} if i > 2 else rel)
               for i, (q, rel) in enumerate(_qrels(queries.ids).items())}
    with pytest.raises(DataError, match=r"spell the corpus's document ids another way \('DOC_0\d+' for 'doc-\d+'"):
        TrainSet(queries, respelt).check_corpus(corpus)


def test_a_series_of_queries_indexed_by_integer_ids_keeps_them():
    """pd.read_json(queries.jsonl).set_index('_id')['text'] holds int64 ids on SciFact: refused as 'indexed by
    row number' (the advice was what the user had done); its ids are the index as strings."""
    import pandas as pd

    queries = pd.Series(["what about a?", "what about b?"], index=pd.Index([7, 12], dtype="int64", name="_id"))
    ts = TrainSet(queries, {"7": {"doc-0": 1}, "12": {"doc-3": 1}})
    assert list(ts.queries.ids) == ["7", "12"]
    with pytest.raises(DataError, match="indexed by row number"):
        TrainSet(pd.Series(["x", "y"]), {"0": {"doc-0": 1}})


def test_a_sampled_series_of_queries_is_not_read_by_row_number():
    """A split of a queries DataFrame read with pandas (``df.sample(frac=0.8)``, sklearn's train_test_split)
    keeps the row numbers as an integer index: TrainSet read them as query ids, and on SciFact (ids are small
    integers too) 382 of 383 judged queries learned from another query's text, silently.  An integer index
    is ids only when named (``set_index('_id')``); ``search`` reads the same Series the same way."""
    import pandas as pd

    from ragkit.types import ids_and_texts

    df = pd.DataFrame({"_id": [1053, 349, 82], "text": ["q a", "q b", "q c"]}, index=[612, 202, 55])
    with pytest.raises(DataError, match=r"indexed by row number \(Index \[612, 202, 55\], name None\).*astype\(str\)"):
        TrainSet(df["text"], {"1053": {"doc-0": 1}, "612": {"doc-1": 1}})
    named = df.set_index("_id")["text"]
    assert list(TrainSet(named, {"1053": {"doc-0": 1}}).queries.ids) == ["1053", "349", "82"]
    assert ids_and_texts(named, "q")[0] == ["1053", "349", "82"] and ids_and_texts(df["text"], "q")[0] is None
