"""BatchNormalization computed with PyTorch's fused kernel."""

import contextlib

import keras
import torch
import torch.nn.functional as F

try:
    from torch._C._functorch import TransformType
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters
except ImportError:  # pragma: no cover - older or newer torch without this API
    retrieve_all_functorch_interpreters = None


@keras.saving.register_keras_serializable(package="metakeras")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed by PyTorch's fused kernel.

    Same arguments, weights, statistics and results as Keras's layer (biased
    batch variance, moving averages with `momentum`, `epsilon` added to the
    variance). On Keras's torch backend, the built-in layer normalises with
    several separate element-wise operations, whose intermediate tensors the
    inner loop of MAML differentiates through twice; this layer calls
    `torch.nn.functional.batch_norm` instead, one fused operation with its
    own (double) backward, and computes the moving-statistics update without
    gradients. Measured on conv4 second-order MAML it roughly halves the step
    time (see `benchmarks/README.md`).

    The fused path needs float32 inputs with the normalised axis at position
    1 (`channels_first` images, or `(batch, features)` vectors); anything
    else (masks, renorm, synchronized, other layouts or dtypes) falls back to
    Keras's own implementation. Under `torch.func.vmap`
    (`vectorize_tasks=True`) PyTorch's batching rule for the fused kernel
    is exact for values and first derivatives, but a gradient taken under
    `vmap` and differentiated again (second-order MAML's inner loop) comes
    out wrong with respect to the layer's input (measured in float64: 55%
    relative error in a convolution kernel's meta-gradient). So inside a
    `torch.func` gradient under `vmap` the layer normalises with
    `torch.var_mean`, `rsqrt` and one `addcmul`: exact, and fewer operators
    than Keras's implementation (tested in `tests/layers/test_layers.py`).

    It takes the arguments of `keras.layers.BatchNormalization` (its
    constructor is Keras's own).

    Example:

    >>> layer = BatchNormalization(axis=1)
    >>> layer(keras.ops.ones((2, 3, 4, 4))).shape
    torch.Size([2, 3, 4, 4])
    """

    def call(self, inputs, training=None, mask=None):
        if not self._fused(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        # As Keras's own ops do: values on another device move to Keras's.
        inputs = keras.ops.convert_to_tensor(inputs)
        gamma = keras.ops.convert_to_tensor(self.gamma) if self.scale else None
        beta = keras.ops.convert_to_tensor(self.beta) if self.center else None
        # PyTorch's batching rule for the fused kernel is exact for values
        # and first derivatives but not when a gradient taken under vmap is
        # differentiated again (the inner loop of second-order MAML).
        decomposed = (
            not _first_derivatives_only and _under_vmap() and _under_grad_transform()
        )
        if not (training and self.trainable):
            mean = keras.ops.convert_to_tensor(self.moving_mean)
            variance = keras.ops.convert_to_tensor(self.moving_variance)
            if decomposed:
                return self._normalize(inputs, mean, variance, gamma, beta)
            return F.batch_norm(
                inputs, mean, variance, gamma, beta, training=False, eps=self.epsilon
            )
        if decomposed:
            reduce = [0, *range(2, inputs.ndim)]
            variance, mean = torch.var_mean(inputs, dim=reduce, correction=0)
            outputs = self._normalize(inputs, mean, variance, gamma, beta)
        else:
            # The fused kernel also returns the batch mean and
            # 1/sqrt(var + eps), which give the moving-statistics update
            # without another pass.
            outputs, mean, inverse_std = _batch_norm_training(
                inputs, gamma, beta, self.epsilon
            )
        if _discarding_moving_statistics:
            return outputs
        with torch.no_grad():
            if not decomposed:
                variance = inverse_std.pow(-2) - self.epsilon
            # moving * momentum + batch * (1 - momentum), in one operation each.
            weight = 1.0 - self.momentum
            for variable, value in (
                (self.moving_mean, mean),
                (self.moving_variance, variance),
            ):
                moving = keras.ops.convert_to_tensor(variable)
                variable.assign(torch.lerp(moving, value, weight))
        return outputs

    def _normalize(self, inputs, mean, variance, gamma, beta):
        """`(x - mean) / sqrt(variance + eps) * gamma + beta`, axis 1."""
        shape = (1, -1) + (1,) * (inputs.ndim - 2)
        scale = torch.rsqrt(variance + self.epsilon)
        if gamma is not None:
            scale = scale * gamma
        centered = inputs - mean.reshape(shape)
        if beta is None:
            return centered * scale.reshape(shape)
        return torch.addcmul(beta.reshape(shape), centered, scale.reshape(shape))

    def _fused(self, inputs, mask):
        if keras.backend.backend() != "torch" or mask is not None:
            return False
        if self.renorm or self.synchronized:
            return False
        if self.compute_dtype != "float32" or inputs.dtype != torch.float32:
            return False
        axis = self.axis if self.axis >= 0 else self.axis + inputs.ndim
        return inputs.ndim >= 2 and axis == 1


class _Switch:
    """A process-wide flag set for the duration of a `with switch():` block."""

    def __init__(self):
        self.depth = 0

    def __bool__(self):
        return self.depth > 0

    @contextlib.contextmanager
    def __call__(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1


# The inner loop runs the learner in training mode on the support set and
# throws the resulting state away; inside this block the layers skip
# computing the moving averages they would assign.
_discarding_moving_statistics = _Switch()

# Gradients taken inside are not differentiated again (first-order MAML's
# inner loop), so the fused kernel's batching rule is exact there too.
_first_derivatives_only = _Switch()


# cuDNN's batch normalization needs an epsilon of at least this (CUDNN_BN_MIN_EPSILON).
_CUDNN_MIN_EPSILON = 1e-5


def _batch_norm_training(inputs, gamma, beta, epsilon):
    """Normalises with batch statistics; returns `(outputs, mean, 1/std)`.

    On CUDA, cuDNN's kernel where it applies (what `F.batch_norm` would
    choose), else PyTorch's native one. Both return the batch mean and
    `1/sqrt(var + eps)`, which give the moving-statistics update without
    another pass over the inputs, and both are differentiable twice. cuDNN's
    is the faster on a GPU, by about a third for conv4's activations, and
    under `vmap` PyTorch's batching rule calls it just the same.
    """
    if (
        inputs.is_cuda
        and gamma is not None
        and beta is not None
        and epsilon >= _CUDNN_MIN_EPSILON
        and torch.backends.cudnn.enabled
        and inputs.numel() < 2**31 - 1
    ):
        outputs, mean, inverse_std, _ = torch.cudnn_batch_norm(
            inputs, gamma, beta, None, None, True, 0.0, epsilon
        )
        return outputs, mean, inverse_std
    return torch.native_batch_norm(inputs, gamma, beta, None, None, True, 0.0, epsilon)


def _under_grad_transform():
    if retrieve_all_functorch_interpreters is None:
        return True
    return any(
        interpreter.key() in (TransformType.Grad, TransformType.Jvp)
        for interpreter in retrieve_all_functorch_interpreters()
    )


def _under_vmap():
    if retrieve_all_functorch_interpreters is None:
        return True
    return any(
        interpreter.key() == TransformType.Vmap
        for interpreter in retrieve_all_functorch_interpreters()
    )
