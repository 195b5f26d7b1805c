"""Meta-learning algorithms as Keras models, and reference learners."""

from metakeras.models.anil import ANIL
from metakeras.models.conv4 import conv4
from metakeras.models.maml import MAML
from metakeras.models.meta_model import MetaModel
from metakeras.models.meta_sgd import MetaSGD
from metakeras.models.protonet import ProtoNet, PrototypeClassifier, prototype_logits
from metakeras.models.reptile import Reptile

__all__ = [
    "ANIL",
    "MAML",
    "MetaModel",
    "MetaSGD",
    "PrototypeClassifier",
    "ProtoNet",
    "Reptile",
    "conv4",
    "prototype_logits",
]
