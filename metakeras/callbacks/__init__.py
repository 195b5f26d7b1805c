"""Compression callbacks: pruning and quantization inside meta-training.

`MagnitudePruning` zeroes the smallest weights on a schedule (`ConstantSparsity`,
`PolynomialDecay`, the names of TensorFlow Model Optimization) and keeps them
zero through the outer optimizer step and the inner-loop adaptation;
`strip_pruning` removes the masks. `Quantization` quantizes weights to int8
(int4, float8) at the end of training, optionally after quantization-aware
fine-tuning; `quantize_weights` does the same outside `fit`.
`compression_report` (from `metakeras.evaluation`, re-exported here) compares
models before and after compression on identical evaluation episodes.
`ZeroHead` keeps a MAML learner's head at zero between outer steps (the
"zeroing trick").
"""

from metakeras.callbacks.pruning import MagnitudePruning, PruningMask, strip_pruning
from metakeras.callbacks.quantization import (
    FakeQuantization,
    Quantization,
    quantize_weights,
)
from metakeras.callbacks.schedules import (
    ConstantSparsity,
    PolynomialDecay,
    PruningSchedule,
)
from metakeras.callbacks.zero_head import ZeroHead
from metakeras.evaluation.compression import compression_report

__all__ = [
    "ConstantSparsity",
    "FakeQuantization",
    "MagnitudePruning",
    "PolynomialDecay",
    "PruningMask",
    "PruningSchedule",
    "Quantization",
    "compression_report",
    "quantize_weights",
    "strip_pruning",
    "ZeroHead",
]
