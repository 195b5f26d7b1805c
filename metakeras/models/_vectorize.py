"""`vectorize_tasks="auto"`: when batching tasks under `torch.func.vmap` pays.

Under `vmap` a meta-batch's tasks run as one batched computation: a few
large kernels instead of one small kernel per task, which is what a GPU
needs (a conv4 meta-step is launch-bound there: 0.5-0.7x a plain PyTorch
loop before, see `benchmarks/README.md`). On the CPU a convolution whose
weights differ per task becomes a grouped convolution, 2-3x slower than the
task loop for conv4, and the loop keeps only one task's activations alive,
so "auto" keeps the task loop there (small dense learners gain from
`vectorize_tasks=True` on the CPU too: 9.5x for the sinusoid MLP). It
batches only learners built from layers known to compute the same under
`vmap`: a layer outside that list, a `channels_last` convolution or pooling,
or a Keras-quantized layer keeps the task loop.
"""

import keras

_VECTORIZABLE = (
    keras.layers.InputLayer,
    keras.layers.Add,
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Softmax,
    keras.layers.Dropout,
    keras.layers.Identity,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
)
_CHANNELS_FIRST_ONLY = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
)


def auto_vectorize(learner):
    """Whether `vectorize_tasks="auto"` batches the tasks of `learner`.

    Args:
        learner: a built `keras.Model`.

    Returns:
        `True` for learners on an accelerator whose layers all vectorise;
        else `False`.
    """
    if not learner.built or not learner.weights:
        return False
    device = keras.ops.convert_to_tensor(learner.weights[0]).device
    if device.type == "cpu":
        return False
    return all(_vectorizable(layer) for layer in _leaf_layers(learner))


def _leaf_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def _vectorizable(layer):
    if getattr(layer.dtype_policy, "quantization_mode", None):
        return False
    if isinstance(layer, _CHANNELS_FIRST_ONLY):
        return getattr(layer, "data_format", None) == "channels_first"
    return isinstance(layer, _VECTORIZABLE)


def channels_last_layers(learner):
    """The layers `torch.func.vmap` cannot batch: `channels_last` convolutions.

    PyTorch refuses them under `vmap` ("NYI: querying is_contiguous inside
    of vmap for memory_format other than torch.contiguous_format").

    Args:
        learner: a built `keras.Model`.

    Returns:
        A list of `(name, class name)` pairs.
    """
    return [
        (layer.name, type(layer).__name__)
        for layer in _leaf_layers(learner)
        if isinstance(layer, _CHANNELS_FIRST_ONLY)
        and getattr(layer, "data_format", None) == "channels_last"
    ]
