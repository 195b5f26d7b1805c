"""Keras layers tuned for meta-learning on the torch backend."""

from metakeras.layers.batch_normalization import BatchNormalization

__all__ = ["BatchNormalization"]
