"""The GGUF file's fingerprint is hashed once per process while the file is unchanged (``ragkit ask`` asks
for it up to three times), and again once it changes."""
import os

from ragkit.encoders import sentence
from ragkit.generators import _model_source


def test_gguf_fingerprint_hashed_once_while_unchanged(tmp_path, monkeypatch):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + b"\0" * 64)
    monkeypatch.setattr(sentence, "_RACY_NS", 0)  # (the file was written just now: memoised all the same)
    calls = []
    real = sentence.model_fingerprint  # (the generators' fingerprint is the encoders' cached_fingerprint)
    monkeypatch.setattr(sentence, "model_fingerprint", lambda p: calls.append(p) or real(p))
    first = _model_source.source_fingerprint(str(f), None)
    assert first == (real(str(f)), os.path.join(os.path.realpath(tmp_path), "m.gguf"))
    assert _model_source.source_fingerprint(str(f), None) == first
    assert _model_source._local_fingerprint(os.path.realpath(tmp_path), "m.gguf") == first
    assert len(calls) == 1
    f.write_bytes(b"GGUF" + b"\1" * 80)  # another file: hashed again
    again = _model_source.source_fingerprint(str(f), None)
    assert len(calls) == 2 and again[0] != first[0] and again[0] == real(str(f))
