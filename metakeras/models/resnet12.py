"""ResNet-12: the backbone of most few-shot results since 2018."""

import keras

from metakeras._checks import check_choice, check_int, is_int
from metakeras.layers import BatchNormalization, Conv2D, MaxPooling2D
from metakeras.models.conv4 import DATA_FORMATS

POOLINGS = ("avg", "flatten")


def resnet12(
    input_shape=(3, 84, 84),
    outputs=None,
    filters=(64, 160, 320, 640),
    pooling="avg",
    data_format="channels_first",
    name="resnet12",
):
    """Builds the ResNet-12 learner of TADAM and MetaOptNet.

    Four residual blocks; each applies three 3x3 convolutions (no bias),
    each followed by BatchNormalization, with a LeakyReLU (slope 0.1) after
    the first two, adds a shortcut (a 1x1 convolution and BatchNormalization
    of the block's input), applies LeakyReLU and halves the image with 2x2
    max-pooling. With the default widths it has 12.4 million weights, as in
    Lee et al. ("Meta-Learning with Differentiable Convex Optimization",
    CVPR 2019) and Oreshkin et al. ("TADAM", NeurIPS 2018); `filters=(64,
    128, 256, 512)` is the narrower variant of other papers. The embedding is
    the average over the last feature map (`pooling="avg"`: 640 numbers)
    or the flattened map (`"flatten"`: 16,000 for 84x84 inputs, as
    MetaOptNet's heads use).

    The convolution, BatchNormalization and pooling layers are
    `metakeras.layers.Conv2D`, `BatchNormalization` and `MaxPooling2D`:
    Keras's layers computed by faster PyTorch kernels, with the same
    weights, results and gradients. The layout is channels-first by default,
    for the reasons given in `conv4`.

    Args:
        input_shape: input shape without the batch axis, in `data_format`;
            height and width at least 16. Defaults to `(3, 84, 84)`
            (mini-ImageNet).
        outputs: size of a Dense head; `None` for an embedding network
            (ProtoNet, metric and closed-form heads). Defaults to `None`.
        filters: the widths of the four blocks. Defaults to
            `(64, 160, 320, 640)`.
        pooling: `"avg"` or `"flatten"`. Defaults to `"avg"`.
        data_format: `"channels_first"` or `"channels_last"`. Defaults to
            `"channels_first"`.
        name: model name. Defaults to `"resnet12"`.

    Returns:
        A functional `keras.Model`.

    Raises:
        ValueError: for an invalid argument (the message names it).

    Example:

    >>> model = resnet12(input_shape=(3, 84, 84))
    >>> model.output_shape
    (None, 640)
    """
    check_choice("data_format", data_format, DATA_FORMATS, echo_name=False)
    check_choice("pooling", pooling, POOLINGS, echo_name=False)
    if len(tuple(filters)) != 4 or not all(is_int(f, 1, types=int) for f in filters):
        raise ValueError(
            f"`filters` must be four positive integers. Received: {filters!r}"
        )
    if len(tuple(input_shape)) != 3:
        raise ValueError(
            "`input_shape` must be (channels, height, width) for channels_first or "
            f"(height, width, channels) for channels_last. Received: {input_shape!r}"
        )
    sides = input_shape[1:] if data_format == "channels_first" else input_shape[:2]
    if min(sides) < 16:
        raise ValueError(
            "resnet12 halves the image four times, so height and width must be at "
            f"least 16; received input_shape={tuple(input_shape)!r} ({data_format})."
        )
    check_int("outputs", outputs, none=True, echo_name=False, types=int)
    inputs = keras.Input(tuple(input_shape))
    x = inputs
    for block, width in enumerate(filters):
        x = _block(x, width, data_format, f"block{block}")
    if pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(data_format=data_format, name="pool")(x)
    else:
        x = keras.layers.Flatten(name="flatten")(x)
    if outputs is not None:
        x = keras.layers.Dense(outputs, name="head")(x)
    return keras.Model(inputs, x, name=name)


def _block(x, width, data_format, name):
    axis = 1 if data_format == "channels_first" else -1
    shortcut = Conv2D(
        width, 1, use_bias=False, data_format=data_format, name=f"{name}_shortcut"
    )(x)
    shortcut = BatchNormalization(axis=axis, name=f"{name}_shortcut_bn")(shortcut)
    for i in range(3):
        x = Conv2D(
            width,
            3,
            padding="same",
            use_bias=False,
            data_format=data_format,
            name=f"{name}_conv{i}",
        )(x)
        x = BatchNormalization(axis=axis, name=f"{name}_bn{i}")(x)
        if i < 2:
            x = keras.layers.LeakyReLU(0.1, name=f"{name}_relu{i}")(x)
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    x = keras.layers.LeakyReLU(0.1, name=f"{name}_relu")(x)
    return MaxPooling2D(2, data_format=data_format, name=f"{name}_pool")(x)
