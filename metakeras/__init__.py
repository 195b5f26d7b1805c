"""metakeras: meta-learning with the Keras 3 API on the PyTorch backend."""

from metakeras._backend import ensure_torch_backend

ensure_torch_backend()

from metakeras import (  # noqa: E402
    callbacks,
    config,
    datasets,
    distributed,
    evaluation,
    initializers,
    layers,
    models,
    sklearn,
    tasks,
)
from metakeras.inner import InnerLoop  # noqa: E402
from metakeras.models import (  # noqa: E402
    ANIL,
    IMAML,
    MAML,
    R2D2,
    Baseline,
    BaselinePlusPlus,
    MAMLPlusPlus,
    MatchingNet,
    MetaModel,
    MetaSGD,
    ProtoNet,
    RelationNet,
    Reptile,
    SimpleShot,
)

__version__ = "0.1.0"

__all__ = [
    "ANIL",
    "IMAML",
    "Baseline",
    "BaselinePlusPlus",
    "MAML",
    "MAMLPlusPlus",
    "InnerLoop",
    "MetaModel",
    "MetaSGD",
    "ProtoNet",
    "MatchingNet",
    "R2D2",
    "RelationNet",
    "Reptile",
    "SimpleShot",
    "initializers",
    "layers",
    "models",
    "callbacks",
    "config",
    "datasets",
    "distributed",
    "evaluation",
    "sklearn",
    "tasks",
    "__version__",
]
