"""Review fixes of the example scripts: every search inside ``caching_queries()``, a ``--limit`` run said to be
a slice, the split refusal as one error line (exit 2), sharded's check ending the script when the merge differs,
and ``load_beir``'s hint for a file naming its folder only when that is a BEIR folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import run_example

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


_run = run_example


@pytest.mark.parametrize("stem", ["filtered", "diverse", "langchain_app"])
def test_every_query_encoding_reads_the_query_cache(stem, monkeypatch):
    """filtered.py searched the test queries a second time outside ``caching_queries()`` (a model load and an
    encode, 16-24 s against 4.5-7.8 s); langchain_app's chain searched its questions again outside it too."""
    from ragkit.encoders import queries_cached
    from ragkit.encoders.sentence import Encoder

    monkeypatch.delenv("RAGKIT_CACHE_QUERIES", raising=False)
    seen: list[bool] = []
    encode = Encoder.encode_queries

    def spy(self, texts, *, cache=None):
        seen.append(queries_cached() if cache is None else cache)
        return encode(self, texts, cache=cache)

    monkeypatch.setattr(Encoder, "encode_queries", spy)
    code, _, err = _run(EXAMPLES / f"{stem}.py", "--limit", "3", "--json")
    assert code is None, err[-2000:]
    assert seen and all(seen), seen


def test_a_limit_run_says_it_is_a_slice():
    """``rm3.py --limit 100000`` printed "300 queries, 475 docs nDCG@10 0.8346" (the full split: 0.6479): the
    corpus is sliced too, whatever the limit."""
    code, out, err = _run(EXAMPLES / "rm3.py", "--limit", "100000")
    assert code is None, err
    assert re.match(r"rm3: 300 queries, \d+ docs \(a --limit slice of 300 queries and 5183 docs, not comparable "
                    r"to the full split\)  nDCG@10 ", out), out


@pytest.mark.parametrize("stem", ["learned", "filtered", "hubness"])
def test_evaluating_the_training_split_is_one_error_line(stem):
    code, out, err = _run(EXAMPLES / f"{stem}.py", "--split", "train", "--limit", "2")
    assert code == 2 and out == "", (code, err)
    assert err.startswith(f"{stem}.py: error: --split 'train' is the split this example learns from"), err


def _sharded_local(monkeypatch, bm25=None, **bm25_params):
    """sharded.py with its shards local (no Ray) and its unsharded check index built with ``bm25_params``, of the
    class ``bm25`` (default: ragkit's BM25)."""
    import ragkit.retrievers

    sharded, bm25 = ragkit.retrievers.Sharded, bm25 or ragkit.retrievers.BM25
    monkeypatch.setattr(ragkit.retrievers, "Sharded", lambda **kw: sharded(**{**kw, "backend": "local"}))
    monkeypatch.setattr(ragkit.retrievers, "BM25", lambda **kw: bm25(**{**kw, **bm25_params}))
    return _run(EXAMPLES / "sharded.py", "--limit", "4")


def test_sharded_check_passes_when_the_merge_equals_one_index(monkeypatch):
    code, out, err = _sharded_local(monkeypatch)
    assert code is None and "merged ranking of the 2 shards equals one BM25 index's" in out, (code, out, err)


def test_sharded_exits_non_zero_when_the_merge_differs(monkeypatch):
    """It printed "DIFFERS from one BM25 index's" and still exited 0."""
    code, out, err = _sharded_local(monkeypatch, k1=0.3)  # another BM25: its rankings differ from the shards'
    assert code == 1 and "merged ranking of the 2 shards DIFFERS from one BM25 index's" in out, (code, out, err)


@pytest.mark.parametrize("change", ["drops the last query", "relabels the last query"])
def test_sharded_exits_non_zero_when_the_queries_differ(monkeypatch, change):
    """The check compared each query's documents (and, since, the number of queries), not which queries they
    were: an unsharded index whose result names another query, its rankings the same, read as equal.  Here the
    check index's search drops the last query, or gives it another id."""
    from ragkit import Run
    from ragkit.retrievers import BM25

    class Changed(BM25):
        def search(self, *a, **kw):
            run = super().search(*a, **kw)
            if change == "drops the last query":
                return Run(run.query_ids[:-1], run.doc_ids[:-1], run.scores[:-1])
            return Run([*run.query_ids[:-1], run.query_ids[-1] + "-other"], run.doc_ids, run.scores)

    code, out, err = _sharded_local(monkeypatch, bm25=Changed)
    assert code == 1 and "merged ranking of the 2 shards DIFFERS from one BM25 index's" in out, (code, out, err)


def test_a_file_hint_names_its_folder_only_when_it_is_a_beir_folder(tmp_path):
    from ragkit import load_beir
    from ragkit.errors import DataError

    notes = tmp_path / "README.md"
    notes.write_text("not a dataset\n")
    with pytest.raises(DataError, match="is a file") as e:
        load_beir(notes)
    assert "pass its folder" not in str(e.value) and str(tmp_path) not in str(e.value).split(":", 1)[1]
    (tmp_path / "corpus.jsonl").write_text("")
    with pytest.raises(DataError, match=re.escape(f"pass its folder, {str(tmp_path.resolve())!r}")):
        load_beir(notes)
