"""Timings of the run and corpus conversions that used to loop over queries or documents in Python.

Usage::

    python bench/eval_io.py            # evaluate at 1k and 10k queries (100 documents each), corpus save/load at 50k
    python bench/eval_io.py --quick    # 200 / 1k queries, 5k documents

Prints, on synthetic data (seeded):

* ``evaluate(run, qrels, ["ndcg@10", "recall@100", "map@100", "mrr@10"])`` on a :class:`~ragkit.run.Run`, and
  the time of the conversion from the run's arrays to pytrec_eval's dicts that it does (``Run.to_dict``) next to
  the per-query loop it replaced (``_old_to_dict``, followed by ``_old_flat``, which flattened the dicts back for
  MRR@k);
* :meth:`Corpus.save <ragkit.types.Corpus.save>` and :func:`~ragkit.eval.beir.read_corpus` of the same corpus, with
  the share of each spent in JSON (the ``json`` module's encoder / decoder, from a profile), next to the one
  ``json.dumps`` / ``json.loads`` per document of ``_old_write_jsonl`` / ``_old_read_corpus``.

The ``_old_*`` functions are copies of the code before the change, kept so that one process times both (the
files each writes and the corpus each reads are checked equal first).  Nothing is written but temporary files.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ragkit import Corpus, evaluate  # noqa: E402
from ragkit._files import utf8_lines  # noqa: E402
from ragkit.errors import DataError  # noqa: E402
from ragkit.eval import beir  # noqa: E402
from ragkit.run import Run, _check_unique  # noqa: E402
from ragkit.types import _jsonable  # noqa: E402

METRICS = ["ndcg@10", "recall@100", "map@100", "mrr@10"]


# ----------------------------------------------------------------------------- the code before the change
def _old_to_dict(run: Run, k: int | None = None) -> dict[str, dict[str, float]]:
    """``Run.to_dict`` before the change: one ``tolist`` per query."""
    out: dict[str, dict[str, float]] = {}
    for q, d, s in run:
        if k is not None:
            _check_unique(q, d, "Run")
            d, s = d[:k], s[:k]
        out[q] = dict(zip(d.tolist(), s.astype(float).tolist()))
        if len(out[q]) != len(d):
            _check_unique(q, d, "Run")
    return out


def _old_flat(run: Mapping[Any, Mapping[str, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``ragkit.run._flat`` (which evaluate's MRR@k and BEIR metrics no longer call on a Run's dicts)."""
    vals = list(run.values())
    lens = np.fromiter(map(len, vals), np.int64, len(vals))
    n = int(lens.sum())
    docs = np.empty(n, dtype=object)
    docs[:] = list(chain.from_iterable(vals))
    return lens, docs, np.fromiter(chain.from_iterable(v.values() for v in vals), np.float64, n)


def _old_write_jsonl(corpus: Corpus, f: Any) -> None:
    """``Corpus._write_jsonl`` before the change: one ``json.dumps`` per document."""
    keys = list(corpus.metadata)
    for i, (d, t, x) in enumerate(zip(corpus.ids.tolist(), corpus.titles.tolist(), corpus.texts.tolist())):
        rec: dict[str, Any] = {"_id": d, "title": t, "text": x}
        if keys:
            try:
                rec["metadata"] = {k: _jsonable(corpus.metadata[k][i], k) for k in keys}
            except DataError as e:
                raise DataError(str(e).replace("Corpus.save: ", f"Corpus.save: document {d!r}: ", 1)
                                + "; or remove the document") from None
        f.write(json.dumps(rec, ensure_ascii=False, allow_nan=False) + "\n")


def _old_read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``ragkit.eval.beir._read_jsonl`` before the change: one ``json.loads`` per line."""
    if not path.is_file():
        raise beir._not_found(path)
    beir._refuse_gzip(path)
    first = True
    for n, raw, line in utf8_lines(path, "BEIR files are UTF-8 JSON lines"):
        if not line.strip():
            continue
        if first and line.lstrip().startswith("["):
            raise DataError(f"{path}:{n}: this is a JSON array; expected JSON Lines: one object per line "
                            "({\"_id\": ..., ...} on each line, no enclosing [ ]); convert it, e.g. "
                            f"jq -c '.[]' {path.name} > new{path.suffix or '.jsonl'}")
        first = False
        try:
            rec = json.loads(text := line.rstrip("\r\n"))
        except json.JSONDecodeError as e:
            if "\r" in text:
                raise beir._cr_endings(path, n, text) from None
            raise DataError(f"{path}:{n}: malformed JSON line ({beir._json_problem(e)})") from None
        if not isinstance(rec, dict) or "_id" not in rec:
            raise DataError(f"{path}:{n}: expected an object with an '_id' field, got {line.strip()[:80]!r}")
        if not isinstance(rec["_id"], (str, int)) or isinstance(rec["_id"], bool):
            raise DataError(f"{path}:{n}: '_id' must be a string (or an integer), got {type(rec['_id']).__name__} "
                            f"{rec['_id']!r:.40}")
        if isinstance(rec["_id"], str):
            beir._check_id(rec["_id"], path, n)
        if beir._SURROGATE.search(raw):
            beir._check_no_lone_surrogate(rec, path, n)
        yield n, rec


def _old_read_corpus(path: Path) -> Corpus:
    """``read_corpus`` before the change, over :func:`_old_read_jsonl`."""
    ids: list[str] = []
    titles: list[str] = []
    texts: list[str] = []
    metas: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for n, rec in _old_read_jsonl(path):
        did = str(rec["_id"])
        if did in seen:
            raise DataError(f"{path}:{n}: duplicate document id {did!r} (first on line {seen[did]})")
        seen[did] = n
        if "text" not in rec and "title" not in rec:
            raise DataError(f"{path}:{n}: document {did!r} has neither a 'text' nor a 'title' field (keys: "
                            f"{sorted(rec)}); a BEIR corpus line is {{\"_id\", \"title\", \"text\"}}")
        ids.append(did)
        titles.append(beir._text(rec.get("title"), path, n, "title"))
        texts.append(beir._text(rec.get("text"), path, n, "text"))
        meta = rec.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise DataError(f"{path}:{n}: document {did!r} has 'metadata' {str(meta)[:60]!r} ({type(meta).__name__}); "
                            "expected an object of field -> value")
        metas.append(meta or {})
    if not ids:
        raise DataError(f"{path}: the corpus is empty")
    keys = sorted({k for m in metas if isinstance(m, dict) for k in m})
    meta = {k: np.fromiter((m.get(k) if isinstance(m, dict) else None for m in metas), dtype=object, count=len(metas))
            for k in keys}
    return Corpus(ids=np.array(ids, dtype=object), texts=np.array(texts, dtype=object),
                  titles=np.array(titles, dtype=object), metadata=meta)


# ----------------------------------------------------------------------------- data and timers
def _texts(n: int, words: int, seed: int) -> list[str]:
    vocab = np.array([f"w{i}" for i in range(5000)])
    idx = np.random.default_rng(seed).zipf(1.3, size=(n, words)) % 5000
    return [" ".join(row) for row in vocab[idx]]


def _run(n_q: int, n_docs: int, depth: int = 100, seed: int = 0) -> tuple[Run, dict[str, dict[str, int]]]:
    rng = np.random.default_rng(seed)
    ids = np.array([f"d{i}" for i in range(n_docs)], dtype=object)
    rows = np.argsort(rng.random((n_q, n_docs)), axis=1)[:, :depth] if n_docs <= 5000 else \
        np.stack([rng.choice(n_docs, depth, replace=False) for _ in range(n_q)])
    scores = -np.sort(-rng.random((n_q, depth)).astype(np.float32), axis=1)
    qids = [f"q{i}" for i in range(n_q)]
    run = Run(qids, [ids[r] for r in rows], list(scores))
    qrels = {q: {f"d{j}": 1 for j in rng.integers(0, n_docs, 3).tolist()} for q in qids}
    return run, qrels


def best_of(fn: Callable[[], Any], repeat: int = 3) -> float:
    """The best wall time of ``repeat`` calls of ``fn``, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def json_share(fn: Callable[[], Any]) -> tuple[float, float]:
    """``(profiled seconds, share of them inside the json module)`` of one call of ``fn``."""
    pr = cProfile.Profile()
    pr.enable()
    fn()
    pr.disable()
    st = pstats.Stats(pr, stream=io.StringIO())
    total = st.total_tt  # type: ignore[attr-defined]
    inside = sum(v[2] for (file, _, name), v in st.stats.items()  # type: ignore[attr-defined]
                 if "/json/" in file.replace("\\", "/") or file == "~" and "json" in name)
    return total, inside / total if total else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test)")
    args = ap.parse_args()
    sizes = (200, 1000) if args.quick else (1000, 10000)
    n_corpus = 5000 if args.quick else 50000

    for n_q in sizes:
        run, qrels = _run(n_q, 20000)
        t_eval = best_of(lambda: evaluate(run, qrels, metrics=METRICS))
        t_new = best_of(lambda: run.to_dict())
        t_old = best_of(lambda: _old_flat(_old_to_dict(run)))
        assert run.to_dict() == _old_to_dict(run)
        print(f"evaluate {n_q:>6} queries x 100: {t_eval:.3f}s; run -> dicts {t_new:.3f}s now "
              f"(old to_dict + _flat: {t_old:.3f}s, x{t_old / max(t_new, 1e-9):.1f})")

    corpus = Corpus(ids=[f"d{i}" for i in range(n_corpus)], texts=_texts(n_corpus, 40, 1),
                    titles=_texts(n_corpus, 3, 2))
    with tempfile.TemporaryDirectory() as tmp:
        new, old = Path(tmp) / "new.jsonl", Path(tmp) / "old.jsonl"
        t_save = best_of(lambda: corpus.save(new))

        def old_save() -> None:
            with open(old, "w", encoding="utf-8") as f:
                _old_write_jsonl(corpus, f)

        t_old_save = best_of(old_save)
        assert new.read_bytes() == old.read_bytes(), "the files differ"
        t_load = best_of(lambda: beir.read_corpus(new))
        t_old_load = best_of(lambda: _old_read_corpus(new))
        a, b = beir.read_corpus(new), _old_read_corpus(new)
        assert a.ids.tolist() == b.ids.tolist() and a.texts.tolist() == b.texts.tolist()
        _, share_save = json_share(lambda: corpus.save(new))
        _, share_old_save = json_share(old_save)
        _, share_load = json_share(lambda: beir.read_corpus(new))
        _, share_old_load = json_share(lambda: _old_read_corpus(new))
    print(f"Corpus.save {n_corpus} docs: {t_save:.3f}s ({share_save:.0%} in json; one dumps per document: "
          f"{t_old_save:.3f}s, {share_old_save:.0%} in json, x{t_old_save / max(t_save, 1e-9):.1f})")
    print(f"read_corpus {n_corpus} docs: {t_load:.3f}s ({share_load:.0%} in json; one loads per line: "
          f"{t_old_load:.3f}s, {share_old_load:.0%} in json, x{t_old_load / max(t_load, 1e-9):.1f})")


if __name__ == "__main__":
    main()
