"""Selects Keras's PyTorch backend before Keras is imported."""

import os
import sys

BACKEND = "torch"


def ensure_torch_backend():
    """Makes sure Keras runs on the PyTorch backend.

    Sets `KERAS_BACKEND=torch` when it is unset. Keras reads the variable once,
    on import, so if Keras was already imported with another backend (or the
    variable names another backend) the only fix is a fresh interpreter.

    Raises:
        ImportError: if Keras is configured for a backend other than torch.
    """
    requested = os.environ.setdefault("KERAS_BACKEND", BACKEND)
    if requested != BACKEND:
        raise ImportError(
            "metakeras runs on Keras's PyTorch backend, but KERAS_BACKEND="
            f"{requested!r}. Set KERAS_BACKEND=torch (or leave it unset) before "
            "importing keras or metakeras."
        )
    if "keras" in sys.modules:
        active = sys.modules["keras"].backend.backend()
        if active != BACKEND:
            raise ImportError(
                f"keras was already imported with the {active!r} backend; "
                "metakeras needs 'torch'. Import metakeras before keras, or set "
                "KERAS_BACKEND=torch before keras is first imported (then restart "
                "the Python process)."
            )
