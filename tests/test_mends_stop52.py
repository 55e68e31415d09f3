"""Mends of the fifty-second stop: the call's ``k`` above 2**31 - 1 is refused as a ``k`` parameter is."""

from __future__ import annotations

import numpy as np
import pytest

from ragkit import Corpus, Operator, Params, Ranking
from ragkit.errors import ParamError
from ragkit.registry import register
from ragkit.retrievers import BM25

CORPUS = Corpus(ids=["a", "b", "c"], texts=["fish and chips", "chips", "fish soup"])


@pytest.mark.parametrize("call", [{"k": 10**12}, {"k": np.int64(2**31)}, {"bm25": {"k": 10**12}}])
def test_a_run_time_k_beyond_int32_is_refused_like_a_k_parameter(call):
    op = BM25(k=2).fit(CORPUS)
    with pytest.raises(ParamError, match=r"expected a positive integer of at most 2,147,483,647, got "):
        op.search(["fish"], **call)
    with pytest.raises(ParamError, match=r"within ±2,147,483,647|at most 2,147,483,647|less than or equal"):
        BM25(k=10**12)
    # (the largest k runs: the whole corpus)
    assert [list(d) for d in op.search(["fish"], k=2**31 - 1).doc_ids] == [["a", "c"]]


class _ByteTokenizer:
    """Token ids are UTF-8 bytes, decoded with replacement: a character cut within its bytes reads U+FFFD."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


def test_an_answer_cut_within_a_character_drops_the_partial_character():
    """An answer cut off by max_new_tokens inside a multi-token character (CJK, an emoji) ended in U+FFFD:
    ``'Café ☕ 日本�'``; streamed pieces joined to the same.  The partial character is dropped at the end."""
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator.__new__(LocalGenerator)
    g.tokenizer_ = _ByteTokenizer()
    ids = list(" Café ☕ 日本".encode()) + list("語".encode())[:2]  # (the last character cut after 2 of 3 bytes)
    assert g._text(ids).endswith("\ufffd")
    pieces: list[str] = []
    shown = ""
    for n in range(1, len(ids) + 1):  # as decode sends them, one token at a time, then once at the end
        shown = g._send(ids[:n], shown, pieces.append)
    g._send(ids, shown, pieces.append)
    assert "".join(pieces) == "Café ☕ 日本"
    from ragkit.generators.local import _settled

    assert _settled(g._text(ids).strip()) == "Café ☕ 日本" and _settled("ok \ufffd\ufffd ") == "ok"


@pytest.mark.parametrize("k", ["3", 3.0, True, 0, 10**12])
def test_a_pipeline_search_words_a_bad_k_as_every_other_run_time_k(k):
    from ragkit.pipelines import Pipeline

    with pytest.raises(ParamError, match=r"^search option k: expected a positive integer"):
        Pipeline([BM25(k=2)]).fit(CORPUS).search(["fish"], k=k)


def test_a_composite_loads_its_own_save(tmp_path):
    """``Parallel.load`` of what ``Parallel.save`` wrote said "a saved pipeline, not a single operator"."""
    from ragkit.errors import ArtifactError
    from ragkit.pipelines import Loop, Parallel
    from ragkit.pipelines.fusion import RRF

    par = Parallel([BM25(k=2), BM25(k=2, k1=0.5)], fuse=RRF()).fit(CORPUS)
    par.save(tmp_path / "p")
    back = Parallel.load(tmp_path / "p")
    assert type(back) is Parallel and back == par
    assert [list(d) for d in back.search(["fish"]).doc_ids] == [list(d) for d in par.search(["fish"]).doc_ids]
    with pytest.raises(ArtifactError, match=r"Loop\.load: .* holds one Parallel, not one Loop: load it with "
                                            r"Pipeline\.load"):
        Loop.load(tmp_path / "p")


class _NearTieParams(Params):
    pass


@register
class _NearTie(Operator):
    """Scores that rise by float rounding only (sorted to ragkit), the middle one below 0.5, the last above."""

    name = "near_tie_stop52"
    kind = "reranker"
    stateless = True
    Params = _NearTieParams
    reads_rankings = True

    def _call(self, state):
        out = state.copy()
        out.rankings = [Ranking(r.rows[:3], np.array([0.6, 0.4999999, 0.5000003], np.float32))
                        for r in state.rankings]
        return out


@pytest.mark.parametrize("cut", ["score_threshold: {threshold: 0.5}", "relative_threshold: {alpha: 0.8333334}"])
def test_a_cut_off_never_keeps_a_document_below_it_after_a_rounding_rise(cut):
    """A cut-off counted the documents that pass and kept that many from the front: after a rise within the
    sort tolerance it kept 0.4999999 (below the threshold) and dropped 0.5000003."""
    from ragkit.pipelines import Pipeline

    corpus = Corpus.from_texts([f"apple {i}" for i in range(5)])
    pipe = Pipeline.from_yaml(f"pipeline:\n- bm25: {{}}\n- near_tie_stop52: {{}}\n- {cut}\n").fit(corpus)
    (scores,) = pipe.search(["apple"]).scores
    assert [round(float(x), 7) for x in scores] == [0.6]


def test_a_saved_pipeline_whose_order_of_steps_is_now_refused_says_how_to_keep_its_fitted_steps(tmp_path):
    """A folder saved as ``[bm25, prf]`` (accepted before this stop) failed to load with the refusal alone, telling
    to edit a YAML file its checksums cover; the error now says its steps load one by one, without a refit."""
    import json
    import shutil

    from ragkit import Operator
    from ragkit.errors import ConfigError
    from ragkit.eval import read_corpus
    from ragkit.pipelines import PRF, Pipeline

    folder = tmp_path / "f"
    Pipeline([BM25(k=2), PRF(), BM25(k=2)]).fit(CORPUS).save(folder)
    (folder / "pipeline.yaml").write_text("pipeline:\n- bm25: {k: 2}\n- prf: {}\n")  # (as an older ragkit saved it)
    shutil.rmtree(folder / "ops" / "02-bm25")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["nodes"] = {k: v for k, v in manifest["nodes"].items() if v != "ops/02-bm25"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"(?s)no retriever comes after it.*saved by a ragkit that accepted this "
                                          r"order of steps.*Operator\.load\(folder / step, corpus=read_corpus"):
        Pipeline.load(folder, verify=False)
    steps = [Operator.load(folder / s, corpus=read_corpus(folder / "corpus.jsonl"), verify=False)
             for s in ("ops/00-bm25", "ops/01-prf")]
    assert [type(s).__name__ for s in steps] == ["BM25", "PRF"]
    (folder / "pipeline.yaml").write_text("pipeline:\n- bm25: {k: 2}\n- prf: {resolution: 0}\n")  # (a bad value)
    with pytest.raises(ConfigError) as e:
        Pipeline.load(folder, verify=False)
    assert "accepted this order" not in str(e.value)  # (only where every step loads)
