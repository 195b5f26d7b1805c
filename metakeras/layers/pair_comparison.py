"""PairComparison: element-wise comparisons of the two halves of each row."""

import keras


@keras.saving.register_keras_serializable(package="metakeras")
class PairComparison(keras.layers.Layer):
    """Adds element-wise comparisons to concatenated pairs of vectors.

    Each input row is a pair `[a, b]` of two `d`-vectors side by side (what
    a Relation Network's module reads: a query embedding and a class's).
    The layer returns `[a, b, |a - b|, a * b]`, `4 * d` features, so that
    the next Dense layer sees how the two vectors differ feature by feature
    instead of having to learn that comparison from `[a, b]` with its
    hidden units (which takes at least two ReLUs per feature for
    `|a - b|`). The layer has no weights.

    Example:

    >>> layer = PairComparison()
    >>> layer(keras.ops.convert_to_tensor([[1.0, 2.0, 3.0, 5.0]])).tolist()
    [[1.0, 2.0, 3.0, 5.0, 2.0, 3.0, 3.0, 10.0]]
    """

    def build(self, input_shape):
        width = input_shape[-1]
        if width is not None and width % 2:
            raise ValueError(
                "PairComparison reads rows of two vectors side by side, so its "
                f"input's last axis must be even. Received: input_shape={input_shape}"
            )

    def call(self, inputs):
        half = inputs.shape[-1] // 2
        a, b = inputs[..., :half], inputs[..., half:]
        return keras.ops.concatenate([a, b, keras.ops.abs(a - b), a * b], axis=-1)

    def compute_output_shape(self, input_shape):
        width = input_shape[-1]
        return (*input_shape[:-1], None if width is None else 2 * width)
