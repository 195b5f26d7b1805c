"""Meta-learning algorithms as Keras models."""

from metakeras.models.maml import MAML
from metakeras.models.meta_model import MetaModel

__all__ = ["MAML", "MetaModel"]
