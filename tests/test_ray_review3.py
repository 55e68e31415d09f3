"""Third review of Ray scale-out (helper rayfix): ``$RAY_ADDRESS`` where nothing answers is refused at once, a local
Ray that cannot start says so, a fit whose vectors are all cached starts no Ray encoder pool, a relative workdir is
saved absolute, a ShardError names every failed shard."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest

from ragkit import _ray, _ray_fit, scale
from ragkit.errors import ArtifactError, ParamError


def _no_ray_init(**kwargs):
    raise AssertionError("ray.init was called")


def test_ray_address_where_nothing_answers_is_refused_naming_it(monkeypatch):
    """``RAY_ADDRESS=127.0.0.1:<closed port>`` waited minutes in ray.init with Ray's warnings only: it is probed as
    ``$RAGKIT_RAY_ADDRESS`` is, and refused before Ray is asked, naming $RAY_ADDRESS."""
    monkeypatch.setattr(_ray, "_ray", lambda: SimpleNamespace(is_initialized=lambda: False, init=_no_ray_init))
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
    monkeypatch.setattr(_ray, "_ray", lambda: SimpleNamespace(is_initialized=lambda: False,
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

    monkeypatch.setattr(_ray, "_ray", lambda: SimpleNamespace(is_initialized=lambda: False, init=init))
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

    monkeypatch.setattr(_ray_fit, "_check_model", lambda model, batch_size, where: 8)
    monkeypatch.setattr(_ray_fit, "ray_encode", encode)
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


def test_a_relative_workdir_is_saved_as_the_absolute_folder_the_fit_used(tmp_path, monkeypatch):
    """``workdir: wd`` was saved as written and read again from the loading process's folder: the fitted operator's
    parameters (so its save) hold the absolute folder its fit used; an unfitted one keeps what was written."""
    import os

    from conftest import word_corpus

    from ragkit.pipelines import Pipeline
    from ragkit.scale import Sharded

    monkeypatch.chdir(tmp_path)
    sh = Sharded(retriever={"bm25": {}}, n_shards=2, k=5, backend="local", workdir="wd")
    assert sh.params.workdir == "wd" and "workdir: wd" in Pipeline([sh]).to_yaml()
    pipe = Pipeline([sh]).fit(word_corpus(20))
    assert pipe.steps[0].params.workdir == str(tmp_path / "wd")
    pipe.save("saved")
    assert f"workdir: {tmp_path / 'wd'}" in (tmp_path / "saved" / "pipeline.yaml").read_text()
    os.chdir("/")
    assert Pipeline.load(tmp_path / "saved").steps[0].params.workdir == str(tmp_path / "wd")


def test_a_shard_error_names_every_failed_shard():
    """Two of three shard actors failed: the ShardError named only the first one's shards.  (Ray is faked: the
    actors' replies are errors or results as given.)"""
    import numpy as np
    from ray.exceptions import ObjectLostError

    from ragkit.scale import Sharded, ShardError

    lost = ObjectLostError("ab" * 20, b"", "(test)")
    replies = {0: lost, 1: [], 2: ObjectLostError("cd" * 20, b"", "(test)")}

    class Ref:
        def __init__(self, n: int) -> None:
            self.n = n

    def get(ref, timeout=None):  # noqa: ANN001, ANN202
        reply = replies[ref.n]
        if isinstance(reply, Exception):
            raise reply
        return reply

    ray = SimpleNamespace(get=get, wait=lambda refs, num_returns, timeout: (list(refs), []))
    actors = [SimpleNamespace(search=SimpleNamespace(remote=lambda *a, n=n: Ref(n))) for n in range(3)]
    dropped = []
    fake = SimpleNamespace(_ray_actors=lambda ray: actors, _drop_actors=lambda a: dropped.append(a))
    with pytest.raises(ShardError) as got:
        Sharded._search_ray(fake, ray, np.arange(6), ["q"], {}, {})
    text = str(got.value)
    assert text.startswith("sharded: shards 0, 1 failed to search: ") and "ObjectLostError" in text
    assert text.endswith("; also shards 4, 5 (ObjectLostError)"), text
    assert "2, 3" not in text and dropped == [actors]
