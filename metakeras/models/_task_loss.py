"""The task loss: the compiled Keras loss, computed by one PyTorch call when it can.

The inner loop evaluates the task loss once per inner step per task, and
every evaluation is differentiated (twice under second-order MAML). A Keras
loss object on the torch backend spends about fourteen ATen operators on
casts, reductions and `divide_no_nan` around the arithmetic, and as many
again in its backward pass. For the two losses few-shot learning uses most,
with Keras's default reduction, `TaskLoss` calls the equivalent PyTorch
function instead (same value and gradients, tested against the Keras loss in
`tests/models/test_task_loss.py`); every other loss, and any input it cannot prove
equivalent, goes through the Keras loss unchanged.
"""

import keras
import torch
import torch.nn.functional as F

from metakeras import _keras_compat


class TaskLoss:
    """`loss(y_true, y_pred)` reduced to a scalar, as the Keras loss computes it.

    Args:
        loss: what `compile(loss=...)` received: a name, a function
            `fn(y_true, y_pred)` or a `keras.losses.Loss`.
    """

    def __init__(self, loss):
        self.keras_loss = _as_loss_object(loss)
        self._fused = _fused_function(loss, self.keras_loss)

    def __call__(self, y_true, y_pred):
        if self._fused is not None:
            value = self._fused(y_true, y_pred)
            if value is not None:
                return value
        return self.keras_loss(y_true, y_pred)

    @property
    def fused(self):
        """Whether a known loss can take PyTorch's own implementation."""
        return self._fused is not None


def _as_loss_object(loss):
    resolved = keras.losses.get(loss)
    if isinstance(resolved, keras.losses.Loss):
        return resolved
    if callable(resolved):
        return _FunctionLoss(resolved)
    raise ValueError(
        f"`loss` must be a loss name, function or Loss. Received: {loss!r}"
    )


class _FunctionLoss(keras.losses.Loss):
    """A plain loss function `fn(y_true, y_pred)`, reduced over the examples."""

    def __init__(self, fn):
        super().__init__(name=getattr(fn, "__name__", "task_loss"))
        self.fn = fn

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred)


def _fused_function(loss, loss_object):
    """`fn(y_true, y_pred) -> scalar or None` for a known loss, else None."""
    if loss_object.reduction != "sum_over_batch_size":
        return None
    if isinstance(loss_object, _FunctionLoss):
        kind, options = _FUNCTIONS.get(loss_object.fn), {}
    else:
        kind = _CLASSES.get(type(loss_object))
        options = _keras_compat.loss_function_kwargs(loss_object)
    if kind == "sparse_categorical_crossentropy":
        if not options.get("from_logits") or options.get("ignore_class") is not None:
            return None
        if options.get("axis", -1) != -1:
            return None
        return _sparse_categorical_crossentropy_from_logits
    if kind == "mean_squared_error":
        return _mean_squared_error
    return None


def _sparse_categorical_crossentropy_from_logits(y_true, y_pred):
    if y_pred.ndim != 2 or y_pred.dtype != torch.float32:
        return None
    if y_true.ndim == 2 and y_true.shape[1] == 1:
        y_true = y_true[:, 0]
    if y_true.ndim != 1 or y_true.shape[0] != y_pred.shape[0]:
        return None
    if y_true.dtype != torch.int64:
        y_true = y_true.long()
    return F.cross_entropy(y_pred, y_true)


def _mean_squared_error(y_true, y_pred):
    if y_pred.dtype != torch.float32 or y_pred.ndim < 1:
        return None
    if y_true.shape != y_pred.shape:
        return None
    # Keras averages over the last axis, then over the examples: with equal
    # shapes that is the mean over all elements.
    return F.mse_loss(y_pred, y_true.to(y_pred.dtype))


_CLASSES = {
    keras.losses.SparseCategoricalCrossentropy: "sparse_categorical_crossentropy",
    keras.losses.MeanSquaredError: "mean_squared_error",
}
_FUNCTIONS = {
    keras.losses.sparse_categorical_crossentropy: "sparse_categorical_crossentropy",
    keras.losses.mean_squared_error: "mean_squared_error",
}
