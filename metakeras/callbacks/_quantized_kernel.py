"""Layers whose kernel is saved quantized: int8, packed int4 or float8.

Keras quantizes only `Dense` and `EinsumDense` (`Layer.quantize` raises
`NotImplementedError` for convolutions), and its quantized layers run a
custom autograd function that `torch.func` cannot differentiate, so they
cannot sit in the inner loop of MAML. The layers here keep a float32 kernel
in memory, holding values of the quantization grid (`fake_quantize`), which
the inner loop adapts like any weight, and write it to `.keras` files as
integers (or float8 bits) with one float32 scale per output channel (the
kernel's last axis). A conv4 learner's file is about 4x smaller in int8.

`quantize_weights` turns a built Keras layer into the matching class here in
place (`_keras_compat.reclass`), keeping its variables, constraints and
identity: a layer cannot be replaced inside a functional or Sequential model,
and the meta-model, its optimizer and user code hold references to its
variables.

`quantize_to_grid` is the one definition of the grids, used both for the
values in memory (`fake_quantize`) and for the values in files (`encode`).
"""

import keras
import numpy as np
import torch

from metakeras import _keras_compat
from metakeras import layers as metakeras_layers
from metakeras._checks import check_choice

MODES = ("int8", "int4", "float8")
FLOAT8_MAX = 448.0  # largest finite float8_e4m3fn value


class QuantizedKernel:
    """Mixin: saves `kernel` quantized per output channel, loads it dequantized.

    The saved entries are `"0"`: the quantized kernel (int8; int4 packed two
    per byte along the flattened input axis; float8_e4m3fn bits as uint8),
    `"1"`: the float32 scales, one per output channel, and `"2"`: the bias,
    when there is one. Loading sets the kernel to `quantized / scale`, the
    values `fake_quantize` gives, so a kernel that was on the grid when saved
    is restored to within float32 rounding.
    """

    def __init__(self, *args, kernel_quantization="int8", **kwargs):
        super().__init__(*args, **kwargs)
        check_mode(kernel_quantization, "kernel_quantization")
        self.kernel_quantization = kernel_quantization

    def save_own_variables(self, store):
        if not self.built:
            return
        quantized, scale = encode(self.kernel, self.kernel_quantization)
        store["0"] = quantized
        store["1"] = scale
        if self.bias is not None:
            store["2"] = self.bias

    def load_own_variables(self, store):
        if not self.built:
            return
        shape = tuple(self.kernel.shape)
        self.kernel.assign(
            decode(store["0"], store["1"], shape, self.kernel_quantization)
        )
        if self.bias is not None:
            self.bias.assign(store["2"])

    def get_config(self):
        config = super().get_config()
        config["kernel_quantization"] = self.kernel_quantization
        return config


def _quantized(base, name):
    """The subclass `name` of `base` whose kernel is saved quantized, registered."""

    cls = type(
        name,
        (QuantizedKernel, base),
        {
            "__module__": __name__,
            "__doc__": (
                f"`{base.__module__}.{base.__name__}` whose kernel is saved quantized "
                "(see `QuantizedKernel`). Made by `quantize_weights`."
            ),
        },
    )
    return keras.saving.register_keras_serializable(package="metakeras")(cls)


# The exact classes that have a quantized-kernel twin, and the twins' names
# (registered as "metakeras>NAME", so files load once metakeras is imported).
# All keep the output channels on the kernel's last axis except the transposed
# convolutions (`(..., out, in)`); for those the scale is per input channel,
# as in `fake_quantize`, which is equally valid for storage.
_TWINS = {
    keras.layers.Dense: "QuantizedDense",
    keras.layers.EinsumDense: "QuantizedEinsumDense",
    keras.layers.Conv1D: "QuantizedConv1D",
    keras.layers.Conv2D: "QuantizedConv2D",
    keras.layers.Conv3D: "QuantizedConv3D",
    keras.layers.Conv1DTranspose: "QuantizedConv1DTranspose",
    keras.layers.Conv2DTranspose: "QuantizedConv2DTranspose",
    keras.layers.Conv3DTranspose: "QuantizedConv3DTranspose",
    metakeras_layers.Conv2D: "QuantizedFusedConv2D",
}
QUANTIZED_CLASSES = {base: _quantized(base, name) for base, name in _TWINS.items()}


def store_quantized(layer, mode):
    """Makes `layer` save its kernel in `mode`; returns False if it cannot.

    The kernel's values are not changed here (the caller puts them on the
    grid first); only how the layer is saved.
    """
    if isinstance(layer, QuantizedKernel):
        layer.kernel_quantization = mode
        return True
    quantized = QUANTIZED_CLASSES.get(type(layer))
    if quantized is None or getattr(layer, "lora_enabled", False):
        return False
    if getattr(layer, "quantization_mode", None) is not None:
        return False
    _keras_compat.reclass(layer, quantized)
    layer.kernel_quantization = mode
    return True


def quantize_to_grid(weights, mode, axis):
    """Rounds weights onto the `mode` grid, with one scale per reduced slice.

    Args:
        weights: a float tensor.
        mode: `"int8"`, `"int4"` or `"float8"`.
        axis: the axes each scale covers (those of `keras.ops.max`), or
            `None` for a single scale.

    Returns:
        `(quantized, scale)`: the int8 tensor (int4 values in int8, within
        `[-8, 7]`) or float8_e4m3fn tensor of the grid values, and the float
        scales with the reduced axes kept; `weights ~ quantized / scale`.
    """
    if mode == "float8":
        amax = keras.ops.max(keras.ops.abs(weights), axis=axis, keepdims=True)
        scale = FLOAT8_MAX / keras.ops.maximum(amax, keras.backend.epsilon())
        return keras.ops.cast(weights * scale, "float8_e4m3fn"), scale
    value_range = (-127, 127) if mode == "int8" else (-8, 7)
    return keras.quantizers.abs_max_quantize(
        weights, axis=axis, value_range=value_range, dtype="int8"
    )


def encode(kernel, mode):
    """Quantizes a kernel per output channel (last axis) for saving.

    Args:
        kernel: a float kernel (tensor or variable).
        mode: `"int8"`, `"int4"` or `"float8"`.

    Returns:
        `(quantized, scale)` NumPy arrays: int8 (int4 packed two per byte,
        float8 as uint8 bits) and the float32 scale of each output channel;
        `kernel ~ quantized / scale`.
    """
    kernel = keras.ops.convert_to_tensor(kernel)
    flat = keras.ops.reshape(kernel, (-1, kernel.shape[-1]))
    quantized, scale = quantize_to_grid(flat, mode, axis=0)
    if mode == "float8":
        bits = quantized.view(torch.uint8)
        return keras.ops.convert_to_numpy(bits), _numpy_scale(scale)
    if mode == "int4":
        quantized, _, _ = keras.quantizers.pack_int4(quantized, axis=0)
    return keras.ops.convert_to_numpy(quantized), _numpy_scale(scale)


def decode(quantized, scale, shape, mode):
    """Inverse of `encode`: the float32 kernel of shape `shape`."""
    quantized = np.asarray(quantized)
    scale = np.asarray(scale, dtype="float32").reshape(1, -1)
    rows = int(np.prod(shape[:-1]))
    if mode == "float8":
        grid = torch.from_numpy(quantized).view(torch.float8_e4m3fn).float()
        values = keras.ops.convert_to_numpy(grid)
    else:
        if mode == "int4":
            quantized = keras.ops.convert_to_numpy(
                keras.quantizers.unpack_int4(
                    keras.ops.convert_to_tensor(quantized), rows, axis=0
                )
            )
        values = quantized.astype("float32")
    return (values / scale).reshape(shape)


def check_mode(mode, argument="mode"):
    check_choice(argument, mode, MODES)


def _numpy_scale(scale):
    return keras.ops.convert_to_numpy(keras.ops.reshape(scale, (-1,))).astype("float32")
