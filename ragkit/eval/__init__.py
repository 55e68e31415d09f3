"""Evaluation: BEIR loading, trec_eval metrics, run files, reports."""

from ragkit.eval.beir import BeirDataset, download_beir, load_beir, read_corpus, read_qrels, read_queries
from ragkit.eval.metrics import EvalResult, evaluate, paired_randomization_test, parse_metric

__all__ = [
    "BeirDataset", "load_beir", "download_beir", "read_corpus", "read_qrels", "read_queries",
    "evaluate", "EvalResult", "paired_randomization_test", "parse_metric",
]
