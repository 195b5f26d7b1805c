"""BatchNormalization computed with PyTorch's fused kernel."""

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
    Keras's own implementation. So does a call under `torch.func.vmap`
    (`vectorize_tasks=True`): there PyTorch's batching rule for the fused
    kernel gives second-order gradients that differ from the exact ones by
    several percent (tested in `tests/test_layers.py`).

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
        gamma = self.gamma.value if self.scale else None
        beta = self.beta.value if self.center else None
        if training and self.trainable:
            # The fused kernel also returns the batch mean and 1/sqrt(var + eps),
            # which give the moving-statistics update without another pass.
            outputs, mean, inverse_std = torch.native_batch_norm(
                inputs, gamma, beta, None, None, True, 0.0, self.epsilon
            )
            mean = mean.detach()
            variance = inverse_std.detach().pow(-2) - self.epsilon
            momentum = self.momentum
            self.moving_mean.assign(
                self.moving_mean.value * momentum + mean * (1 - momentum)
            )
            self.moving_variance.assign(
                self.moving_variance.value * momentum + variance * (1 - momentum)
            )
            return outputs
        return F.batch_norm(
            inputs,
            self.moving_mean.value,
            self.moving_variance.value,
            gamma,
            beta,
            training=False,
            eps=self.epsilon,
        )

    def _fused(self, inputs, mask):
        if keras.backend.backend() != "torch" or mask is not None:
            return False
        if self.renorm or self.synchronized:
            return False
        if self.compute_dtype != "float32" or inputs.dtype != torch.float32:
            return False
        if _under_vmap():
            return False
        axis = self.axis if self.axis >= 0 else self.axis + inputs.ndim
        return inputs.ndim >= 2 and axis == 1


def _under_vmap():
    if retrieve_all_functorch_interpreters is None:
        return True
    return any(
        interpreter.key() == TransformType.Vmap
        for interpreter in retrieve_all_functorch_interpreters()
    )
