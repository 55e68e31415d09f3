"""Timings of the run and corpus conversions that used to loop over queries or documents in Python.

Usage::

    python bench/eval_io.py            # evaluate at 1k and 10k queries (100 documents each), corpus save/load at 50k
    python bench/eval_io.py --quick    # 200 / 1k queries, 5k documents

Prints, on synthetic data (seeded):

* ``evaluate(run, qrels, ["ndcg@10", "recall@100", "map@100", "mrr@10"])`` on a :class:`~ragkit.run.Run`, and
  the share of it the conversion from the run's arrays to pytrec_eval's dicts takes (``Run.to_dict``, one
  ``tolist`` per query: a concatenated version tried on 2026-12-06 was slower, and was not kept);
* :meth:`Corpus.save <ragkit.types.Corpus.save>` and :func:`~ragkit.eval.beir.read_corpus` of the same corpus, with
  the share of each spent in JSON (the ``json`` module's encoder / decoder, from a profile), next to the one
  ``json.dumps`` / ``json.loads`` per document of ``_old_write_jsonl`` / ``_old_read_corpus``.

The ``_old_*`` functions are copies of the code before the change, kept in ``tests/test_batched_io.py`` (which
checks the new code against them), so that one process times both (the files each writes and the corpus each
reads are checked equal first).  Each old / new pair is timed in interleaved rounds (``_common.interleaved``:
the order shuffled afresh each round, seeded), until each has been timed ``--min-seconds`` in all (0.5 s; 0.05 s
with ``--quick``) and at least ``--repeat`` rounds; a time is its best round, so a ratio compares calls from the
same rounds.  The evaluate timings are best of ``--repeat`` calls.

Prints a ``machine:`` line first and writes ``bench/out/eval_io.json`` (``eval_io_quick.json`` with ``--quick``;
in the folder ``RAGKIT_BENCH_OUT`` names instead of bench/out, when set): the machine, the sizes and every
timing printed.  Nothing else is written but temporary files.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

# the old readers kept in tests/ as references; appended, and the checkout's root never added: its ragkit/
# folder (without ragkit.pipelines and the others) would hide a regular (non-editable) install of ragkit
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_batched_io import _old_read_corpus, _old_write_jsonl  # noqa: E402

from ragkit import Corpus, evaluate  # noqa: E402
from ragkit.eval import beir  # noqa: E402
from ragkit.run import Run  # noqa: E402

from _common import OUT, add_timing_args, best_of, interleaved, print_machine, timing_args, write_atomic  # noqa: E402

METRICS = ["ndcg@10", "recall@100", "map@100", "mrr@10"]


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
    add_timing_args(ap, "at least this many interleaved rounds of each old / new pair (and calls of each evaluate)")
    args = ap.parse_args()
    timing_args(ap, args)
    sizes = (200, 1000) if args.quick else (1000, 10000)
    n_corpus = 5000 if args.quick else 50000
    res: dict = {"machine": print_machine(threads=1), "quick": args.quick, "repeat": args.repeat,
                 "min_seconds": args.min_seconds, "metrics": METRICS, "evaluate": []}

    for n_q in sizes:
        run, qrels = _run(n_q, 20000)
        t_eval = best_of(lambda: evaluate(run, qrels, metrics=METRICS), args.repeat)[0]
        t_dicts = best_of(lambda: run.to_dict(), args.repeat)[0]
        print(f"evaluate {n_q:>6} queries x 100: {t_eval:.3f}s; run -> dicts (Run.to_dict) {t_dicts:.3f}s, "
              f"{t_dicts / max(t_eval, 1e-9):.0%} of it")
        res["evaluate"].append({"queries": n_q, "depth": 100, "evaluate_s": round(t_eval, 4),
                                "to_dict_s": round(t_dicts, 4), "to_dict_share": round(t_dicts / max(t_eval, 1e-9), 3)})

    corpus = Corpus(ids=[f"d{i}" for i in range(n_corpus)], texts=_texts(n_corpus, 40, 1),
                    titles=_texts(n_corpus, 3, 2))
    with tempfile.TemporaryDirectory() as tmp:
        new, old = Path(tmp) / "new.jsonl", Path(tmp) / "old.jsonl"
        def old_save() -> None:
            with open(old, "w", encoding="utf-8") as f:
                _old_write_jsonl(corpus, f)

        saves, _, save_rounds = interleaved({"new": lambda: corpus.save(new), "old": old_save}, args.repeat,
                                            args.min_seconds)
        t_save, t_old_save = saves["new"], saves["old"]
        assert new.read_bytes() == old.read_bytes(), "the files differ"
        loads, _, load_rounds = interleaved({"new": lambda: beir.read_corpus(new),
                                             "old": lambda: _old_read_corpus(new)}, args.repeat, args.min_seconds)
        t_load, t_old_load = loads["new"], loads["old"]
        a, b = beir.read_corpus(new), _old_read_corpus(new)
        assert a.ids.tolist() == b.ids.tolist() and a.texts.tolist() == b.texts.tolist()
        _, share_save = json_share(lambda: corpus.save(new))
        _, share_old_save = json_share(old_save)
        _, share_load = json_share(lambda: beir.read_corpus(new))
        _, share_old_load = json_share(lambda: _old_read_corpus(new))
    print(f"Corpus.save {n_corpus} docs: {t_save:.3f}s ({share_save:.0%} in json; one dumps per document: "
          f"{t_old_save:.3f}s, {share_old_save:.0%} in json, x{t_old_save / max(t_save, 1e-9):.2f}; "
          f"best of {save_rounds} interleaved rounds)")
    print(f"read_corpus {n_corpus} docs: {t_load:.3f}s ({share_load:.0%} in json; one loads per line: "
          f"{t_old_load:.3f}s, {share_old_load:.0%} in json, x{t_old_load / max(t_load, 1e-9):.2f}; "
          f"best of {load_rounds} interleaved rounds)")
    res["corpus"] = {"documents": n_corpus, "words_per_text": 40, "words_per_title": 3}
    for name, t_new, t_old, share_new, share_old, rounds in (
            ("save", t_save, t_old_save, share_save, share_old_save, save_rounds),
            ("read_corpus", t_load, t_old_load, share_load, share_old_load, load_rounds)):
        res[name] = {"new_s": round(t_new, 4), "old_s": round(t_old, 4), "old_over_new": round(t_old / t_new, 3),
                     "new_json_share": round(share_new, 3), "old_json_share": round(share_old, 3), "rounds": rounds}
    path = OUT / ("eval_io_quick.json" if args.quick else "eval_io.json")
    write_atomic(path, json.dumps(res, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
