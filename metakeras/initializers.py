"""Starting weights of a learner: random, pretrained, or meta-learned."""

import os

import keras

from metakeras._io import atomic_path, check_keras_archive


def load_initial_weights(learner, source):
    """Copies starting weights into `learner` from a file or another model.

    A learner built by Keras starts from its layers' random initialisers.
    This replaces them with pretrained weights (for example a network trained
    by ordinary supervised learning) or with a meta-learned initialisation
    exported by a previous run (`export_initialization`).

    Args:
        learner: the built `keras.Model` to initialise.
        source: a `.keras` file (a plain model, or a saved metakeras model,
            whose learner is used), a `.weights.h5` file, or a `keras.Model`
            (a `MetaModel` contributes its learner).

    Returns:
        `learner`, now holding the source's weights.

    Raises:
        ValueError: if the source is of an unknown kind, a damaged
            (e.g. truncated) file, or its weights do not match the
            learner's (the first mismatch is named). The learner is left
            unchanged.
        FileNotFoundError: if the file does not exist.

    Example:

    ```python
    learner = metakeras.models.conv4(outputs=5)
    metakeras.initializers.load_initial_weights(learner, "pretrained.weights.h5")
    model = metakeras.MAML(learner)
    ```
    """
    if not isinstance(learner, keras.Model) or not learner.built:
        raise ValueError(
            "`learner` must be a built keras.Model (give it an Input or call it "
            f"once). Received: {learner!r}"
        )
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f"`source` file not found: {path!r}")
        if path.endswith(".weights.h5"):
            before = learner.get_weights()
            try:
                learner.load_weights(path)
            except Exception as error:
                # A damaged file can fail halfway: put every weight back.
                learner.set_weights(before)
                raise ValueError(
                    f"Cannot load `source` {path!r} into the learner: "
                    f"{type(error).__name__}: {error}. The file may be truncated "
                    "or hold another architecture; the learner is unchanged."
                ) from error
            return learner
        if not path.endswith(".keras"):
            raise ValueError(
                "`source` must be a .keras or .weights.h5 file or a keras.Model. "
                f"Received: {path!r}"
            )
        check_keras_archive(path)  # says what is wrong with a damaged file
        try:
            source = keras.models.load_model(path, compile=False)
        except Exception as error:
            raise ValueError(
                f"Cannot read `source` {path!r}: {type(error).__name__}: {error}. "
                "The file may be truncated or not a Keras model file."
            ) from error
    if not isinstance(source, keras.Model):
        raise ValueError(
            "`source` must be a .keras or .weights.h5 file or a keras.Model. "
            f"Received: {type(source).__name__}"
        )
    source = getattr(source, "learner", source)
    _check_compatible(learner, source)
    learner.set_weights(source.get_weights())
    return learner


def export_initialization(model, path):
    """Saves a meta-learned initialisation as a plain Keras model.

    The file holds the learner with its meta-learned weights and nothing of
    metakeras, so plain Keras can load it and fine-tune it with `fit`, and
    `load_initial_weights` can start another meta-training run from it.

    Args:
        model: a `MetaModel` (its learner is saved) or a `keras.Model`.
        path: destination ending in `.keras`; written atomically.

    Returns:
        The path written.

    Example:

    ```python
    metakeras.initializers.export_initialization(maml, "init.keras")
    plain = keras.models.load_model("init.keras")
    plain.compile("adam", "mse"); plain.fit(x_few, y_few, epochs=20)
    ```
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"`path` must end in '.keras'. Received: {path!r}")
    learner = getattr(model, "learner", model)
    if not isinstance(learner, keras.Model):
        raise ValueError(
            f"`model` must be a MetaModel or a keras.Model. Received: {type(model).__name__}"
        )
    with atomic_path(path) as tmp:
        learner.save(tmp)
    return path


def _check_compatible(learner, source):
    mine, theirs = learner.weights, source.weights
    if len(mine) != len(theirs):
        raise ValueError(
            f"The source model has {len(theirs)} weights but the learner has "
            f"{len(mine)}: the architectures differ."
        )
    for a, b in zip(mine, theirs):
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(
                f"Weight shape mismatch: learner weight {a.path!r} has shape "
                f"{tuple(a.shape)}, source weight {b.path!r} has {tuple(b.shape)}."
            )
