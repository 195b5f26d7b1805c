"""Adapting a fitted meta-learner, or a pipeline ending in one, to a new task."""

import copy

from sklearn.pipeline import Pipeline

__all__ = ["adapt"]


def adapt(estimator, X_support, y_support):
    """Adapts a fitted meta-learner, or a pipeline ending in one, to a new task.

    For a `Pipeline`, the steps before the last `transform` the support rows
    (as they were fit in meta-training) and the last step `adapt`s to them;
    nested pipelines are followed to their last step. For an estimator it is
    `estimator.adapt(X_support, y_support)`. Like `fit`, it changes the
    estimator in place and returns it; the meta-learned weights are left
    alone, so one can adapt again to another task.

    Args:
        estimator: a fitted `MetaClassifier` or `MetaRegressor` (or any
            estimator with `adapt(X, y)`), or a fitted `Pipeline` whose last
            step is one.
        X_support: the new task's labelled rows, in the input format of
            `estimator` (raw features for a pipeline).
        y_support: their labels (classification) or targets (regression).

    Returns:
        `estimator`, adapted: its `predict`, `predict_proba` and `score`
        refer to the new task.

    Raises:
        TypeError: if the estimator, or the pipeline's last step, has no
            `adapt` method.

    Example:

    ```python
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from metakeras.sklearn import MetaClassifier, adapt

    pipe = make_pipeline(StandardScaler(), MetaClassifier(shots=5))
    pipe.fit(X_old_classes, y_old_classes)
    adapt(pipe, X_few, y_few).score(X_new, y_new)   # scaled, then adapted
    ```
    """
    _adapting_step(estimator)
    if not isinstance(estimator, Pipeline):
        estimator.adapt(X_support, y_support)
        return estimator
    X = X_support
    for _, step in estimator.steps[:-1]:
        if step is not None and not isinstance(step, str):  # "passthrough"
            X = step.transform(X)
    adapt(estimator.steps[-1][1], X, y_support)
    return estimator


def _adapting_step(estimator):
    """The step that adapts: the last step of (nested) pipelines, checked."""
    final = estimator
    while isinstance(final, Pipeline):
        final = final.steps[-1][1]
    if not callable(getattr(final, "adapt", None)):
        where = "the estimator" if final is estimator else "the pipeline's last step"
        raise TypeError(
            f"adapt: {where}, {final!r}, has no `adapt` method. It must be a "
            "meta-learner such as metakeras.sklearn.MetaClassifier or "
            "MetaRegressor (any estimator with adapt(X_support, y_support))."
        )
    return final


def _detached(estimator):
    """A shallow copy to adapt, sharing the fitted models but not the state.

    `adapt` sets new attributes (`adapted_model_`, `classes_`) on the copy
    of the adapting step; the meta-learned model and the pipeline's fitted
    transformers are shared, unchanged.
    """
    if isinstance(estimator, Pipeline):
        name, last = estimator.steps[-1]
        copied = copy.copy(estimator)
        copied.steps = [*estimator.steps[:-1], (name, _detached(last))]
        return copied
    return copy.copy(estimator)
