"""BM25 review s53: set_collection refuses what a save's load refuses (avgdl inf / NaN / a bool)."""

from __future__ import annotations

import math
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from ragkit.errors import ArtifactError, DataError, ParamError
from ragkit.retrievers import BM25
from ragkit.retrievers.bm25 import Tokenizer
from ragkit.types import Corpus

TEXTS = ["red apples and pears", "green pears", "red cars", "blue sky over the sea", "apples of the sky"]


@pytest.mark.parametrize("avgdl", [math.inf, -math.inf, math.nan, 0.0, -1.0, True, False, np.bool_(True),
                                   np.float32("inf"), "3.0", None, 10**400, np.longdouble("1e-4000")])
def test_set_collection_refuses_an_avgdl_a_load_refuses(avgdl: object) -> None:
    """Was: avgdl=inf (or True) was taken, and the save it made held an avgdl its load refused; an int too large
    for a float raised OverflowError, a longdouble too small for one was taken as 0.0 (then weighed as 1.0)."""
    bm = BM25(k=3).fit(Corpus.from_texts(TEXTS))
    with pytest.raises(DataError, match=r"^bm25\.set_collection: expected avgdl a finite number > 0 \(the average "
                                        r"document length\), got .*\("):
        bm.set_collection(bm.idf_, avgdl)  # type: ignore[arg-type]
    assert bm.collection_ is None


@pytest.mark.parametrize("avgdl", [3.0, 3, np.float32(2.5), np.int64(4), np.float64(1e-3)])
def test_set_collection_takes_a_finite_positive_avgdl_and_its_save_loads(tmp_path: Path, avgdl: object) -> None:
    bm = BM25(k=3).fit(Corpus.from_texts(TEXTS))
    bm.set_collection(bm.idf_ * 1.5, avgdl)  # type: ignore[arg-type]
    bm.save(tmp_path / "bm")
    back = BM25.load(tmp_path / "bm")
    assert back.collection_ is not None and back.collection_["avgdl"] == float(avgdl)  # type: ignore[arg-type]
    a, b = bm.search(["red sky"]), back.search(["red sky"])
    assert a.doc_ids[0].tolist() == b.doc_ids[0].tolist() and np.array_equal(a.scores[0], b.scores[0])


def test_set_collection_names_a_wrong_idf() -> None:
    bm = BM25(k=3).fit(Corpus.from_texts(TEXTS))
    n = len(bm.vocab_)
    with pytest.raises(DataError, match=rf"^bm25\.set_collection: expected {n} finite idf values .*got idf of "
                                        rf"shape \({n - 1},\)$"):
        bm.set_collection(bm.idf_[:-1], 3.0)
    with pytest.raises(DataError, match=r"holding values that are not finite$"):
        bm.set_collection(np.where(np.arange(n) == 0, np.nan, bm.idf_), 3.0)


@pytest.mark.parametrize(("kwargs", "arg", "given", "choices"), [
    ({"stopwords": "english"}, "stopwords", "'english'", "'lucene', 'none'"),
    ({"stopwords": "Lucene"}, "stopwords", "'Lucene'", "'lucene', 'none'"),
    ({"stopwords": None}, "stopwords", "None", "'lucene', 'none'"),
    ({"split": "regex"}, "split", "'regex'", "'alnum', 'unicode', 'whitespace'"),
    ({"split": "Unicode"}, "split", "'Unicode'", "'alnum', 'unicode', 'whitespace'"),
])
def test_tokenizer_refuses_a_value_outside_the_params_choices(kwargs: dict[str, object], arg: str, given: str,
                                                               choices: str) -> None:
    """Was: Tokenizer(stopwords="english") removed no stopword, split="regex" split as alnum, both silently, and
    stemmer="porter2" raised PyStemmer's KeyError "Stemming algorithm 'porter2' not found"."""
    field = "tokenizer" if arg == "split" else arg
    with pytest.raises(ParamError, match=rf"^Tokenizer: {arg} {re.escape(given)} is not one of "
                                         rf"{re.escape(choices)} \(the choices of BM25Params\.{field}\)$") as e:
        Tokenizer(**kwargs)  # type: ignore[arg-type]
    assert e.value.path == f"Tokenizer.{arg}"


@pytest.mark.parametrize("stemmer", ["porter2", "Porter", "German", "", None, 3])
def test_tokenizer_refuses_a_stemmer_pystemmer_lacks_listing_its_algorithms(stemmer: object) -> None:
    """Was (before the choices were checked): stemmer="porter2" raised PyStemmer's KeyError "Stemming algorithm
    'porter2' not found"."""
    import Stemmer

    algorithms = ", ".join(map(repr, sorted(Stemmer.algorithms())))
    assert "'german'" in algorithms
    with pytest.raises(ParamError, match=rf"^Tokenizer: stemmer {re.escape(repr(stemmer))} is not 'none' nor one of "
                                         rf"PyStemmer's algorithms \({re.escape(algorithms)}\); BM25 and PRF take "
                                         r"'porter', 'english', 'none' \(the choices of BM25Params\.stemmer\)$") as e:
        Tokenizer(stemmer=stemmer)  # type: ignore[arg-type]
    assert e.value.path == "Tokenizer.stemmer"


def test_tokenizer_takes_any_pystemmer_algorithm() -> None:
    """Was: Tokenizer(stopwords="none", stemmer="german") (any PyStemmer algorithm), which worked before the
    choices were checked, was refused for not being one of BM25Params' ('porter', 'english', 'none')."""
    import Stemmer

    assert Tokenizer("none", "german")(["Die Katzen laufen"]) == [["die", "katz", "lauf"]]
    assert Tokenizer("lucene", "french", "unicode")(["les chats mangeaient"]) == [["le", "chat", "mang"]]
    for name in Stemmer.algorithms():
        tok = Tokenizer("none", name, "unicode")
        assert tok.stemmer_name == name and len(tok(["word"])[0]) == 1
    back = pickle.loads(pickle.dumps(Tokenizer("none", "german")))  # (the stemmer rebuilt from its name)
    assert back(["Katzen"]) == [["katz"]]
    with pytest.raises(ParamError, match=r"stemmer"):  # BM25 (and PRF, the same params) keep BM25Params' choices
        BM25(stemmer="german")  # type: ignore[arg-type]


def test_tokenizer_positional_arguments_are_stopwords_stemmer_split() -> None:
    """Tokenizer("porter") is stopwords="porter": refused (it removed no stopword), not taken as a stemmer."""
    with pytest.raises(ParamError, match=r"^Tokenizer: stopwords 'porter' is not one of"):
        Tokenizer("porter")


def test_tokenizer_choices_are_the_params_choices() -> None:
    """Every combination of BM25Params' values makes a Tokenizer (one source of the choices)."""
    from typing import get_args

    from ragkit.retrievers.bm25 import BM25Params

    fields = BM25Params.model_fields
    for stop in get_args(fields["stopwords"].annotation):
        for stem in get_args(fields["stemmer"].annotation):
            for split in get_args(fields["tokenizer"].annotation):
                assert Tokenizer(stop, stem, split)(["The cats"])[0][-1] in {"cat", "cats"}
    assert Tokenizer("lucene", "none")(["the x"]) == [["x"]]
    assert Tokenizer("none", "porter", "whitespace")(["x"]) == [["x"]]


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused_naming_the_weights_only(tmp_path: Path, mmap: bool, bad: float) -> None:
    """Was: "corrupt BM25 arrays: document ids 0..4 (the corpus has 5), weights that are not finite ...": the ids
    (sound, checked before) were named, and read whole again for the message."""
    BM25(k=3).fit(Corpus.from_texts(TEXTS)).save(tmp_path / "bm")
    w = np.load(tmp_path / "bm" / "weights.npy")
    w[[1, 3]] = bad
    np.save(tmp_path / "bm" / "weights.npy", w)
    with pytest.raises(ArtifactError) as e:
        BM25.load(tmp_path / "bm", mmap=mmap, verify=False)
    msg = str(e.value)
    assert "document ids" not in msg and "corpus" not in msg
    assert msg == (f"{tmp_path / 'bm' / 'weights.npy'}: a value {float(bad)!r} at posting 1 (2 of {len(w):,} not "
                   "finite; expected one float64 weight per posting of tf_indices.npy, finite); save the index again")


def _column_order(vocab: dict[str, int]) -> list[str]:
    return sorted(vocab, key=vocab.__getitem__)


@pytest.mark.parametrize("mmap", [False, True])
def test_terms_are_the_column_order_after_fit_add_remove_and_load(tmp_path: Path, mmap: bool,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """terms() returns the vocabulary in its own (insertion) order: that order must be the columns' after every
    edit.  An add appends terms after the fitted ones ("aardvark" after "zeta": not alphabetical), as does a fit
    of several chunks; remove renumbers the kept terms."""
    from ragkit.retrievers import bm25 as bm25_mod

    monkeypatch.setattr(bm25_mod, "COUNT_CHUNK_CHARS", 12)  # (a fit of several chunks: later ones append terms)
    bm = BM25(k=3).fit(Corpus.from_texts(["zeta alpha", "beta gamma", "alpha delta", "omicron aardvark"]))
    seen = []

    def check() -> None:
        terms = bm.terms()
        assert terms == _column_order(bm.vocab_) and [bm.vocab_[t] for t in terms] == list(range(len(terms)))
        assert len(terms) == bm._counts.shape[0]
        seen.append(terms)

    check()
    bm.add(Corpus.from_texts(["omega aardvark", "yak"], ids=["x", "y"]))
    check()
    bm.remove(["1", "x"])
    check()
    bm.save(tmp_path / "bm")
    bm = BM25.load(tmp_path / "bm", mmap=mmap)
    check()
    assert seen[1] != sorted(seen[1]) and seen[2] != sorted(seen[2])  # (an order the sort did not already give)
    assert seen[3] == seen[2]
    # each term's document frequency is its column's: a query finds the documents holding it
    r = bm.search(["aardvark", "yak", "zeta"])
    assert [d.tolist() for d in r.doc_ids] == [["3"], ["y"], ["0"]]


def test_prf_terms_are_its_column_order_after_fit_and_load(tmp_path: Path) -> None:
    from ragkit.operator import Operator
    from ragkit.pipelines.prf import PRF

    prf = PRF().fit(Corpus.from_texts(["zeta alpha", "beta gamma", "alpha delta", "omicron aardvark"]))
    assert prf._terms.tolist() == _column_order(prf.vocab_)
    prf.save(tmp_path / "prf")
    back = Operator.load(tmp_path / "prf")
    assert back._terms.tolist() == _column_order(back.vocab_) == prf._terms.tolist()


@pytest.mark.parametrize("name", ["Tokenizer", "Tokenizer.surfaces", "bm25.query_matrix", "bm25.score_matrix"])
def test_one_text_is_refused_by_the_shared_helper(name: str) -> None:
    """BM25 refuses one str or bytes where a list of texts is expected with ragkit._checks' message (bytes: wrap
    it, decoded, in a list)."""
    bm = BM25(k=3).fit(Corpus.from_texts(TEXTS))
    call = {"Tokenizer": Tokenizer(), "Tokenizer.surfaces": Tokenizer().surfaces,
            "bm25.query_matrix": bm.query_matrix, "bm25.score_matrix": bm.score_matrix}[name]
    with pytest.raises(DataError, match=rf"^{re.escape(name)}: expected a list of texts, got one str \('red'\); wrap "
                                        r"it in a list$"):
        call("red")
    with pytest.raises(DataError, match=rf"^{re.escape(name)}: expected a list of texts, got one bytes \(b'red'\); "
                                        r"wrap it in a list \(decoded\)$"):
        call(b"red")


def test_as_texts_refuses_one_text_with_the_shared_helpers_message() -> None:
    """Was: the sentence encoders' as_texts had its own copy of the refusal, whose bytes message lacked
    "(decoded)" (one bytes given: wrap it, decoded, in a list)."""
    from ragkit.encoders.sentence import as_texts

    with pytest.raises(DataError, match=r"^x: expected a list of texts, got one bytes \(b'red'\); wrap it in a list "
                                        r"\(decoded\)$"):
        as_texts(b"red", "x")
    with pytest.raises(DataError, match=r"^x: expected a list of texts, got one str \('red'\); wrap it in a list$"):
        as_texts("red", "x")


@pytest.mark.parametrize(("name", "unit", "value", "nonnegative"), [
    ("idf", "term", np.nan, False), ("collection_idf", "term", np.inf, False),
    ("doc_lengths", "document", -2.0, True), ("doc_lengths", "document", -np.inf, True)])
def test_float_arrays_of_a_save_name_the_first_bad_value_its_position_and_count(
        tmp_path: Path, name: str, unit: str, value: float, nonnegative: bool) -> None:
    """idf, collection idf, document lengths and weights say what is wrong in one style: the first value out of
    range, where, and how many (was: "a value nan (expected ...)", without a position or count, for the first
    three; weights in a style of their own)."""
    from ragkit.retrievers.bm25 import _checked_floats

    arr = np.arange(1.0, 7.0)
    arr[[2, 4]] = value
    with pytest.raises(ArtifactError) as e:
        _checked_floats(tmp_path, name, arr, 6, "what it holds", unit, nonnegative=nonnegative)
    assert str(e.value) == (f"{tmp_path / f'{name}.npy'}: a value {value!r} at {unit} 2 (2 of 6 "
                            f"{'negative or ' if nonnegative else ''}not finite; expected what it holds, finite); "
                            "save the index again")
    assert _checked_floats(tmp_path, name, np.arange(6), 6, "x", unit, kinds="i", nonnegative=True).dtype == np.float64


def test_the_finite_check_makes_no_temporary_of_the_arrays_size(tmp_path: Path) -> None:
    """Was: every load built ~isfinite(weights), two bool arrays of one byte per posting (the idf and lengths:
    isfinite(...).all(), one); min and max read them without one."""
    import tracemalloc

    from ragkit.retrievers.bm25 import _checked_floats

    w = np.random.default_rng(0).random(2_000_000)
    tracemalloc.start()
    try:
        out = _checked_floats(tmp_path, "weights", w, len(w), "weights", "posting")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out is w and peak < len(w) // 20, peak


@pytest.mark.parametrize("text", ['{"avgdl": -1}', '{"avgdl": 0}', '{"avgdl": 0.0}', '{"avgdl": true}',
                                  '{"avgdl": "3.0"}', '{"avgdl": null}', '{"avgdl": NaN}', '{"avgdl": Infinity}',
                                  '{"avgdl": 1e400}', '{"avgdl": 1' + "0" * 400 + '}', '{"avgdl": [3.0]}', '{}',
                                  '[3.0]', '3.0'])
def test_a_saved_collection_json_with_a_bad_avgdl_is_an_artifact_error(tmp_path: Path, text: str) -> None:
    """A hand-written collection.json is tested as set_collection tests its avgdl (one helper, _avgdl_of).  Was: an
    integer too large for a float raised a bare OverflowError."""
    bm = BM25(k=3).fit(Corpus.from_texts(TEXTS))
    bm.set_collection(bm.idf_, 3.0)
    bm.save(tmp_path / "bm")
    (tmp_path / "bm" / "collection.json").write_text(text)
    with pytest.raises(ArtifactError, match=rf"^{re.escape(str(tmp_path / 'bm' / 'collection.json'))}: expected a "
                                            r"JSON object whose 'avgdl' is a finite number > 0 \(the average "
                                            r"document length\), got .*; save the index again$"):
        BM25.load(tmp_path / "bm", verify=False)


@pytest.mark.parametrize(("text", "avgdl"), [('{"avgdl": 2.5}', 2.5), ('{"avgdl": 4}', 4.0), ('{"avgdl": 1e-3}', 1e-3)])
def test_a_saved_collection_json_with_a_good_avgdl_loads(tmp_path: Path, text: str, avgdl: float) -> None:
    bm = BM25(k=3).fit(Corpus.from_texts(TEXTS))
    bm.set_collection(bm.idf_, 3.0)
    bm.save(tmp_path / "bm")
    (tmp_path / "bm" / "collection.json").write_text(text)
    back = BM25.load(tmp_path / "bm", verify=False)
    assert back.collection_ is not None and type(back.collection_["avgdl"]) is float
    assert back.collection_["avgdl"] == avgdl


@pytest.mark.parametrize("nonnegative", [False, True])
def test_the_finite_check_reads_the_array_once_in_chunks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                         nonnegative: bool) -> None:
    """Was: ``min()`` then ``max()`` of the whole array, two passes over it (a memory-mapped weights.npy loaded with
    verify=False: the file read twice).  Every numpy operation of the check now takes one chunk of at most 1 MiB (its
    min and max read it while it is in the cache), and the chunks cover the array once."""
    import types

    from ragkit.retrievers import bm25

    seen: list[tuple[str, int, int]] = []  # (operation, first element, elements)

    class Tracked(np.ndarray):
        def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):  # type: ignore[no-untyped-def]
            for x in inputs:
                if isinstance(x, Tracked):
                    seen.append((f"{ufunc.__name__}.{method}", (x.ctypes.data - base) // 8, x.size))
            plain = [x.view(np.ndarray) if isinstance(x, Tracked) else x for x in inputs]
            return getattr(ufunc, method)(*plain, **kwargs)

    w = np.random.default_rng(0).random(300_000)
    base = w.ctypes.data
    shim = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    shim.asarray = lambda a, dtype=None: np.asarray(a, dtype=dtype).view(Tracked)
    monkeypatch.setattr(bm25, "np", shim)
    bm25._checked_floats(tmp_path, "weights", w, len(w), "weights", "posting", nonnegative=nonnegative)
    step = (1 << 20) // 8
    assert seen and all(size <= step for _, _, size in seen), [s for s in seen if s[2] > step]
    chunks = [(i, min(step, len(w) - i)) for i in range(0, len(w), step)]
    for op in ("minimum.reduce", "maximum.reduce"):
        assert sorted((start, size) for name, start, size in seen if name == op) == chunks, seen
