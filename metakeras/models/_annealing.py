"""MAML++'s schedules over epochs (Antoniou, Edwards and Storkey, 2019).

The multi-step loss weights and the derivative-order switch depend on the
epoch `fit` is in; `MetaModel.fit` tells the model through `EpochTracker`.
"""

import keras

from metakeras._checks import check_int


def multi_step_loss_weights(steps, epoch, epochs):
    """MAML++'s weights of the query losses after each inner step.

    The multi-step loss (MSL) of Antoniou et al. (2019, "How to train your
    MAML") scores the adapted weights on the query set after every inner
    step, not only after the last, which gives the initialisation a
    gradient from every step and stabilises training. The weights start
    equal (`1 / steps` each) and move linearly towards the last step: each
    earlier weight loses `epoch / (steps * epochs)` down to a floor of
    `0.03 / steps`, and the last gains what they lose, so the weights always
    sum to 1. From epoch `epochs` on only the last step's loss counts. This
    is the schedule of the paper's reference code
    (`get_per_step_loss_importance_vector`).

    Args:
        steps: number of inner steps, >= 1.
        epoch: the current epoch, counted from 0.
        epochs: the number of epochs the multi-step loss lasts.

    Returns:
        A list of `steps` floats, the weight of the query loss after each
        inner step.

    Example:

    >>> multi_step_loss_weights(steps=4, epoch=0, epochs=10)
    [0.25, 0.25, 0.25, 0.25]
    >>> multi_step_loss_weights(steps=4, epoch=10, epochs=10)
    [0.0, 0.0, 0.0, 1.0]
    """
    check_int("steps", steps, 1, types=int)
    check_int("epoch", epoch, 0, types=int)
    check_int("epochs", epochs, 1, types=int)
    if epoch >= epochs:
        return [0.0] * (steps - 1) + [1.0]
    decay = 1.0 / steps / epochs
    floor = 0.03 / steps
    weights = [max(1.0 / steps - epoch * decay, floor) for _ in range(steps - 1)]
    last = min(1.0 / steps + epoch * (steps - 1) * decay, 1.0 - (steps - 1) * floor)
    return weights + [last]


class EpochTracker(keras.callbacks.Callback):
    """Tells a model which epoch `fit` is in, as `model._epoch`.

    `MetaModel.fit` adds one to every run, so that schedules over epochs
    (MAML++'s multi-step loss and derivative-order annealing) follow
    `initial_epoch` and resumed runs too.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.model._epoch = epoch
