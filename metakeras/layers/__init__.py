"""Keras layers tuned for meta-learning on the torch backend."""

from metakeras.layers.batch_normalization import BatchNormalization
from metakeras.layers.conv2d import Conv2D
from metakeras.layers.max_pooling2d import MaxPooling2D
from metakeras.layers.pair_comparison import PairComparison

__all__ = ["BatchNormalization", "Conv2D", "MaxPooling2D", "PairComparison"]
