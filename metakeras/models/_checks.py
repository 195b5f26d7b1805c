"""Checks of what a `MetaModel` receives: its learner, episodes and inputs.

Malformed input raises a `ValueError` naming the argument (`support_x`,
`x`, ...) before it reaches the learner, whose own errors would name a
layer deep inside it. The expected shapes come from the learner, which is
built from the first example the model sees (`_build_learner`) when it was
not built already.
"""

import warnings

import keras
import numpy as np
import torch

from metakeras import _keras_compat
from metakeras._checks import check_int
from metakeras.tasks._seeded import SeededTasks
from metakeras.tasks.episode import EPISODE_KEYS, unpack_episode, validate_episode

_NAMES = ("support_x", "support_y", "query_x", "query_y")

_CROSS_ENTROPIES = (
    "sparsecategoricalcrossentropy",
    "categoricalcrossentropy",
)


class InputChecks:
    """Mixin of `MetaModel`: checks episodes and inputs against the learner."""

    def _episode_tensors(self, data, check_labels=True):
        """The checked episode tensors of a meta-batch, for a step.

        The step's non-finite check keeps them (`_remember_step`), to re-run
        the meta-batch should its update go non-finite.

        Args:
            data: a meta-batch in the episode contract (a dict or a tuple).
            check_labels: whether to check that the labels fit the learner's
                classes (not for `adapt_and_predict`'s placeholder targets).

        Returns:
            `(support_x, support_y, query_x, query_y)` as float32 (inputs
            and floating targets) tensors.
        """
        if self._graph_episode is not None:
            # A CUDA graph step: the runner has checked and placed them.
            return self._graph_episode
        arrays = unpack_episode(data)
        episode = tuple(to_tensor(value, name) for value, name in zip(arrays, _NAMES))
        support_x, support_y, query_x, query_y = episode
        self._build_learner(support_x)
        validate_episode(
            support_x,
            support_y,
            query_x,
            query_y,
            num_classes=self._num_classes() if check_labels else None,
        )
        self._episode_checks(support_x, support_y, query_y)
        self._check_example_shape(tuple(support_x.shape[2:]), "support_x")
        self._check_classification_head()
        self._remember_step(episode)
        return episode

    def _episode_checks(self, support_x, support_y, query_y):
        """Checks of a subclass on a validated meta-batch, before the step."""

    def _check_single_task(self, support_x, support_y):
        """Validates one task's support set (no task axis); returns tensors."""
        support_x = to_tensor(support_x, "support_x")
        support_y = to_tensor(support_y, "support_y")
        for name, value in (("support_x", support_x), ("support_y", support_y)):
            if value.ndim < 1:
                raise ValueError(
                    f"`{name}` must hold one task's examples along its first "
                    f"axis; received a scalar of shape {tuple(value.shape)}."
                )
        batch = (support_x[None], support_y[None])
        self._build_learner(batch[0])
        self._check_example_shape(tuple(support_x.shape[1:]), "support_x")
        validate_episode(*batch, *batch, num_classes=self._num_classes())
        return support_x, support_y

    def _check_inputs(self, x, name):
        """Validates a batch of plain learner inputs `(examples, *features)`."""
        x = to_tensor(x, name)
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(
                f"`{name}` must hold at least one example along its first axis; "
                f"received shape {tuple(x.shape)}."
            )
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError(f"`{name}` contains NaN or infinite values.")
        self._check_example_shape(tuple(x.shape[1:]), name)
        return keras.ops.convert_to_numpy(x)

    def _check_example_shape(self, received, name):
        """Raises unless one example of shape `received` fits the learner."""
        expected = self._learner_input_shape
        if expected is None:
            return
        wanted = tuple(expected[1:])
        if len(wanted) != len(received) or any(
            w is not None and w != r for w, r in zip(wanted, received)
        ):
            raise ValueError(
                f"`{name}` has feature shape {received}, but the learner "
                f"expects inputs of shape {wanted}."
            )

    def _check_classification_head(self):
        """A cross-entropy loss needs one output per class, at least two."""
        shape = self._learner_output_shape
        if not shape or shape[-1] is None or shape[-1] >= 2:
            return
        loss = getattr(self, "loss", None)
        name = loss if isinstance(loss, str) else type(loss).__name__
        if str(name).lower().replace("_", "") in _CROSS_ENTROPIES:
            raise ValueError(
                f"The compiled loss {name} is a classification loss, but the "
                f"learner predicts {shape[-1]} value(s) per example: it needs one "
                "output (logit) per class of an episode, at least 2 (e.g. "
                "`Dense(ways)` as its last layer)."
            )

    def _num_classes(self):
        """Number of classes for integer labels, or None for regression."""
        shape = self._learner_output_shape
        if shape is None or len(shape) < 2 or shape[-1] is None or shape[-1] < 2:
            return None
        return int(shape[-1])

    def _build_learner(self, support_x):
        """Builds the learner from one example of `support_x (T, n, ...)`."""
        if self.learner.built and self._learner_output_shape is not None:
            return
        example = support_x[0, :1]
        if self._learner_input_shape is None:
            self._learner_input_shape = (None, *example.shape[1:])
        with torch.no_grad():
            output = self.learner(example, training=False)
        self._learner_output_shape = (None, *output.shape[1:])
        self.built = True


def to_tensor(value, name):
    """`value` as a tensor on Keras's device, floating values as float32.

    Large floating arrays bound for a GPU are converted to float32 on the
    host and copied through page-locked memory (see `_pinned_copy`); the
    rest goes through `keras.ops.convert_to_tensor`.

    Args:
        value: an array-like or a tensor.
        name: the argument's name, for errors.

    Returns:
        A tensor on Keras's device.
    """
    if not isinstance(value, torch.Tensor):
        array = np.asarray(value)
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise ValueError(
                f"`{name}` must be a numeric array; received dtype {array.dtype}."
            )
        device = _keras_compat.default_device()
        if (
            device.type == "cuda"
            and array.dtype in _PINNED_DTYPES
            and array.nbytes >= _PINNED_MIN_BYTES
        ):
            return _pinned_copy(array, device)
        value = array
    tensor = keras.ops.convert_to_tensor(value)
    if tensor.is_floating_point() and tensor.dtype != torch.float32:
        tensor = tensor.to(torch.float32)
    return tensor


# Floating arrays at least this large go to a GPU through pinned memory.
_PINNED_MIN_BYTES = 1 << 16
_PINNED_DTYPES = (np.dtype("float16"), np.dtype("float32"), np.dtype("float64"))


def _pinned_copy(array, device):
    """A floating host array as a float32 tensor on `device`, copied fast.

    `keras.ops.convert_to_tensor` copies a NumPy array once on the host
    (`np.array`) and again, from pageable memory, to the GPU; measured on
    ProtoNet's 20-way 5-shot meta-batches (20 MB a step) that was about 10
    ms of a 46 ms step. Here the one host copy goes into page-locked memory
    (PyTorch's caching host allocator, several threads) and the GPU copy
    runs from there asynchronously; the allocator keeps the block until the
    copy is done.
    """
    if array.dtype != np.float32:
        array = array.astype(np.float32)
    with warnings.catch_warnings():
        # A read-only array is only read here.
        warnings.filterwarnings("ignore", message="The given NumPy array")
        source = torch.from_numpy(np.ascontiguousarray(array))
    staging = torch.empty(source.shape, dtype=torch.float32, pin_memory=True)
    staging.copy_(source)
    return staging.to(device, non_blocking=True)


def check_single_input_output(learner):
    """Episodes hold one input array and one target array per task."""
    inputs = getattr(learner, "inputs", None) if learner.built else None
    outputs = getattr(learner, "outputs", None) if learner.built else None
    for kind, tensors in (("inputs", inputs), ("outputs", outputs)):
        if tensors is not None and len(tensors) > 1:
            names = [getattr(t, "name", "?") for t in tensors]
            raise ValueError(
                f"The learner has {len(tensors)} {kind} ({names}), but an episode "
                "holds one input array `(tasks, examples, *features)` and one "
                "target array per set, so metakeras learners take one input and "
                "give one output. Concatenate the inputs into one array (and "
                "split it inside the model with a layer), or combine the outputs "
                "into one."
            )


def check_meta_batch_arrays(support_x, support_y, query_x, batch_size):
    """The checks of `adapt_and_predict` before its episodes are validated."""
    for name, value in (
        ("support_x", support_x),
        ("support_y", support_y),
        ("query_x", query_x),
    ):
        if np.ndim(value) < 2:
            raise ValueError(
                f"`{name}` must have a leading task axis and an example "
                "axis, i.e. shape (tasks, examples, ...). Received shape "
                f"{tuple(np.shape(value))}."
            )
    check_int("batch_size", batch_size, types=int)


def refuse_episodes(x):
    """`predict` takes learner inputs; an episode source gets a pointer instead.

    Recognised without drawing a batch: a dict of episode arrays, or one of
    metakeras's task sources.
    """
    if isinstance(x, SeededTasks) or (
        isinstance(x, dict) and set(EPISODE_KEYS) <= set(x)
    ):
        raise ValueError(
            "`predict` runs the learner with the meta-learned weights on plain "
            "inputs `(examples, *features)`, before any adaptation; received "
            "episodes. To adapt to each episode's support set and predict its "
            "queries, use `model.adapt_and_predict(support_x, support_y, "
            "query_x)` (or `metakeras.evaluation.evaluate_episodes` to score "
            "them)."
        )
