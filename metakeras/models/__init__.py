"""Meta-learning algorithms as Keras models, and reference learners.

The algorithms by name (`get("fomaml")`, `available()`) and their default
settings live in `metakeras.models.registry`; training recipes that
reproduce the README's results in `metakeras.models.presets`.
"""

from metakeras.models import presets, registry
from metakeras.models._pretraining import (
    center_distances,
    cosine_scale,
    head_logits,
    moved_centers,
)
from metakeras.models.anil import ANIL
from metakeras.models.baseline import (
    Baseline,
    BaselinePlusPlus,
    HeadClassifier,
    fit_head,
)
from metakeras.models.conv4 import conv4
from metakeras.models.imaml import IMAML
from metakeras.models.maml import MAML
from metakeras.models.maml_plus_plus import MAMLPlusPlus, multi_step_loss_weights
from metakeras.models.matching_net import (
    MatchingClassifier,
    MatchingNet,
    matching_logits,
)
from metakeras.models.meta_model import MetaModel
from metakeras.models.meta_sgd import MetaSGD
from metakeras.models.protonet import ProtoNet, PrototypeClassifier, prototype_logits
from metakeras.models.r2d2 import R2D2, RidgeClassifier, ridge_logits
from metakeras.models.registry import Algorithm, available, get
from metakeras.models.relation_net import (
    RelationClassifier,
    RelationNet,
    relation_logits,
    relation_module,
)
from metakeras.models.reptile import Reptile
from metakeras.models.resnet12 import resnet12
from metakeras.models.simpleshot import (
    SimpleShot,
    SimpleShotClassifier,
    cl2n,
    simpleshot_logits,
)

__all__ = [
    "ANIL",
    "Algorithm",
    "IMAML",
    "Baseline",
    "BaselinePlusPlus",
    "HeadClassifier",
    "MAML",
    "MAMLPlusPlus",
    "MatchingClassifier",
    "MatchingNet",
    "MetaModel",
    "MetaSGD",
    "PrototypeClassifier",
    "ProtoNet",
    "R2D2",
    "RelationClassifier",
    "RelationNet",
    "Reptile",
    "RidgeClassifier",
    "SimpleShot",
    "SimpleShotClassifier",
    "available",
    "center_distances",
    "cl2n",
    "conv4",
    "cosine_scale",
    "fit_head",
    "get",
    "head_logits",
    "matching_logits",
    "moved_centers",
    "multi_step_loss_weights",
    "presets",
    "prototype_logits",
    "registry",
    "relation_logits",
    "relation_module",
    "resnet12",
    "ridge_logits",
    "simpleshot_logits",
]
