"""Review fixes at stop 52: diversity cluster labels of any hashable kind (float labels were truncated, string
labels raised a bare ValueError), one spelling of ``storage_dtype`` everywhere (``fp16`` passed ``Generate``
but not ``ChunkKVCache`` or ``LocalGenerator``), and ``Sharded(retriever=BM25(k=5))`` (refused: only a YAML
node was taken)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ragkit.errors import ConfigError, DataError, ParamError
from ragkit.eval.diversity import cluster_entropy, distinct_clusters
from ragkit.types import Corpus, Ranking

# ---------------------------------------------------------------------- 1. cluster labels
_RANKS = [Ranking(np.array([0, 1, 2]), np.array([0.9, 0.8, 0.7], np.float32)),
          Ranking(np.array([2, 0]), np.array([0.9, 0.8], np.float32))]
_MEASURES = (distinct_clusters, cluster_entropy)


def _both(labels):
    return [m(_RANKS, labels, 3).tolist() for m in _MEASURES]


@pytest.mark.parametrize("labels, said", [(np.array([0.2, 0.9, 1.7]), "float64 and document 0's is 0.2"),
                                          ([0.0, 0.5, 1.0], "float64 and document 1's is 0.5"),
                                          (np.array([1.0, np.nan, 2.0]), "float64 and document 1's is nan"),
                                          (np.array([0.0, np.inf, 1.0], np.float32),
                                           "float32 and document 1's is inf")])
def test_float_labels_that_are_not_whole_numbers_are_refused_not_truncated(labels, said):
    """Old code: 0.2, 0.9, 1.7 were truncated to the clusters 0, 0, 1 (2 distinct clusters, silently)."""
    for measure in _MEASURES:
        with pytest.raises(DataError, match=f"diversity: labels are {said}, not a whole number; expected cluster "
                                            "labels"):
            measure(_RANKS, labels, 3)


def test_whole_float_labels_are_the_integers_they_are():
    assert _both(np.array([0.0, 1.0, 1.0])) == _both(np.array([0, 1, 1]))


@pytest.mark.parametrize("labels", [["a", "b", "a"], np.array(["a", "b", "a"]), np.array([b"a", b"b", b"a"]),
                                    [None, "x", None], np.array([("t", 1), ("t", 2), ("t", 1)] + [None], object)[:3],
                                    [-1, 5, -1], [True, False, True], [2**63, 2**64, 2**63]])
def test_any_hashable_labels_are_cluster_labels(labels):
    """Old code: strings raised ValueError (invalid literal for int()), -1 a DataError, 2**63 an OverflowError."""
    assert _both(labels) == _both(np.array([0, 1, 0]))


def test_labels_numpy_would_coerce_are_read_as_the_values_given():
    """A list of ints past int64 becomes float64 in numpy (2**63 and 2**63 + 1 one value); [1, "1"] becomes
    strings (one label): both are two clusters."""
    assert distinct_clusters(_RANKS, [0, 2**63, 2**63 + 1], 3).tolist() == [3.0, 2.0]
    assert distinct_clusters(_RANKS, [1, "1", 1], 3).tolist() == [2.0, 1.0]


@pytest.mark.parametrize("labels, said", [
    ([[0, 1], [2], [3]], r"labels hold a list \(\[0, 1\]\), which is not hashable"),
    (np.array([1, float("nan"), "a"], object), "labels hold nan; expected cluster labels, each equal to itself"),
    (np.array([1, 2, 3], complex), "labels of dtype complex128; expected cluster labels"),
    (np.array([[0, 1, 2]]), r"labels of shape \(1, 3\); expected a 1-d array"),
])
def test_labels_that_name_no_cluster_are_a_data_error(labels, said):
    for measure in _MEASURES:
        with pytest.raises(DataError, match=said):
            measure(_RANKS, labels, 3)


# ---------------------------------------------------------------------- 2. storage_dtype spellings
@pytest.mark.parametrize("given, canonical", [("f16", "float16"), ("fp16", "float16"), ("half", "float16"),
                                              ("FP16", "float16"), (np.float16, "float16"), ("fp32", "float32"),
                                              ("f32", "float32"), ("float32", "float32")])
def test_storage_dtype_is_spelled_as_generate_reads_it(given, canonical):
    """Old code: Generate(storage_dtype="f16") was float16, but ChunkKVCache and LocalGenerator refused "f16"."""
    from ragkit.caches import ChunkKVCache
    from ragkit.generators import LocalGenerator
    from ragkit.generators.operator import Generate

    assert Generate(storage_dtype=given).params.storage_dtype == canonical
    assert ChunkKVCache("m", "t", storage_dtype=given).storage_dtype == canonical
    assert LocalGenerator(storage_dtype=given).storage_dtype == canonical  # (constructing loads nothing)


def test_a_bad_storage_dtype_says_the_same_in_both():
    from ragkit.caches import ChunkKVCache
    from ragkit.generators import LocalGenerator

    said = []
    for make in (lambda: ChunkKVCache("m", "t", storage_dtype="int8"), lambda: LocalGenerator(storage_dtype="int8")):
        with pytest.raises(ParamError) as raised:
            make()
        assert raised.value.path == "storage_dtype"
        said.append(str(raised.value).split(": ", 1)[1])
    assert said[0] == said[1]
    assert said[0].startswith("storage_dtype='int8'; expected 'float32' or 'float16' (also spelled")
    assert "fp16" in said[0]


# ---------------------------------------------------------------------- 3. Sharded(retriever=an operator)
def _corpus() -> Corpus:
    return Corpus.from_texts([f"protein {i} binds receptor {i % 3} in cell line {i % 5}" for i in range(12)])


def test_sharded_takes_an_unfitted_retriever_as_its_node(tmp_path):
    """Old code: ParamError "sharded.retriever: expected a mapping, got BM25(k=5)"."""
    from ragkit.operator import Operator
    from ragkit.pipelines import load_yaml
    from ragkit.retrievers import BM25
    from ragkit.scale import Sharded

    op = Sharded(retriever=BM25(k=5), n_shards=2, backend="local")
    assert op == Sharded(retriever={"bm25": {"k": 5}}, n_shards=2, backend="local")
    assert op.params.retriever == {"bm25": {"k": 5}} and op.params.k == 5
    json.dumps(op.params.model_dump())  # the parameters hold the node, not the operator
    assert load_yaml(op.to_yaml()).steps[0] == op
    assert op.params.updated(retriever=BM25(b=0.5)).retriever == {"bm25": {"b": 0.5}}
    corpus = _corpus()
    op.fit(corpus)
    op.save(tmp_path / "s")
    back = Operator.load(tmp_path / "s")
    assert back == op
    q = ["protein receptor 1"]
    assert back.search(q).doc_ids[0].tolist() == op.search(q).doc_ids[0].tolist()


def test_sharded_refuses_a_fitted_retriever_and_a_composite():
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import BM25
    from ragkit.scale import Sharded

    with pytest.raises(ParamError, match=r"sharded\.retriever: got a fitted BM25\(k=5\): Sharded fits a new copy of "
                                         r"it on each shard, so what it learned .* would be lost; pass it unfitted "
                                         r"\(BM25\(k=5\)\) or as its node \{'bm25': \{'k': 5\}\}") as raised:
        Sharded(retriever=BM25(k=5).fit(_corpus()))
    assert raised.value.path == "sharded.retriever"
    with pytest.raises(ParamError, match=r"expected one retriever operator .* got a Pipeline, "
                                         r"Pipeline\(\[BM25\(\)\]\)"):
        Sharded(retriever=Pipeline([BM25()]))


@pytest.mark.parametrize("given", ["bm25", None, [{"bm25": {}}]])
def test_sharded_retriever_of_another_type_says_how_to_write_it(given):
    from ragkit.scale import Sharded

    with pytest.raises(ParamError, match=r"sharded\.retriever: expected a mapping naming one retriever \(write it as "
                                         r"\{'bm25': \{'k': 5\}\} or pass BM25\(k=5\)\), got "):
        Sharded(retriever=given)


def test_sharded_retriever_in_yaml_says_how_to_write_it_in_yaml():
    from ragkit.pipelines import load_yaml

    with pytest.raises(ConfigError, match=r"pipeline\[0\]\.sharded\.retriever: expected a mapping naming one "
                                          r"retriever \(write it as \{bm25: \{k: 5\}\}\), got 'bm25'"):
        load_yaml("pipeline:\n- sharded: {retriever: bm25}\n")


# ---------------------------------------------------------------------- review of 32772a0: tuple labels, pd.NA
@pytest.mark.parametrize("labels", [[("bio", 1), ("chem", 2), ("bio", 1)], (("bio", 1), ("chem", 2), ("bio", 1)),
                                    [("bio",), ("chem",), ("bio",)], [("bio", 1), ("chem",), ("bio", 1)]])
def test_a_list_of_tuples_is_one_tuple_label_per_document(labels):
    """Old code: equal-length tuples were read by numpy as a 2-d array and refused ("labels of shape (3, 2)"),
    while ragged ones were taken."""
    assert _both(labels) == _both(np.array([0, 1, 0]))


def test_a_list_of_equal_length_lists_is_refused_as_unhashable_and_a_2d_array_as_2d():
    """Old code: "labels of shape (3, 1)" for the list; a 2-d array stays refused as 2-d."""
    with pytest.raises(DataError, match=r"labels hold a list \(\[0\]\), which is not hashable"):
        distinct_clusters(_RANKS, [[0], [1], [0]], 3)
    with pytest.raises(DataError, match=r"labels of shape \(3, 2\); expected a 1-d array"):
        distinct_clusters(_RANKS, np.array([("bio", 1), ("chem", 2), ("bio", 1)]), 3)


def _missing_labels():
    pd = pytest.importorskip("pandas")
    return [([1, pd.NA, 2], "<NA>"), (pd.Series(["a", None, "b"], dtype="string"), "<NA>"),
            (np.array(["a", pd.NA, "b"], object), "<NA>"), ([1, pd.NaT, 2], "NaT"), ([1.5, float("nan"), "a"], "nan")]


@pytest.mark.parametrize("case", range(5))
def test_missing_labels_pd_na_included_are_a_data_error(case):
    """Old code: pd.NA raised a bare TypeError ("boolean value of NA is ambiguous"); NaN and NaT were refused."""
    labels, shown = _missing_labels()[case]
    for measure in _MEASURES:
        with pytest.raises(DataError, match=f"diversity: labels hold {shown}; expected cluster labels, each equal to "
                                            r"itself \(a missing value, NaN, NaT or pd.NA, is no label"):
            measure(_RANKS, labels, 3)


def test_none_stays_a_label_of_its_own():
    assert _both([None, "x", None]) == _both(np.array([0, 1, 0]))


def test_sharded_refuses_an_empty_composite_as_a_composite():
    """Old code: Pipeline([]) has no children, so it missed the composite check and was refused as "not a registered
    operator (no operator is registered as '')"."""
    from ragkit.pipelines import Pipeline
    from ragkit.scale import Sharded

    with pytest.raises(ParamError, match=r"sharded\.retriever: expected one retriever operator \(such as BM25\(k=5\)\) "
                                         r"to run on each shard, got a Pipeline, Pipeline\(\[\]\); shard each "
                                         "retriever on its own"):
        Sharded(retriever=Pipeline([]))
