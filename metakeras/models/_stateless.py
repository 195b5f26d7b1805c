"""The learner's functional forward pass, without Keras's per-layer overhead.

`Model.stateless_call` runs a model with given variable values. For the
plain `keras.Sequential` stacks the meta-learning papers use, most of its
cost on small support sets is not arithmetic but `Layer.__call__`'s
bookkeeping (argument binding, masks, autocasting, name scopes, tree
flattening), paid per layer, per inner step, per task. `stateless_forward`
runs such stacks by calling each layer's `call` directly inside the same
`StatelessScope` `stateless_call` uses, so values, gradients and state
updates are identical (tested in `tests/layers/test_layers.py`); any model it
cannot prove simple goes through `stateless_call` unchanged.
"""

import inspect
import weakref

import keras

from metakeras import _keras_compat

_PLANS = weakref.WeakKeyDictionary()


def stateless_forward(model, weights, state, x, training):
    """`model.stateless_call(weights, state, x, training=training)`, faster.

    Args:
        model: a built Keras model.
        weights: values for `model.trainable_variables`, in order.
        state: values for `model.non_trainable_variables`, in order.
        x: the input batch.
        training: whether the layers run in training mode.

    Returns:
        `(outputs, new_state)` as `Model.stateless_call` returns them.
    """
    plan, model_takes_training = _cached(model)
    if plan is None:
        if model_takes_training:
            return model.stateless_call(weights, state, x, training=training)
        return model.stateless_call(weights, state, x)
    mapping = list(zip(model.trainable_variables, weights))
    mapping += list(zip(model.non_trainable_variables, state))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        for call, takes_training in plan:
            x = call(x, training=training) if takes_training else call(x)
    new_state = [scope.get_current_value(v) for v in model.non_trainable_variables]
    return x, new_state


def _plan(model):
    """The `(layer.call, takes_training)` sequence of a simple model, or None."""
    return _cached(model)[0]


def _cached(model):
    """`(plan, whether model.call takes training)`, rebuilt when layers change."""
    signature = _signature(model)
    cached = _PLANS.get(model)
    if cached is None or cached[0] != signature:
        cached = (signature, _sequential_plan(model), _takes_training(model))
        _PLANS[model] = cached
    return cached[1:]


def _signature(model):
    """What a plan depends on: the layers, their classes and dtype policies.

    `Model.quantize` and the compression callbacks change layers in place
    (class, policy, variables), so a cached plan must not outlive them.
    """
    parts = []
    for layer in model.layers:
        policy = layer.dtype_policy
        parts.append(
            (id(layer), type(layer), policy.name, policy.quantization_mode, layer.built)
        )
        if isinstance(layer, keras.Model):
            parts.append(_signature(layer))
    return tuple(parts)


def _sequential_plan(model):
    if type(model) is not keras.Sequential or not model.built:
        return None
    plan = []
    for layer in model.layers:
        if type(layer) is keras.Sequential:
            inner = _sequential_plan(layer)
            if inner is None:
                return None
            plan += inner
        elif _is_simple(layer):
            plan.append((layer.call, _takes_training(layer)))
        else:
            return None
    return plan


def _is_simple(layer):
    """Whether calling `layer.call` directly equals calling the layer."""
    if isinstance(layer, keras.Model) or not layer.built:
        return False
    if layer.dtype_policy.name != "float32" or layer.dtype_policy.quantization_mode:
        return False
    if _keras_compat.remat_mode(layer) is not None:
        return False
    if layer.activity_regularizer is not None:
        return False
    # Sublayers would resolve `training` from `__call__`'s call context.
    if _keras_compat.flatten_layers(layer, include_self=False, recursive=False):
        return False
    # Layers that make or consume masks (Masking, Embedding with mask_zero,
    # attention) need `__call__`'s mask propagation.
    if type(layer).compute_mask is not keras.layers.Layer.compute_mask:
        return False
    parameters = inspect.signature(layer.call).parameters
    required = [
        p
        for p in parameters.values()
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if "mask" in parameters and parameters["mask"].default is not None:
        return False
    return len(required) == 1


def _takes_training(layer):
    parameters = inspect.signature(layer.call).parameters.values()
    return any(
        p.name == "training" or p.kind is inspect.Parameter.VAR_KEYWORD
        for p in parameters
    )
