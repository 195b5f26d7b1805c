"""Keras layers tuned for meta-learning on the torch backend."""

from metakeras.layers.batch_normalization import BatchNormalization
from metakeras.layers.conv2d import Conv2D

__all__ = ["BatchNormalization", "Conv2D"]
