"""Finding the layers and weights that compression callbacks act on."""

import keras

# Layers whose `kernel` is pruned or quantized when no names are given.
DEFAULT_LAYER_TYPES = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)


def learner_of(model):
    """The network whose weights are compressed: `model.learner` or `model`."""
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"Expected a keras.Model (a metakeras MetaModel or any Keras model). "
            f"Received: {type(model).__name__}"
        )
    return getattr(model, "learner", model)


def iter_layers(model):
    """Yields every layer nested in `model` (depth first), not `model` itself."""
    for layer in getattr(model, "layers", []):
        yield layer
        if isinstance(layer, keras.Model) or getattr(layer, "layers", None):
            yield from iter_layers(layer)


def select_layers(model, names, argument):
    """The layers named in `names`, or every default layer type with a kernel.

    Args:
        model: the learner.
        names: `None` or a list of layer names.
        argument: the argument's name, for error messages.

    Returns:
        A list of layers, each with a float `kernel` variable.

    Raises:
        ValueError: for unknown names or a named layer without a kernel.
    """
    layers = [layer for layer in iter_layers(model) if layer.built]
    candidates = [layer for layer in layers if _float_kernel(layer) is not None]
    if names is None:
        chosen = [
            layer for layer in candidates if isinstance(layer, DEFAULT_LAYER_TYPES)
        ]
        if not chosen:
            raise ValueError(
                f"The model has no built Dense or convolution layer to compress, so "
                f"`{argument}` must name the layers. Layers with a kernel: "
                f"{[layer.name for layer in candidates]}."
            )
        return chosen
    by_name = {layer.name: layer for layer in layers}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(
            f"`{argument}` names unknown layer(s) {unknown}. Valid choices (layers "
            f"with a float kernel): {[layer.name for layer in candidates]}."
        )
    without = [name for name in names if _float_kernel(by_name[name]) is None]
    if without:
        raise ValueError(
            f"`{argument}` names layer(s) {without} that have no float `kernel` "
            f"variable. Valid choices: {[layer.name for layer in candidates]}."
        )
    return [by_name[name] for name in names]


def check_names(value, argument):
    """Validates a `None`-or-list-of-layer-names argument; returns a list or None."""
    if value is None:
        return None
    if isinstance(value, str) or not all(isinstance(n, str) for n in value):
        raise ValueError(
            f"`{argument}` must be None (every Dense and convolution layer) or a "
            f"list of layer names. Received: {argument}={value!r}"
        )
    value = list(value)
    if not value:
        raise ValueError(f"`{argument}` must name at least one layer (or be None).")
    return value


def _float_kernel(layer):
    try:
        kernel = layer.kernel
    except (AttributeError, ValueError):
        return None
    if not isinstance(kernel, keras.Variable):
        return None
    if not keras.backend.is_float_dtype(kernel.dtype):
        return None
    return kernel
