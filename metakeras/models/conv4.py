"""The 4-block convolutional network of the few-shot learning papers."""

import keras

from metakeras._checks import check_choice, check_flag, check_int
from metakeras.layers import BatchNormalization, Conv2D, MaxPooling2D

DATA_FORMATS = ("channels_first", "channels_last")
# Four 2x2 poolings leave at least one pixel of a 16x16 image.
_SMALLEST_SIDE = 16


def conv4(
    input_shape=(1, 28, 28),
    outputs=None,
    filters=64,
    data_format="channels_first",
    final_relu=True,
    name="conv4",
):
    """Builds the standard "Conv-4" learner of MAML and Prototypical Networks.

    Four blocks of 3x3 convolution (`filters` channels, same padding),
    BatchNormalization, ReLU and 2x2 max-pooling, then a flatten; with
    `outputs`, a Dense head of that many logits. 28x28 Omniglot images give a
    64-dimensional embedding; 84x84 mini-ImageNet images give 1,600 (MAML
    uses `filters=32` there).

    Each block pools before its ReLU: ReLU is monotone, so
    `relu(max(x)) == max(relu(x))` and the gradients agree too (the first
    maximum of a window gets the gradient either way, and where the maximum
    is not positive ReLU passes no gradient in either order), while the ReLU
    and its derivatives run on a quarter of the values.

    The convolution, BatchNormalization and pooling layers are
    `metakeras.layers.Conv2D`, `BatchNormalization` and `MaxPooling2D`:
    Keras's layers computed by faster PyTorch kernels, with the same
    weights, results and gradients (see their docstrings and
    `benchmarks/README.md`).

    The default layout is `channels_first`, `(channels, height, width)`:
    PyTorch's convolutions are channels-first, so Keras's torch backend pays
    a transpose around every `channels_last` convolution (measured here
    about 3x slower for second-order MAML), and `channels_last`
    convolutions also fail under `torch.func.vmap` (`vectorize_tasks=True`).

    Args:
        input_shape: input shape without the batch axis, in `data_format`;
            height and width at least 16. Defaults to `(1, 28, 28)`.
        outputs: size of the Dense head; `None` for an embedding network
            (ProtoNet). Defaults to `None`.
        filters: channels of every convolution. Defaults to `64`.
        data_format: `"channels_first"` or `"channels_last"`. Defaults to
            `"channels_first"`.
        final_relu: end the last block with its ReLU. `False` leaves the
            embedding its negative values (the pooled BatchNormalization
            outputs), which SimpleShot's and Baseline++'s pretraining learn
            better embeddings with (`benchmarks/README.md`). Defaults to
            `True`.
        name: model name. Defaults to `"conv4"`.

    Returns:
        A `keras.Sequential` model.

    Example:

    >>> model = conv4(input_shape=(1, 28, 28), outputs=5)
    >>> model.output_shape
    (None, 5)
    """
    check_choice("data_format", data_format, DATA_FORMATS, echo_name=False)
    if len(tuple(input_shape)) != 3:
        raise ValueError(
            "`input_shape` must be (channels, height, width) for channels_first or "
            f"(height, width, channels) for channels_last. Received: {input_shape!r}"
        )
    sides = (
        tuple(input_shape)[1:] if data_format == "channels_first" else input_shape[:2]
    )
    if min(sides) < _SMALLEST_SIDE:
        raise ValueError(
            "conv4 halves the image four times (2x2 pooling in each block), so "
            f"height and width must be at least {_SMALLEST_SIDE}; received "
            f"input_shape={tuple(input_shape)!r} ({data_format}). Resize the images "
            "(e.g. `image_size=` of the dataset loaders), or use a learner with "
            "fewer poolings."
        )
    check_int("outputs", outputs, none=True, echo_name=False, types=int)
    check_flag("final_relu", final_relu)
    axis = 1 if data_format == "channels_first" else -1
    layers = [keras.Input(tuple(input_shape))]
    for block in range(4):
        layers += [
            Conv2D(
                filters, 3, padding="same", data_format=data_format, name=f"conv{block}"
            ),
            BatchNormalization(axis=axis, name=f"bn{block}"),
            MaxPooling2D(2, data_format=data_format, name=f"pool{block}"),
        ]
        if block < 3 or final_relu:
            layers.append(keras.layers.ReLU(name=f"relu{block}"))
    layers.append(keras.layers.Flatten(name="flatten"))
    if outputs is not None:
        layers.append(keras.layers.Dense(outputs, name="head"))
    return keras.Sequential(layers, name=name)
