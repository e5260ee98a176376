"""evaluation stage: exact metrics, healthy-data thresholds, baselines, figures and reports.

Takes maps and labels; knows nothing of networks.
"""
