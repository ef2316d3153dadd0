"""Dataset distillation from Python: distill(data, ...) -> DistillResult, evaluate(...)
(distill/api.py, docs/api.md). The CLI `spectral-distill` runs the same driver."""

from .api import DistillResult, distill, evaluate

__all__ = ["DistillResult", "distill", "evaluate"]
