"""MaxPooling2D with a faster forward pass on channels-first inputs."""

import keras
import torch
import torch.nn.functional as F

from metakeras.layers.batch_normalization import _under_vmap

# Where pooling a channels-last copy pays (benchmarks/operators.py empties
# it to count the operators of the GPU's kernel choices on a CPU).
_LAYOUT_TRICK_DEVICES = {"cpu"}


@keras.saving.register_keras_serializable(package="metakeras")
class MaxPooling2D(keras.layers.MaxPooling2D):
    """`keras.layers.MaxPooling2D` with PyTorch's channels-last pooling kernel.

    Same arguments, outputs and gradients as Keras's layer. On the CPU,
    PyTorch's max-pooling kernel for channels-first tensors is scalar code;
    its channels-last kernel is vectorised across channels and measured here
    about 3x faster on conv4's first block (75 images of 64x28x28), even
    counting the layout change. This layer pools a channels-last copy of the
    input and keeps the argmax positions, then differentiates with PyTorch's
    own channels-first max-pooling backward: the first maximum of every
    window receives the gradient, exactly as in the built-in layer, and
    the second derivatives (MAML) are PyTorch's own as well.

    The channels-last kernel is used for `channels_first` float32 inputs on
    the CPU with `"valid"` padding. On other devices (a GPU, where every
    layout change is one more kernel launch) and under `torch.func.vmap`
    such inputs go to `torch.nn.functional.max_pool2d` directly, as Keras's
    layer does after its argument handling; anything else (`channels_last`,
    `"same"` padding, other dtypes) runs Keras's own implementation.

    It takes the arguments of `keras.layers.MaxPooling2D` (its constructor is
    Keras's own).

    Example:

    >>> layer = MaxPooling2D(2, data_format="channels_first")
    >>> layer(keras.ops.ones((2, 8, 28, 28))).shape
    torch.Size([2, 8, 14, 14])
    """

    def call(self, inputs):
        if not self._fused(inputs):
            return super().call(inputs)
        # As Keras's own ops do: inputs on another device move to Keras's.
        inputs = keras.ops.convert_to_tensor(inputs)
        pool_size, strides = tuple(self.pool_size), tuple(self.strides)
        if inputs.device.type not in _LAYOUT_TRICK_DEVICES or _under_vmap():
            # The layout trick is a CPU optimisation; on a GPU every layout
            # change is one more kernel launch.
            return F.max_pool2d(inputs, pool_size, strides)
        outputs, _ = _ChannelsLastMaxPool2d.apply(inputs, pool_size, strides)
        return outputs

    def _fused(self, inputs):
        if keras.backend.backend() != "torch":
            return False
        if self.data_format != "channels_first" or self.padding != "valid":
            return False
        if not isinstance(inputs, torch.Tensor) or inputs.dtype != torch.float32:
            return False
        return inputs.ndim == 4


class _ChannelsLastMaxPool2d(torch.autograd.Function):
    """Max-pooling computed channels-last, differentiated channels-first."""

    @staticmethod
    def forward(inputs, pool_size, strides):
        outputs, indices = F.max_pool2d(
            inputs.contiguous(memory_format=torch.channels_last),
            pool_size,
            strides,
            return_indices=True,
        )
        # The indices are positions within each (height, width) plane, the
        # same in either layout.
        return outputs.contiguous(), indices.contiguous()

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, pool_size, strides = inputs
        _, indices = output
        ctx.mark_non_differentiable(indices)
        # The indices take no gradient: nothing to fill with zeros for them.
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(indices)
        ctx.input_shape, ctx.input_dtype = x.shape, x.dtype
        ctx.pool_size, ctx.strides = pool_size, strides

    @staticmethod
    def backward(ctx, grad, _):
        if grad is None:
            return None, None, None
        (indices,) = ctx.saved_tensors
        # The kernel reads only the input's shape and dtype, so a zero-stride
        # stand-in replaces the input: keeping the input alive for the
        # backward pass would cost a full activation per block.
        shape_only = torch.empty((), dtype=ctx.input_dtype, device=grad.device)
        grad_inputs = torch.ops.aten.max_pool2d_with_indices_backward(
            grad,
            shape_only.expand(ctx.input_shape),
            ctx.pool_size,
            ctx.strides,
            [0, 0],
            [1, 1],
            False,
            indices,
        )
        # Differentiable in `grad`: second-order MAML differentiates it.
        return grad_inputs, None, None
