"""Collective operations on tensors and Keras variables, one per dtype and device.

`MetaModel` averages its meta-gradients and the learner's floating state
with `all_reduce_mean` before every outer step, copies rank 0's weights to
every process with `broadcast` when `fit` starts, and sums its metric states
over the processes (`metrics_result`) so every process logs the same
numbers.
"""

import keras
import torch
import torch.distributed as dist

from metakeras.distributed._process_group import is_distributed


def all_reduce_mean(tensors):
    """Averages floating tensors over all processes, in one all-reduce.

    Tensors are packed into one buffer per dtype and device, so a model's
    whole gradient costs one collective operation, not one per variable.
    Non-floating tensors (step counters, seeds) are returned unchanged.

    Args:
        tensors: a `torch.Tensor` or a nested list, tuple or dict of them,
            the same structure (shapes and dtypes) on every process.

    Returns:
        The same structure: each floating tensor replaced by its mean over
        the processes (a new tensor), other values as given. Without a
        process group of more than one process, `tensors` itself.

    Example:

    ```python
    # in every process of a torchrun job
    grads = distributed.all_reduce_mean([g1, g2])  # identical on all ranks
    ```
    """
    if not is_distributed():
        return tensors
    flat = keras.tree.flatten(tensors)
    picked = [
        i
        for i, value in enumerate(flat)
        if isinstance(value, torch.Tensor) and value.is_floating_point()
    ]
    reduced = _all_reduce([flat[i] for i in picked], dist.ReduceOp.SUM)
    scale = 1.0 / dist.get_world_size()
    for i, value in zip(picked, reduced):
        flat[i] = value.mul_(scale)
    return keras.tree.pack_sequence_as(tensors, flat)


def broadcast(variables, source=0):
    """Copies the values of Keras variables from one process to all others.

    `MetaModel.fit` calls it on the model's weights and optimizer state when
    training starts, so the processes start identical even when their
    random seeds differ.

    Args:
        variables: a list of `keras.Variable` (e.g. `model.weights`), the
            same variables in the same order on every process.
        source: the rank whose values are copied. Defaults to `0`.

    Returns:
        `None`; the variables are assigned in place.

    Example:

    ```python
    distributed.broadcast(model.weights)  # every rank now holds rank 0's
    ```
    """
    if not is_distributed():
        return
    variables = list(variables)
    values = _pack_groups([v.value.detach() for v in variables])
    for buffer, _ in values:
        dist.broadcast(buffer, src=source)
    with torch.no_grad():
        for variable, value in zip(variables, _unpack_groups(values, len(variables))):
            variable.assign(value)


def metrics_result(model, compute):
    """`compute()` (a model's metric results) over every process's data.

    Keras metrics keep additive states (totals and counts, confusion
    counts), so summing the states over the processes and computing the
    result gives the metric of the union of the processes' examples, the
    same number one process would report. The local states are restored
    afterwards, so the next update accumulates locally again.
    """
    if not is_distributed():
        return compute()
    variables = model.metrics_variables
    local = [v.value.detach().clone() for v in variables]
    summed = _all_reduce([value.clone() for value in local], dist.ReduceOp.SUM)
    with torch.no_grad():
        try:
            for variable, value in zip(variables, summed):
                variable.assign(value)
            # Results may alias the state tensors restored below.
            return keras.tree.map_structure(_detached_copy, compute())
        finally:
            for variable, value in zip(variables, local):
                variable.assign(value)


def _detached_copy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    return value


def _all_reduce(tensors, op):
    """All-reduces a list of tensors in one operation per dtype and device."""
    if not tensors:
        return []
    groups = _pack_groups(tensors)
    for buffer, _ in groups:
        dist.all_reduce(buffer, op=op)
    return _unpack_groups(groups, len(tensors))


def _pack_groups(tensors):
    """`[(flat buffer, [(position, tensor), ...]), ...]`, one per dtype/device."""
    groups = {}
    for position, tensor in enumerate(tensors):
        groups.setdefault((tensor.dtype, tensor.device), []).append((position, tensor))
    return [
        (torch.cat([t.detach().reshape(-1) for _, t in members]), members)
        for members in groups.values()
    ]


def _unpack_groups(groups, count):
    out = [None] * count
    for buffer, members in groups:
        offset = 0
        for position, tensor in members:
            size = tensor.numel()
            out[position] = buffer[offset : offset + size].view(tensor.shape)
            offset += size
    return out
