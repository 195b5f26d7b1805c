"""metakeras: meta-learning with the Keras 3 API on the PyTorch backend."""

from metakeras._backend import ensure_torch_backend

ensure_torch_backend()

from metakeras import datasets, evaluation, initializers, layers, models, tasks  # noqa: E402
from metakeras.inner import InnerLoop  # noqa: E402
from metakeras.models import ANIL, MAML, MetaModel, MetaSGD, ProtoNet, Reptile  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ANIL",
    "MAML",
    "InnerLoop",
    "MetaModel",
    "MetaSGD",
    "ProtoNet",
    "Reptile",
    "initializers",
    "layers",
    "models",
    "datasets",
    "evaluation",
    "tasks",
    "__version__",
]
