"""Performance review: work done for nothing on paths that need none of it.

1. Token vectors read wholly from the cache loaded the model just to learn the vectors' width
   (``TokenEncoder.dim``): about half of a cached muvera search's time on SciFact (300 cached queries:
   15.6 s, sentence-transformers imported and the weights read; 0.07 s without).
2. The Cosine Adapter's L-BFGS ran its small matrix products on every BLAS thread, which a busy second core
   slows four-fold (9.7 s of training against 2.5 s on one thread, the same weights).
3. ``get_encoder(m)`` and ``get_encoder(m, batch_size=64)`` (the default) made two encoders, each
   fingerprinting the model's files again.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_filters import synthetic
from test_tokens_memory import _reference, _same, _texts, fake  # noqa: F401  (fake: a fixture)

import ragkit.encoders.tokens as tokens
from ragkit.encoders import caching_queries
from ragkit.encoders.sentence import Encoder, get_encoder
from ragkit.encoders.tokens import TokenEncoder, get_token_encoder
from ragkit.filters import CosineAdapter


# ----------------------------------------------------------------------------- 1. cached tokens, no model
def _no_model(monkeypatch) -> None:
    def refuse(self):
        raise AssertionError("the model was loaded for token vectors read wholly from the cache")

    monkeypatch.setattr(TokenEncoder, "model", property(refuse))


@pytest.mark.parametrize("large", [False, True])  # True: above CONSOLIDATE_BYTES (written as one shard)
def test_cached_token_vectors_are_served_without_the_model(fake, monkeypatch, large):  # noqa: F811
    texts = _texts(60, seed=3)
    want = _reference(texts, fake)
    assert _same(TokenEncoder(batch_size=16).encode(texts), want)  # cached now (the fake model)
    if large:
        monkeypatch.setattr(tokens, "CONSOLIDATE_BYTES", 1)
    _no_model(monkeypatch)
    order = np.random.default_rng(0).permutation(len(texts))[:45]  # a reordered subset: gathered, not whole
    enc = TokenEncoder(batch_size=16)
    got = enc.encode([texts[i] for i in order])
    assert _same(got, want.take(order)) and enc.n_encoded == 0
    with caching_queries():  # queries cached on disk (``ragkit eval``): a new encoder, its memo empty
        q = TokenEncoder(batch_size=16).encode_queries([texts[i] for i in order[:7]] + [texts[order[0]]])
    assert _same(q, want.take(np.r_[order[:7], order[0]]))


# ----------------------------------------------------------------------------- 2. one BLAS thread for L-BFGS
def test_cosine_adapter_trains_on_one_blas_thread(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    corpus, train, state = synthetic(n_q=40, k=20, d=8)
    seen: list[int] = []
    loss_grad = CosineAdapter._loss_grad

    def spy(self, *a, **k):
        seen.extend(i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")
        return loss_grad(self, *a, **k)

    monkeypatch.setattr(CosineAdapter, "_loss_grad", spy)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):  # two threads outside, whatever the machine
        ad = CosineAdapter(max_iter=50).fit(corpus, train, upstream=state)
        after = {i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}
    if not seen:
        pytest.skip("no BLAS library that threadpoolctl controls")
    assert set(seen) == {1}, seen
    assert after == {2}  # restored after training
    assert np.isfinite(ad.weights_).all()


# ----------------------------------------------------------------------------- 3. one shared encoder per setting
def test_an_explicit_default_setting_shares_the_encoder():
    default_batch = Encoder.__init__.__kwdefaults__["batch_size"]
    assert get_encoder() is get_encoder(batch_size=default_batch) is get_encoder("all-MiniLM-L6-v2", cache=True)
    assert get_encoder(batch_size=default_batch + 1) is not get_encoder()
    token_batch = TokenEncoder.__init__.__kwdefaults__["batch_size"]
    assert get_token_encoder() is get_token_encoder(batch_size=token_batch, special_tokens="keep")
    assert get_token_encoder(special_tokens="drop") is not get_token_encoder()
    with pytest.raises(TypeError, match="bogus"):  # an unknown setting: the constructor names it
        get_encoder(bogus=1)
