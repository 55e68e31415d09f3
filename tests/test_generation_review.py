"""Review fixes of generation: transformers' cache field, the dequantized copy of a GGUF model,
``ragkit ask``'s disk tier, the LangChain backend's streaming and inputs, damaged chunk-cache files,
and repeated prompts in cachecraft mode.

Most tests use the tiny 4-layer checkpoints of ``tests/test_cachecraft.py`` (seconds); the ``slow``
ones use SmolLM2-135M, loaded once per process (from its dequantized copy after the first run).
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
from test_cachecraft import CHUNKS, QUESTION, TINY_CHUNKS, TINY_Q, needs_model, tiny  # noqa: F401


class _Records(logging.Handler):
    """Collects the records of one logger (transformers' does not propagate to the root outside CI)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def transformers_log():
    """Records of the ``transformers`` logger, its once-only warnings forgotten first."""
    from transformers.utils import logging as tlog

    tlog.warning_once.cache_clear()  # warning_once is lru-cached: a warning seen earlier in the process is silent
    handler = _Records()
    log = logging.getLogger("transformers")
    log.addHandler(handler)
    try:
        yield handler.records
    finally:
        log.removeHandler(handler)


# ----------------------------------------------------------------------------- 1. the output's cache field
def test_generating_logs_no_deprecated_cache_field_warning(tiny, transformers_log):  # noqa: F811
    """Reading ``out.past_key_values`` logged transformers' "`past_key_values`/`cache_params` are
    deprecated" at every ``ragkit ask``; every mode reads the output's cache by its current name."""
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny[0]).load()
    g.prefill(g.segments("warm-up", [TINY_CHUNKS[0]]), "full", capture=True)
    for mode in ("full", "prefix", "prefix", "naive", "cachecraft"):
        assert isinstance(g.generate(TINY_Q, TINY_CHUNKS, mode=mode, max_new_tokens=3), str)
    said = [r.getMessage() for r in transformers_log if "deprecated" in r.getMessage()]
    assert said == []


# ----------------------------------------------------------------------------- 2. GGUF copy
def _tiny_model(path: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def test_a_gguf_copy_reloads_bit_for_bit_and_a_damaged_one_is_refused_and_rebuilt(tiny, tmp_path, caplog):  # noqa: F811
    from ragkit.generators._model_source import _COPY_RECORD, _read_gguf_copy, _same_model, _write_gguf_copy

    tok, model = _tiny_model(tiny[0])
    folder = tmp_path / "llm" / "file-0123"
    assert _write_gguf_copy(folder, "file-0123", tok, model)
    got = _read_gguf_copy(folder, "file-0123")
    assert got is not None and _same_model((tok, model), got) is None
    assert _read_gguf_copy(folder, "file-4567") is None  # the copy of another GGUF file is not this one's
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    f = folder / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-7] ^= 0x10  # one flipped bit inside the weights: loads fine, computes something else
    f.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert _read_gguf_copy(folder, "file-0123") is None
    assert "damaged" in caplog.text and "checksum mismatch" in caplog.text
    assert _write_gguf_copy(folder, "file-0123", tok, model)  # written again over the damaged one
    assert _read_gguf_copy(folder, "file-0123") is not None
    (folder / "config.json").unlink()
    assert _read_gguf_copy(folder, "file-0123") is None  # a missing file too
    (folder / _COPY_RECORD).write_text("{")
    assert _read_gguf_copy(folder, "file-0123") is None
    _, other = _tiny_model(tiny[1])
    assert "weight" in (_same_model((tok, model), (tok, other)) or "")  # the check sees other weights


@needs_model
@pytest.mark.slow
def test_the_default_gguf_loads_from_its_copy_with_the_ggufs_identity(monkeypatch):
    """The GGUF was parsed at every load (~20 s of CPU); after the first, its dequantized copy is read,
    and the generator keeps the GGUF's fingerprint (the chunk caches' key)."""
    from ragkit.encoders.sentence import model_fingerprint
    from ragkit.generators import local
    from ragkit.generators.local import LocalGenerator, default_gguf, gguf_copy_dir

    first = LocalGenerator(max_chunk_tokens=64).load()  # builds the copy if this cache has none yet
    key = tuple(default_gguf())  # (other tests leave models of other GGUFs loaded in this process)
    assert key in local._LOADED, list(local._LOADED)
    fp = model_fingerprint("/".join(default_gguf()))
    assert first.model_id_ == fp and (gguf_copy_dir(fp) / "model.safetensors").is_file()
    kept = local._LOADED.pop(key)
    try:
        again = LocalGenerator(max_chunk_tokens=64).load()  # ~1 s (the GGUF: ~20 s of CPU)
        # read from the copy, not parsed (a CPU-time bound here flaked on loaded machines: OpenMP spins count)
        assert local._LOADED[key].source == str(gguf_copy_dir(fp)) and again.model_id_ == fp
        assert again.tokenizer_id_ == first.tokenizer_id_
        seg = first.segments(QUESTION, CHUNKS[:2])
        assert torch.equal(first.prefill(seg, "full").logits, again.prefill(seg, "full").logits)
    finally:
        local._LOADED[key] = kept


# ----------------------------------------------------------------------------- 3. ragkit ask's disk tier
@needs_model
@pytest.mark.slow
def test_ask_keeps_its_chunks_on_disk_for_the_next_ask(tmp_path, monkeypatch):
    """``ragkit ask`` (cachecraft by default) kept no chunk on disk: every ask paid the capture pass and
    reused nothing.  Its generate step now writes them under the ragkit cache (or --cache-dir), and the
    next ask reads them; a pipeline's own generate step keeps its settings (the flag is refused there)."""
    import gc

    from typer.testing import CliRunner

    from ragkit.caches import ChunkKVCache
    from ragkit.cli import app
    from ragkit.encoders.sentence import model_fingerprint
    from ragkit.generators.local import LocalGenerator, default_gguf

    LocalGenerator().load()  # the model stays loaded in this process, before the cache moves
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    docs = tmp_path / "corpus.jsonl"
    docs.write_text("\n".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) for i, t in enumerate(CHUNKS)))
    ask = ["ask", "--pipeline", "bm25", "--data", str(docs), "--top-k", "2", "--max-new-tokens", "4", QUESTION]
    res = CliRunner().invoke(app, ask)
    assert res.exit_code == 0, res.output
    gc.collect()  # the generate step's store is dropped: its memory tier reaches the disk (as at a process's exit)
    folder = tmp_path / "cache" / "chunks" / model_fingerprint("/".join(default_gguf()))
    assert len(list(folder.rglob("*.safetensors"))) == 2
    read: list[object] = []
    real = ChunkKVCache._read_file
    monkeypatch.setattr(ChunkKVCache, "_read_file", lambda self, f, *a, **kw: read.append(f) or real(self, f, *a, **kw))
    res = CliRunner().invoke(app, ask)
    assert res.exit_code == 0, res.output
    assert len(read) == 2  # both chunks came from the first ask's files
    mine = tmp_path / "mine"
    res = CliRunner().invoke(app, ask[:-1] + ["--cache-dir", str(mine), QUESTION])
    assert res.exit_code == 0, res.output
    gc.collect()
    assert (mine / "manifest.json").is_file() and len(list(mine.rglob("*.safetensors"))) == 2
    yaml = tmp_path / "gen.yaml"
    yaml.write_text("pipeline:\n  - bm25: {k: 2}\n  - generate: {top_k: 2, max_new_tokens: 4}\n")
    res = CliRunner().invoke(app, ["ask", "--pipeline", str(yaml), "--data", str(docs), "--cache-dir", str(mine),
                                   QUESTION])
    assert res.exit_code == 2 and "--cache-dir" in res.output and "own generate step" in res.output
    res = CliRunner().invoke(app, ["ask", "--help"])
    assert "--cache-dir" in res.output


# ----------------------------------------------------------------------------- 4. the LangChain backend
def _fake_chat(*replies: str):
    pytest.importorskip("langchain_core")
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    return GenericFakeChatModel(messages=iter([AIMessage(content=r) for r in replies]))


@pytest.mark.parametrize("reply", ["  Yes, it does.  ", " White matter matures. ", "\nA\n\nB \n", "   ", "ok"])
def test_langchain_streamed_pieces_join_to_the_returned_answer(reply):
    """Pieces were forwarded raw while the joined answer was stripped (' White matter matures. '
    streamed, 'White matter matures.' returned); now they join to exactly the answer."""
    from ragkit.generators.langchain_chat import LangChainGenerator

    pieces: list[str] = []
    answer = LangChainGenerator(_fake_chat(reply)).generate(QUESTION, CHUNKS[:2], on_token=pieces.append)
    assert answer == reply.strip() == "".join(pieces)
    assert all(pieces)
    assert LangChainGenerator(_fake_chat(reply)).generate(QUESTION, CHUNKS[:2]) == reply.strip()


def test_langchain_operator_streams_what_it_answers():
    from ragkit.generators import Generate
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    corpus = Corpus.from_records([{"_id": f"d{i}", "text": t} for i, t in enumerate(CHUNKS)])
    chat = _fake_chat(" Vitamin D alone does not. ")
    pipe = Pipeline([BM25(k=3), Generate(backend="langchain", top_k=2).with_chat_model(chat)]).fit(corpus)
    pieces: list[str] = []
    out = pipe.search([QUESTION], generate={"on_token": lambda qi, s: pieces.append(s)})
    assert out.values["answer"] == ["Vitamin D alone does not."] == ["".join(pieces)]


def test_langchain_refuses_one_string_for_the_chunks():
    """A str of chunks was taken character by character (one 'document' per letter)."""
    from ragkit.errors import ParamError
    from ragkit.generators.langchain_chat import LangChainGenerator

    g = LangChainGenerator(_fake_chat("x", "x"))
    with pytest.raises(ParamError, match=r"LangChainGenerator: chunks is one str .*wrap it in a list"):
        g.generate(QUESTION, "a single string chunk")
    with pytest.raises(ParamError, match="chunks is one str"):
        list(g.stream(QUESTION, "a single string chunk"))
    with pytest.raises(ParamError, match=r"chunks\[1\] is 3"):
        g.messages(QUESTION, ["text", 3])  # type: ignore[list-item]
    with pytest.raises(ParamError, match="question"):
        g.messages(None, ["text"])  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- 5. damaged chunk-cache files
def _disk_variant(folder):
    from ragkit.caches import ChunkKVCache, ChunkVariant

    g = torch.Generator().manual_seed(0)
    v = ChunkVariant(keys=torch.randn(2, 1, 4, 8, generator=g), values=torch.randn(2, 1, 4, 8, generator=g), start=5)
    c = ChunkKVCache("m", "t", disk_dir=folder)
    c.put("k1", v)
    c.flush()
    (f,) = (folder / "k1").glob("*.safetensors")
    return v, f


@pytest.mark.parametrize("where", ["keys", "values", "metadata"])
def test_a_changed_byte_in_a_chunk_cache_file_is_refused_with_a_warning(tmp_path, caplog, where):
    """A flipped byte inside the tensor data loaded and served other keys/values; now the file's digest
    does not match: deleted, with a warning, and the chunk is a miss."""
    import struct

    from safetensors import safe_open

    from ragkit.caches import ChunkKVCache

    v, f = _disk_variant(tmp_path / "kv")
    data = bytearray(f.read_bytes())
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    if where == "metadata":  # a digit of the chunk's position: still parses
        at = data.index(b'"start":"5"') + len('"start":"')
        data[at] = ord("6")
    else:
        begin = header[where]["data_offsets"][0]
        data[8 + n + begin + 3] ^= 0x04
    f.write_bytes(bytes(data))
    with safe_open(str(f), framework="pt") as fh:  # the file itself still loads
        assert fh.metadata()["start"] in ("5", "6")
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert ChunkKVCache("m", "t", disk_dir=tmp_path / "kv").lookup("k1") == []
    assert not f.exists()
    assert "damaged chunk-cache file" in caplog.text and "sha256" in caplog.text


def test_a_truncated_chunk_cache_file_is_reported_and_an_old_file_without_digest_still_loads(tmp_path, caplog):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from ragkit.caches import ChunkKVCache

    v, f = _disk_variant(tmp_path / "kv")
    with safe_open(str(f), framework="pt") as fh:
        meta = {k: x for k, x in (fh.metadata() or {}).items() if k != "sha256"}
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    save_file(tensors, str(f), metadata=meta)  # as written before the digest was kept: read unchecked
    (got,) = ChunkKVCache("m", "t", disk_dir=tmp_path / "kv").lookup("k1")
    assert torch.equal(got.keys, v.keys) and torch.equal(got.values, v.values)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert ChunkKVCache("m", "t", disk_dir=tmp_path / "kv").lookup("k1") == []
    assert "damaged chunk-cache file" in caplog.text and not f.exists()
