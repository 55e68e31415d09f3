"""Memory of the multi-vector operators: saved token vectors are memory-mapped at load (whatever ``mmap``),
and ``projection: identity`` reads the token width from the known-models table, not from a loaded model."""

from __future__ import annotations

import numpy as np
import pytest

from ragkit.encoders.tokens import TokenEncoder, TokenVectors
from ragkit.types import Corpus

D = 384  # all-MiniLM-L6-v2's width (the default model, in KNOWN_DIMS)


def _token_sets(rng: np.random.Generator, n: int, lo: int, hi: int, d: int = D) -> TokenVectors:
    lens = rng.integers(lo, hi, n)
    x = rng.standard_normal((int(lens.sum()), d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return TokenVectors(x.astype(np.float16), np.r_[0, np.cumsum(lens)].astype(np.int64))


def _corpus(n: int) -> Corpus:
    return Corpus(ids=np.array([f"d{i}" for i in range(n)]),
                  texts=np.array([f"text {i} word{i % 7} term{i % 5}" for i in range(n)]))


@pytest.fixture()
def tokens(monkeypatch):
    """The multi-vector operators read synthetic tokens: the corpus's are the first rows of ``docs`` (as many
    as it has documents), every query batch's are ``queries`` (no model is run)."""
    from ragkit.retrievers.muvera import TokenOperatorMixin

    rng = np.random.default_rng(0)
    docs, queries = _token_sets(rng, 120, 3, 30), _token_sets(rng, 6, 2, 9)
    monkeypatch.setattr(TokenOperatorMixin, "_fit_tokens", lambda self, corpus, train=None: setattr(
        self, "tokens_", docs.take(np.arange(len(corpus)))))
    monkeypatch.setattr(TokenOperatorMixin, "query_tokens",
                        lambda self, state: queries.take(np.arange(len(state)) % len(queries)))
    return docs, queries


QUERIES = [f"word{i} term{i}" for i in range(6)]


def _op(name: str):
    from ragkit.filters import MaxSim
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import BM25, MaxSimExact, Muvera

    if name == "muvera":
        return Pipeline([Muvera(k=5, candidates=20, k_sim=3, d_proj=8, r_reps=4)])
    if name == "maxsim_exact":
        return Pipeline([MaxSimExact(k=5)])
    return Pipeline([BM25(k=20), MaxSim(k=5)])


def _rankings(run) -> list[tuple[list[int], list[float]]]:
    return [(r.rows.tolist(), np.round(r.scores, 5).tolist()) for r in run.rankings]


def _mapped(tv: TokenVectors) -> bool:
    return isinstance(tv.data, np.memmap) and not tv.data.flags.owndata and not tv.data.flags.writeable


@pytest.mark.parametrize("name", ["muvera", "maxsim_exact", "maxsim"])
@pytest.mark.parametrize("how", ["Pipeline.load", "Operator.load", "Operator.load(mmap=True)", "step folder"])
def test_saved_token_vectors_are_memory_mapped_whatever_mmap(tokens, tmp_path, name, how):
    """A loaded multi-vector operator maps its token vectors read-only from the saved file (SciFact's are
    910 MB, a million documents' ~175 GB): ``ragkit search --index``, ``RagkitRetriever(pipeline=folder)`` and a
    plain ``load`` read them fully into memory before; its searches are unchanged."""
    from ragkit.operator import Operator
    from ragkit.pipelines import Pipeline

    corpus = _corpus(80)
    pipe = _op(name).fit(corpus)
    want = _rankings(pipe.search(QUERIES))
    pipe.save(tmp_path / "p")
    if how == "step folder":  # an operator saved on its own
        pipe.steps[-1].save(tmp_path / "op")
        op = Operator.load(tmp_path / "op")
        assert _mapped(op.tokens_)
        assert _rankings(Pipeline([*pipe.steps[:-1], op]).search(QUERIES)) == want
        return
    back = {"Pipeline.load": lambda: Pipeline.load(tmp_path / "p"),
            "Operator.load": lambda: Operator.load(tmp_path / "p"),
            "Operator.load(mmap=True)": lambda: Operator.load(tmp_path / "p", mmap=True)}[how]()
    step = back.steps[-1]
    assert _mapped(step.tokens_), type(step.tokens_.data)
    assert np.array_equal(np.asarray(step.tokens_.data), np.asarray(pipe.steps[-1].tokens_.data))
    assert _rankings(back.search(QUERIES)) == want


def test_the_fde_index_still_follows_mmap(tokens, tmp_path):
    """Only the token vectors are always mapped: the FDE index is read into memory unless mmap=True."""
    from ragkit.operator import Operator

    _op("muvera").fit(_corpus(80)).save(tmp_path / "p")
    held, mapped = Operator.load(tmp_path / "p").steps[0], Operator.load(tmp_path / "p", mmap=True).steps[0]
    assert not isinstance(held.index_.codes, np.memmap) and isinstance(mapped.index_.codes, np.memmap)


@pytest.mark.parametrize("name", ["muvera", "maxsim_exact", "maxsim"])
@pytest.mark.parametrize("mmap", [False, True])
def test_saving_over_the_folder_the_tokens_are_mapped_from(tokens, tmp_path, name, mmap):
    """A loaded operator saved again into the folder its tokens are mapped from writes a sound save (its
    checksums verify, it loads and searches the same), and keeps searching what it loaded.  Then the
    equivalent of adding documents (muvera has no ``add``: a refit on a larger corpus) saved over that folder
    again, and loaded again, gives the refitted operator's rankings."""
    from ragkit.operator import Operator

    folder = tmp_path / "p"
    pipe = _op(name).fit(_corpus(80))
    want = _rankings(pipe.search(QUERIES))
    pipe.save(folder)
    back = Operator.load(folder, mmap=mmap)
    assert _mapped(back.steps[-1].tokens_)
    for _ in range(2):  # twice: the second save replaces the one the first wrote (the map's file is long gone)
        back.save(folder)
        assert _rankings(back.search(QUERIES)) == want  # the map still reads the replaced file's data
        again = Operator.load(folder, mmap=mmap)
        assert _rankings(again.search(QUERIES)) == want
    grown = _corpus(110)
    back.fit(grown)  # (refit: the new tokens are in memory, the map is dropped)
    grown_want = _rankings(back.search(QUERIES))
    assert grown_want == _rankings(_op(name).fit(grown).search(QUERIES))
    back.save(folder)
    last = Operator.load(folder, mmap=mmap)
    assert _mapped(last.steps[-1].tokens_) and len(last.steps[-1].tokens_) == 110
    assert _rankings(last.search(QUERIES)) == grown_want
    last.save(folder)  # over its own map once more: still the same
    assert _rankings(Operator.load(folder).search(QUERIES)) == grown_want


def test_a_mapped_token_file_changed_after_load_is_refused_at_the_next_load(tokens, tmp_path):
    """The map is read-only: the loaded operator cannot write into the saved file; a file changed by hand is
    refused by the checksums at the next load, as before."""
    from ragkit.errors import ArtifactError
    from ragkit.operator import Operator

    _op("muvera").fit(_corpus(80)).save(tmp_path / "p")
    back = Operator.load(tmp_path / "p")
    with pytest.raises(ValueError, match="read-only"):
        back.steps[0].tokens_.data[0, 0] = 1.0
    (data,) = (tmp_path / "p").rglob("tokens.npy")
    arr = np.load(data, mmap_mode="r+")
    arr[3] = 0
    arr.flush()
    del arr
    with pytest.raises(ArtifactError, match="checksum|changed|sha"):
        Operator.load(tmp_path / "p")


def _no_model(monkeypatch) -> None:
    def refuse(self):
        raise AssertionError("the token encoder's model was loaded (its width is in KNOWN_DIMS)")

    monkeypatch.setattr(TokenEncoder, "model", property(refuse))
    monkeypatch.setattr(TokenEncoder, "dim", property(refuse))


def test_identity_projection_reads_the_known_token_width_without_loading_the_model(tokens, tmp_path, monkeypatch):
    """``projection: identity`` needs the token width before encoding (the FDE size check): for a model in
    KNOWN_DIMS it is read there, not from the loaded model (MiniLM: 0.3 s and 30 MB, even when every token is
    cached); fit, save, load and search never load it."""
    from ragkit.errors import ParamError
    from ragkit.operator import Operator
    from ragkit.retrievers import Muvera

    _no_model(monkeypatch)
    mu = Muvera(projection="identity", k=5, candidates=20, k_sim=2, r_reps=2).fit(_corpus(80))
    assert mu.dim == 2 * 4 * D
    want = _rankings(mu.search(QUERIES))
    mu.save(tmp_path / "mu")
    back = Operator.load(tmp_path / "mu")
    assert _rankings(back.search(QUERIES)) == want
    # the size checks still refuse before encoding, with the table's width
    with pytest.raises(ParamError, match=r"the 384-d tokens \(projection: identity\) = 3,145,728 dimensions"):
        Muvera(projection="identity", k_sim=3, r_reps=1024, k=5, candidates=10).fit(_corpus(80))
    with pytest.raises(ParamError, match=r"d_final \(3,072\) must be smaller than .* the 384-d tokens = 3,072"):
        Muvera(projection="identity", k_sim=2, r_reps=2, d_final=3072, k=5, candidates=10).fit(_corpus(80))


def test_identity_projection_checks_the_encoded_width_when_it_differs(monkeypatch):
    """Tokens of another width than the table's (a model folder's): the size is checked again on them."""
    from ragkit.errors import ParamError
    from ragkit.retrievers import Muvera
    from ragkit.retrievers.muvera import TokenOperatorMixin

    wide = _token_sets(np.random.default_rng(1), 30, 2, 6, d=4096)
    monkeypatch.setattr(TokenOperatorMixin, "_fit_tokens", lambda self, corpus, train=None: setattr(
        self, "tokens_", wide))
    _no_model(monkeypatch)
    with pytest.raises(ParamError, match=r"the 4096-d tokens \(projection: identity\) = 8,388,608 "):
        Muvera(projection="identity", k_sim=3, r_reps=256, k=5, candidates=10).fit(_corpus(30))
