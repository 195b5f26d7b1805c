"""The task sources and models that a resolved configuration describes.

Shared by `metakeras train` (the training split and a new model) and
`metakeras evaluate` (the episodes of the split it scores).
"""

from metakeras.cli import _data
from metakeras.cli._config import task_type
from metakeras.cli._errors import CLIError
from metakeras.models import registry


def build_tasks(config, split, steps, seed, resample=True, meta_batch_size=None):
    """The task source (a `keras.utils.PyDataset`) of one split.

    Args:
        config: a resolved configuration.
        split: a split of the configured dataset (`"train"`, `"test"`, ...).
        steps: meta-batches per epoch.
        seed: the sampler's seed.
        resample: draw new episodes every epoch. Defaults to `True`.
        meta_batch_size: episodes per batch. Defaults to `None` (the
            configuration's).

    Returns:
        A `metakeras.tasks.TaskSampler` or `SinusoidTasks`.
    """
    from metakeras.tasks import SinusoidTasks, TaskSampler

    _data.check_split(config["dataset"], split)
    batch = meta_batch_size or config["meta_batch_size"]
    if not _data.is_classification(config["dataset"]):
        offset = 0 if split == "train" else _data.SINUSOID_TEST_SEED_OFFSET
        return SinusoidTasks(
            shots=config["shots"],
            queries=config["queries"],
            meta_batch_size=batch,
            steps=steps,
            seed=seed + offset,
            resample=resample,
        )
    x, y, classes = _data.classification_split(config, split)
    rotations = (0, 90, 180, 270) if config["rotations"] and split == "train" else (0,)
    return TaskSampler(
        x,
        y,
        ways=config["ways"],
        shots=config["shots"],
        queries=config["queries"],
        meta_batch_size=batch,
        steps=steps,
        classes=classes,
        seed=seed,
        resample=resample,
        rotations=rotations,
    )


def build_model(config, input_shape):
    """The compiled meta-learning model the configuration describes.

    Args:
        config: a resolved configuration.
        input_shape: one example's shape, without the batch axis.

    Returns:
        A compiled `metakeras.MetaModel`.
    """
    import keras

    classification = _data.is_classification(config["dataset"])
    algorithm = registry.get(config["algorithm"])
    outputs = None if not algorithm.head else (config["ways"] if classification else 1)
    learner = _learner(config, tuple(input_shape), outputs)
    vectorize = config["vectorize_tasks"]
    if vectorize is None:
        # Small dense learners gain from vmap on the CPU too.
        vectorize = True if config["learner"] == "mlp" else "auto"
    model = algorithm.create(
        learner,
        task_type(config["dataset"]),
        vectorize_tasks=vectorize,
        **{name: config[name] for name in algorithm.settings},
    )
    optimizer = keras.optimizers.get(
        {
            "class_name": config["optimizer"],
            "config": {"learning_rate": config["learning_rate"]},
        }
    )
    if classification:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    else:
        model.compile(optimizer=optimizer, loss="mse")
    return model


def _learner(config, input_shape, outputs):
    """The configured learner: `conv4`, or an MLP of two hidden layers."""
    import keras

    from metakeras.models import conv4

    if config["learner"] == "conv4":
        if len(input_shape) != 3 or min(input_shape[1:]) < 16:
            raise CLIError(
                f"learner 'conv4' needs images of at least 16x16 (its four 2x2 "
                f"poolings halve the size four times); the {config['dataset']} "
                f"examples have shape {input_shape}. Use --learner mlp or "
                "--image-size 16 (or larger)."
            )
        return conv4(
            input_shape=input_shape, outputs=outputs, filters=config["filters"]
        )
    layers = [keras.Input(input_shape)]
    if len(input_shape) > 1:
        layers.append(keras.layers.Flatten())
    layers += [
        keras.layers.Dense(config["hidden"], activation="relu"),
        keras.layers.Dense(config["hidden"], activation="relu"),
    ]
    if outputs is not None:
        layers.append(keras.layers.Dense(outputs))
    return keras.Sequential(layers, name="mlp")
