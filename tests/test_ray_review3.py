"""Third review of Ray scale-out (helper rayfix): ``$RAY_ADDRESS`` where nothing answers is refused at once, a local
Ray that cannot start says so, a fit whose vectors are all cached starts no Ray encoder pool, a relative workdir is
saved absolute, a ShardError names every failed shard."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest

from ragkit import scale
from ragkit.errors import ArtifactError, ParamError


def _no_ray_init(**kwargs):
    raise AssertionError("ray.init was called")


def test_ray_address_where_nothing_answers_is_refused_naming_it(monkeypatch):
    """``RAY_ADDRESS=127.0.0.1:<closed port>`` waited minutes in ray.init with Ray's warnings only: it is probed as
    ``$RAGKIT_RAY_ADDRESS`` is, and refused before Ray is asked, naming $RAY_ADDRESS."""
    monkeypatch.setattr(scale, "_ray", lambda: SimpleNamespace(is_initialized=lambda: False, init=_no_ray_init))
    monkeypatch.delenv("RAGKIT_RAY_ADDRESS", raising=False)
    with socket.socket() as free:  # a local port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(ParamError, match=rf"could not join the Ray cluster at '127\.0\.0\.1:{port}', the address "
                                         rf"\$RAY_ADDRESS.*nothing answers.*set \$RAY_ADDRESS to another, or unset "
                                         rf"it") as got:
        scale.ray_init()
    assert got.value.path == "$RAY_ADDRESS"


def test_ray_address_auto_is_left_to_ray(monkeypatch):
    """``auto`` / ``local`` are Ray's words: not probed, and Ray is started as before (it reads them itself)."""
    calls: list[dict] = []
    monkeypatch.setattr(scale, "_ray", lambda: SimpleNamespace(is_initialized=lambda: False,
                                                               init=lambda **kw: calls.append(kw)))
    monkeypatch.delenv("RAGKIT_RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    scale.ray_init(num_cpus=2)
    assert len(calls) == 1 and "address" not in calls[0] and calls[0]["num_cpus"] == 2


def test_a_local_ray_that_cannot_start_says_so(monkeypatch):
    """``RAY_TMPDIR=/proc/nope``: ray.init's bare FileNotFoundError becomes an ArtifactError (an OSError) saying ragkit
    could not start a local Ray here, with Ray's error, naming $RAY_TMPDIR, the original chained."""
    original = FileNotFoundError(2, "No such file or directory", "/proc/nope")

    def init(**kwargs):
        raise original

    monkeypatch.setattr(scale, "_ray", lambda: SimpleNamespace(is_initialized=lambda: False, init=init))
    monkeypatch.delenv("RAGKIT_RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", "/proc/nope")
    with pytest.raises(ArtifactError, match=r"ragkit could not start a local Ray in this process "
                                            r"\(FileNotFoundError: .*/proc/nope.*\$RAY_TMPDIR='/proc/nope'") as got:
        scale.ray_init()
    assert isinstance(got.value, OSError) and got.value.__cause__ is original


def test_a_ray_fit_sends_only_uncached_texts_to_ray(tmp_path, monkeypatch):
    """fit(backend='ray') sent every corpus text to a fresh Ray encoder pool even when the driver's cache held
    them all (a hybrid fit of 228 cached documents: 3.3 s locally, 23.8 s on Ray): only the texts the cache lacks
    are sent, and none start no pool."""
    import numpy as np
    from conftest import word_corpus

    from ragkit.encoders import get_encoder
    from ragkit.encoders.cache import text_digests
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import Dense

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    sent: list[list[str]] = []

    def encode(model, texts, **kw):  # noqa: ANN001, ANN003, ANN202
        sent.append(list(texts))
        return np.ones((len(texts), 8), np.float32)

    monkeypatch.setattr(scale, "_check_model", lambda model, batch_size, where: 8)
    monkeypatch.setattr(scale, "ray_encode", encode)
    corpus = word_corpus(6)
    texts = list(corpus.full_texts)
    get_encoder("m-rr3").store.put(text_digests(texts[:4]), np.zeros((4, 8), np.float32))
    pipe = Pipeline([Dense(model="m-rr3")])
    monkeypatch.setattr(pipe, "fit", lambda corpus, train, **kw: pipe)
    assert scale.fit_pipeline(pipe, corpus, None) is pipe
    assert sent == [texts[4:]]  # the two texts not cached, once each
    cached, hit = get_encoder("m-rr3").store.get(text_digests(texts))
    assert hit.all() and cached is not None and (cached[4:] == 1).all() and (cached[:4] == 0).all()
    sent.clear()
    assert scale.fit_pipeline(pipe, corpus, None) is pipe
    assert sent == []  # all cached: no Ray pool
