"""evaluation stage: exact metrics, healthy-data thresholds, baselines, figures and reports.

Takes maps and labels; knows nothing of networks. The usual entry points::

    from disyre.evaluation import Case, evaluate_cases
    from disyre.evaluation.report import write_report, write_comparison

    res = evaluate_cases(cases, healthy_maps=val_maps)      # both streamed
    write_report("report_dir", res, config={...})
"""

from disyre.evaluation.harness import Case, EvaluationResult, evaluate_cases
from disyre.evaluation.thresholds import Thresholds, load_thresholds, save_thresholds

__all__ = ["Case", "EvaluationResult", "evaluate_cases", "Thresholds", "load_thresholds",
           "save_thresholds"]
