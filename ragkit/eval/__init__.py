"""Evaluation: BEIR loading, trec_eval metrics, run files, reports (hubness, filtering, diversity)."""

from ragkit.eval.beir import (
    BeirDataset,
    beir_qrels,
    beir_subsets,
    download_beir,
    load_beir,
    read_corpus,
    read_qrels,
    read_queries,
    read_query_file,
    write_beir,
)
from ragkit.eval.compare import Comparison, SystemResult, compare, load_result
from ragkit.eval.diversity import (
    alpha_ndcg,
    cluster_entropy,
    distinct_clusters,
    intra_list_diversity,
    near_duplicate_rate,
    subtopic_recall,
)
from ragkit.eval.filtering import FilterReport, expected_calibration_error, filter_report, plot_pr_curves, pr_curve
from ragkit.eval.hubness import HubnessReport, hubness, k_occurrence, random_skewness
from ragkit.eval.metrics import (
    EvalResult,
    check_relevance_level,
    drop_identical_ids,
    evaluate,
    paired_randomization_test,
    parse_metric,
    parse_metrics,
    per_query_metrics,
    per_query_ndcg,
    sign_flip_pvalues,
)

__all__ = [
    "BeirDataset", "load_beir", "beir_qrels", "beir_subsets", "download_beir", "read_corpus", "read_qrels",
    "read_queries", "read_query_file", "write_beir",
    "evaluate", "EvalResult", "paired_randomization_test", "parse_metric", "parse_metrics", "per_query_ndcg",
    "per_query_metrics", "drop_identical_ids", "sign_flip_pvalues", "check_relevance_level",
    "compare", "load_result", "Comparison", "SystemResult",
    "HubnessReport", "hubness", "k_occurrence", "random_skewness",
    "FilterReport", "expected_calibration_error", "filter_report", "pr_curve", "plot_pr_curves",
    "alpha_ndcg", "cluster_entropy", "distinct_clusters", "intra_list_diversity", "near_duplicate_rate",
    "subtopic_recall",
]
