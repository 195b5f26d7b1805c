"""Keras preprocessing layers applied to episode images, seeded per batch."""

import keras
import numpy as np

_FORMATS = ("channels_first", "channels_last")


class Augmentation:
    """Runs a Keras layer on channels-first float32 image batches, reproducibly.

    The layer is called in a `keras.StatelessScope` that gives its
    `SeedGenerator`s states drawn from the generator it is given (and keeps
    their updates), so the layer's own state is never used, and the result
    is a pure function of (images, generator): any worker, thread or process
    produces the same images for the same batch, and two calls never share
    random state. It runs on the CPU, in the data pipeline, so worker
    processes never touch an accelerator.

    Args:
        layer: a `keras.layers.Layer` (a preprocessing layer or a
            `keras.Sequential` of them).
        example_shape: channels-first shape of one image, `(C, H, W)`.

    Raises:
        ValueError: if `layer` is not a Keras layer, its layers disagree on
            `data_format`, or it fails on (or does not return) an image batch.
    """

    def __init__(self, layer, example_shape):
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(
                "`augmentation` must be None or a Keras layer, e.g. "
                "keras.layers.RandomFlip('horizontal') or a keras.Sequential of "
                "preprocessing layers (RandomCrop, RandomFlip, RandomRotation, ...). "
                f"Received: {layer!r} of type {type(layer).__name__}"
            )
        self.layer = layer
        self.channels_first = _data_format(layer) == "channels_first"
        self.output_shape = self._probe(tuple(example_shape))

    def __call__(self, images, rng):
        """Augments `(N, C, H, W)` float32 images with seeds drawn from `rng`.

        Args:
            images: a float32 NumPy array of channels-first images.
            rng: a `numpy.random.Generator`.

        Returns:
            A float32 NumPy array `(N, *output_shape)`.
        """
        layer = self.layer
        with keras.device("cpu"):
            seeds = [
                (v, np.asarray([rng.integers(2**31 - 1), 0], dtype=v.dtype))
                for v in layer.variables
                if _is_seed_state(v)
            ]
            inputs = images if self.channels_first else images.transpose(0, 2, 3, 1)
            # Reads of the seed states see these values and the layer's
            # updates to them stay in the scope: the layer is not changed.
            with keras.StatelessScope(state_mapping=seeds):
                outputs = layer(keras.ops.convert_to_tensor(inputs), training=True)
            outputs = keras.ops.convert_to_numpy(outputs)
        if not self.channels_first and outputs.ndim == 4:
            outputs = outputs.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(outputs, dtype="float32")

    def _probe(self, example_shape):
        """Builds the layer and returns the channels-first shape it outputs."""
        layer = self.layer
        probe = np.zeros((1, *example_shape), dtype="float32")
        try:
            if not layer.built:
                shape = (
                    probe.shape
                    if self.channels_first
                    else (1, *example_shape[1:], example_shape[0])
                )
                layer.build(shape)
            outputs = self(probe, np.random.default_rng(0))
        except Exception as error:  # The layer's own message, with context.
            layer_format = "channels_first" if self.channels_first else "channels_last"
            raise ValueError(
                f"`augmentation` ({type(layer).__name__}, data_format="
                f"{layer_format!r}) failed on a batch of images of channels-first "
                f"shape {example_shape}: {type(error).__name__}: {error}"
            ) from error
        if outputs.ndim != 4 or len(outputs) != 1:
            raise ValueError(
                "`augmentation` must return one image per input image; for a "
                f"batch of shape {probe.shape} it returned shape {outputs.shape}."
            )
        return outputs.shape[1:]


def _data_format(layer):
    """The one `data_format` of `layer` and its sub-layers (Keras's default if none)."""
    formats = {}
    for sublayer in _walk(layer):
        value = getattr(sublayer, "data_format", None)
        if value in _FORMATS:
            formats.setdefault(value, []).append(sublayer.name)
    if len(formats) > 1:
        raise ValueError(
            "The layers of `augmentation` must share one `data_format`; got "
            + ", ".join(f"{fmt} for {names}" for fmt, names in formats.items())
            + ". Pass the same data_format= to each (episode images are "
            "channels-first; either value works)."
        )
    if formats:
        return next(iter(formats))
    return keras.config.image_data_format()


def _walk(layer):
    yield layer
    for sublayer in getattr(layer, "layers", None) or ():
        yield from _walk(sublayer)


def _is_seed_state(variable):
    """A `keras.random.SeedGenerator`'s state: the layer's randomness."""
    return variable.name == "seed_generator_state" and tuple(variable.shape) == (2,)
