"""Copies of a learner that hold other weights."""

import keras


def learner_with_weights(learner, trainable_values, non_trainable_values, example):
    """Returns a copy of `learner` whose variables hold the given values.

    Args:
        learner: the built `keras.Model` to copy.
        trainable_values: values for `learner.trainable_variables`, in order.
        non_trainable_values: values for `learner.non_trainable_variables`.
        example: a batch of inputs, used to build a clone that is not built
            by construction (subclassed learners).

    Returns:
        A new, built `keras.Model` of the same architecture.
    """
    clone = keras.models.clone_model(learner)
    if not clone.built or len(clone.variables) != len(learner.variables):
        clone(example[:1], training=False)
    if len(clone.trainable_variables) != len(trainable_values) or len(
        clone.non_trainable_variables
    ) != len(non_trainable_values):
        raise ValueError(
            f"Could not copy the learner {learner.name!r}: its clone has "
            f"{len(clone.trainable_variables)} trainable and "
            f"{len(clone.non_trainable_variables)} non-trainable variables, "
            f"expected {len(trainable_values)} and {len(non_trainable_values)}. "
            "Give the learner a `get_config` so keras.models.clone_model can "
            "rebuild it."
        )
    for variable, value in zip(clone.trainable_variables, trainable_values):
        variable.assign(value)
    for variable, value in zip(clone.non_trainable_variables, non_trainable_values):
        variable.assign(value)
    for source, target in zip(learner.variables, clone.variables):
        _copy_constraint_state(source.constraint, target.constraint)
    return clone


def _copy_constraint_state(source, target):
    """Gives a cloned constraint the state of the original (a pruning mask).

    A clone is built from the config, which holds no variable values, so
    constraints with state (`save_own_variables`) would start from scratch.
    """
    if type(source) is type(target) and hasattr(source, "save_own_variables"):
        store = {}
        source.save_own_variables(store)
        target.load_own_variables(store)
