"""Models other than MiniLM by path: a model whose sentence vector is narrower than its token vectors (a
sentence-transformers ``Dense`` head), a model folder rewritten in place, a plain transformers folder, a relative
path, and folders that hold no model.  The model folders are built here from the installed MiniLM: its large
files are linked to, not copied."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ragkit.encoders import sentence
from ragkit.encoders.sentence import DEFAULT_MODEL, Encoder, resolve_model
from ragkit.encoders.tokens import TokenEncoder
from ragkit.errors import ParamError
from ragkit.types import Corpus

TEXTS = ["vitamin c and the common cold", "cells divide by mitosis", "a claim about proteins",
         "the heart pumps blood through arteries", "bacteria resist antibiotics"]


def _linked_copy(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> None:
    """``dst``: the files of ``src`` at any depth (but the top-level names ``skip``), files over 1 MB linked to."""
    for f in src.rglob("*"):
        rel = f.relative_to(src)
        if rel.parts[0] in skip or not f.is_file():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        if f.stat().st_size > 2**20:
            os.symlink(f, dst / rel)
        else:
            shutil.copyfile(f, dst / rel)


@pytest.fixture(scope="module")
def dense32(tmp_path_factory) -> Path:
    """MiniLM with a sentence-transformers ``Dense`` 384 -> 32 head, saved with ``model.save``: 32-d sentence
    vectors, 384-d token vectors."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Dense as DenseHead

    torch.manual_seed(0)
    base = SentenceTransformer(resolve_model(DEFAULT_MODEL), device="cpu")
    model = SentenceTransformer(modules=[base[0], base[1], DenseHead(384, 32)], device="cpu")
    saved = tmp_path_factory.mktemp("dense32") / "saved"
    model.save(str(saved))
    out = tmp_path_factory.mktemp("dense32") / "m"
    _linked_copy(saved, out)
    return out


def _own_copy(folder: Path, dst: Path) -> Path:
    """A copy of model ``folder`` at ``dst`` whose small files (the Dense head's weights among them) are its own."""
    for f in folder.rglob("*"):
        if f.is_file():
            (dst / f.relative_to(folder)).parent.mkdir(parents=True, exist_ok=True)
            if f.is_symlink():
                os.symlink(os.readlink(f), dst / f.relative_to(folder))
            else:
                shutil.copyfile(f, dst / f.relative_to(folder))
    return dst


def _rewrite_head(folder: Path, scale: float) -> None:
    """Rewrite the Dense head's weights of ``folder`` in place (a model retrained into the same folder)."""
    from safetensors.torch import load_file, save_file

    (path,) = (folder / "2_Dense").glob("*.safetensors")
    weights = {k: v * scale for k, v in load_file(str(path)).items()}
    save_file(weights, str(path), metadata={"format": "pt"})


# ---------------------------------------------------------------- token width is the transformer's, not the pooled
def test_token_vectors_of_a_model_with_a_narrower_sentence_vector(dense32, tmp_path, monkeypatch):
    """The token rows come from the transformer module (384-d); the sentence vector after the Dense head is 32-d.
    ``TokenEncoder.dim`` said 32, and every encode of more texts than a batch failed with a shape mismatch."""
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    assert Encoder(str(dense32), cache=False).dim == 32
    enc = TokenEncoder(str(dense32), batch_size=2)
    assert enc.dim == 384
    for cache in (False, True, True):  # encoded, then written to the cache, then read back
        tv = enc.encode(TEXTS, cache=cache)
        assert tv.dim == 384 and len(tv) == len(TEXTS)
        np.testing.assert_allclose(np.linalg.norm(tv.data.astype(np.float32), axis=1), 1, atol=1e-2)
    assert enc.encode([]).dim == 384 and enc.encode_queries(["cells"]).dim == 384


def test_muvera_and_maxsim_exact_on_a_model_with_a_narrower_sentence_vector(dense32, tmp_path, monkeypatch):
    from ragkit.retrievers import MaxSimExact, Muvera

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    corpus = Corpus.from_texts(TEXTS, ids=[f"d{i}" for i in range(len(TEXTS))])
    for op in (Muvera(model=str(dense32), k=3, batch_size=2), Muvera(model=str(dense32), k=3, projection="identity",
                                                                      d_final=512, batch_size=2),
               MaxSimExact(model=str(dense32), k=3, batch_size=2)):
        run = op.fit(corpus).search(["cells and mitosis"])
        assert len(run["q0"][0]) == 3, op


# ---------------------------------------------------------------- a model folder rewritten in place
def test_an_encoder_made_after_its_model_folder_changed_loads_the_new_weights(dense32, tmp_path, monkeypatch):
    """The loaded models were kept by (path, device, max_seq_length): an encoder made after the folder was
    rewritten computed a new key (its files' fingerprint) and encoded with the old model, so the shared embedding
    cache held the old weights' vectors under the new weights' key, for every process after."""
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    folder = _own_copy(dense32, tmp_path / "m")
    old = Encoder(str(folder))
    v_old = old.encode(TEXTS)
    tok_old = TokenEncoder(str(folder))
    assert tok_old.model is old.model  # one model object per files and settings, shared
    _rewrite_head(folder, 1.5)
    new = Encoder(str(folder), batch_size=32)
    assert new.key != old.key
    v_new = new.encode(TEXTS)  # cached under the new key
    assert new.n_encoded == len(TEXTS)
    from sentence_transformers import SentenceTransformer

    truth = SentenceTransformer(str(folder), device="cpu").encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(v_new, truth, atol=1e-5)
    assert not np.allclose(v_new, v_old, atol=1e-3)
    np.testing.assert_array_equal(Encoder(str(folder), batch_size=16).encode(TEXTS), v_new)  # read back
    assert old.model is not new.model and np.array_equal(old.encode(TEXTS), v_old)  # the old encoder keeps its own
    tok_new = TokenEncoder(str(folder))
    assert tok_new.model is new.model and tok_old.model is old.model


def test_an_encoder_whose_folder_changed_before_its_model_loaded_refuses_to_load(dense32, tmp_path):
    """Made before the change, loading after it: the new weights would be stored under the old files' key."""
    folder = _own_copy(dense32, tmp_path / "m")
    enc = Encoder(str(folder), cache=False, batch_size=7)
    _rewrite_head(folder, 0.5)
    with pytest.raises(ParamError, match=r"the files of .* changed after this encoder was made \(fingerprint "
                                         r"'st-[0-9a-f]+' then, 'st-[0-9a-f]+' now\)") as e:
        enc.encode(TEXTS[:1])
    assert e.value.path == "model"
    assert Encoder(str(folder), cache=False, batch_size=7).encode(TEXTS[:1]).shape == (1, 32)


def test_the_fingerprint_is_hashed_once_while_the_files_are_unchanged(dense32, tmp_path, monkeypatch):
    folder = _own_copy(dense32, tmp_path / "m")
    opened: list[str] = []
    real_open = open

    def counting_open(file, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(sentence, "open", counting_open, raising=False)
    first = sentence.cached_fingerprint(str(folder))
    assert first == sentence.model_fingerprint(str(folder)) and opened
    # files written just now are hashed again at every call (a same-size rewrite within one tick of the file times)
    opened.clear()
    assert sentence.cached_fingerprint(str(folder)) == first and opened
    monkeypatch.setattr(sentence, "_RACY_NS", -10**18)  # as if the files were written long before
    sentence.cached_fingerprint(str(folder))
    opened.clear()
    assert sentence.cached_fingerprint(str(folder)) == first and opened == []  # a stat of each file, no read
    _rewrite_head(folder, 2.0)
    changed = sentence.cached_fingerprint(str(folder))
    assert changed != first and changed == sentence.model_fingerprint(str(folder)) and opened


# ---------------------------------------------------------------- a plain transformers folder
def test_a_plain_transformers_folder_says_how_it_is_pooled_and_truncated(tmp_path, caplog):
    minilm = Path(resolve_model(DEFAULT_MODEL))
    folder = tmp_path / "plain"
    _linked_copy(minilm, folder, skip=("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                                       "1_Pooling", "2_Normalize"))
    with caplog.at_level(logging.INFO, logger="ragkit"):
        Encoder(str(folder), cache=False).model
    said = [r for r in caplog.records if "plain transformers folder" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    msg = said[0].getMessage()
    assert "mean pooling" in msg and "truncates texts at 512 tokens (the tokenizer's model_max_length" in msg
    assert "save it as a sentence-transformers model" in msg
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ragkit"):
        Encoder(str(folder), cache=False, max_seq_length=128).model
        Encoder(str(minilm), cache=False).model  # a sentence-transformers folder: nothing said
    (said,) = [r.getMessage() for r in caplog.records if "plain transformers folder" in r.getMessage()]
    assert "at 128 tokens (the max_seq_length given)" in said


# ---------------------------------------------------------------- paths and folders that hold no model
def test_a_relative_model_path_that_does_not_exist_names_the_current_folder(tmp_path, monkeypatch):
    from ragkit.retrievers import Dense

    monkeypatch.chdir(tmp_path)
    here = os.getcwd()
    where = rf"misspelled; a relative path, read from the current folder '{here}' as '{os.path.join(here, 'm_gone')}'\)"
    with pytest.raises(ParamError, match=rf"model './m_gone' names a folder that does not exist \(.*{where}"):
        Encoder("./m_gone")
    with pytest.raises(ParamError, match=rf"^dense\.model: model './m_gone' names a folder that does not exist "
                                         rf"\(.*{where}"):
        Dense(model="./m_gone", k=1).fit(Corpus.from_texts(TEXTS[:2]))
    with pytest.raises(ParamError, match=r"model '/no/such/m_gone' names a folder that does not exist \(a local") as e:
        Encoder("/no/such/m_gone")
    assert "current folder" not in str(e.value)  # absolute: nothing about the current folder
    assert "read from the current folder" in (sentence.model_note("./m_gone") or "")


@pytest.mark.parametrize("files", [{"config.json": {"foo": 1}}, {"modules.json": [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]}, {"README.md": "hi"}])
def test_a_folder_that_holds_no_model_is_said_alike_with_the_operators_prefix(tmp_path, files):
    """A config.json without model_type, or a modules.json alone, failed at the load without the ``dense.model:``
    prefix a README-only folder had; and the message suggested a model file, which an encoder cannot load."""
    from ragkit.retrievers import Dense

    folder = tmp_path / "m"
    folder.mkdir()
    for name, body in files.items():
        (folder / name).write_text(body if isinstance(body, str) else json.dumps(body))
    with pytest.raises(ParamError) as e:
        Dense(model=str(folder), k=1).fit(Corpus.from_texts(TEXTS[:2]))
    msg = str(e.value)
    assert msg.startswith(f"dense.model: model '{folder}': could not load it from ") and e.value.path == "dense.model"
    assert "which holds no model" in msg and "Unrecognized model" in msg and "a model file" not in msg
    assert "name the model's own folder or a hub id" in msg
