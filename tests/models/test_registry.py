"""The algorithm registry and the MAML family's `inner=InnerLoop(...)`."""

import ast
import inspect
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import LOSS, WAYS, dense_learner, informative_episodes

import metakeras
from metakeras import InnerLoop, demo
from metakeras.cli import build_parser
from metakeras.cli._config import FIELDS
from metakeras.inner import SHORTHANDS
from metakeras.models import registry
from metakeras.sklearn import MetaClassifier, MetaRegressor

ROOT = Path(__file__).resolve().parents[2]
NAMES = (
    "maml",
    "fomaml",
    "metasgd",
    "anil",
    "reptile",
    "mamlpp",
    "imaml",
    "protonet",
    "matchingnet",
    "r2d2",
    "relationnet",
    "baseline",
    "baselinepp",
    "simpleshot",
)
PRETRAINED = NAMES[-3:]


# ------------------------------------------------------------- registry


def test_names_and_classes():
    assert metakeras.models.available() == NAMES
    assert registry.available("classification") == NAMES
    assert registry.available("regression") == NAMES[:7]
    classes = {name: metakeras.models.get(name).cls for name in NAMES}
    assert classes == {
        "maml": metakeras.MAML,
        "fomaml": metakeras.MAML,
        "metasgd": metakeras.MetaSGD,
        "anil": metakeras.ANIL,
        "reptile": metakeras.Reptile,
        "mamlpp": metakeras.MAMLPlusPlus,
        "imaml": metakeras.IMAML,
        "protonet": metakeras.ProtoNet,
        "matchingnet": metakeras.MatchingNet,
        "r2d2": metakeras.R2D2,
        "relationnet": metakeras.RelationNet,
        "baseline": metakeras.Baseline,
        "baselinepp": metakeras.BaselinePlusPlus,
        "simpleshot": metakeras.SimpleShot,
    }
    assert [n for n in NAMES if registry.get(n).inner_loop] == list(NAMES[:7])
    assert not registry.get("protonet").head and registry.get("anil").head
    assert [n for n in NAMES if registry.get(n).pretrains] == list(PRETRAINED)
    assert not any(registry.get(n).head for n in PRETRAINED)
    assert registry.get(registry.get("anil")) is registry.get("anil")


def test_unknown_names_echo_the_valid_choices():
    with pytest.raises(ValueError) as info:
        metakeras.models.get("mamal")
    message = str(info.value)
    assert "'mamal'" in message and all(name in message for name in NAMES)
    with pytest.raises(ValueError, match="valid settings: inner_steps"):
        registry.get_setting("inner_lr")
    with pytest.raises(ValueError, match="must be a name, an Algorithm or"):
        registry.get(3)
    with pytest.raises(ValueError, match="`task` must be one of"):
        registry.get("maml").defaults("ranking")
    with pytest.raises(ValueError, match="protonet .* has no regression form"):
        registry.get("protonet").defaults("regression")


def _documented_table():
    """The defaults table of the registry's docstring, as {setting: {name: text}}."""
    lines = [line for line in registry.__doc__.splitlines() if line.startswith("| `")]
    header = next(
        line for line in registry.__doc__.splitlines() if line.startswith("| setting")
    )
    names = [cell.strip() for cell in header.strip("|").split("|")][1:]
    table = {}
    for line in lines:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        table[cells[0].strip("`")] = dict(zip(names, cells[1:]))
    return table


def _as_text(algorithm, setting):
    if setting not in algorithm.settings:
        return "-"
    values = [algorithm.default(setting, task) for task in algorithm.tasks]
    text = " / ".join(dict.fromkeys(str(v) for v in values))
    return f"{text} (fixed)" if setting in algorithm.fixed else text


def test_documented_defaults_are_the_defaults():
    table = _documented_table()
    assert list(table) == [s.name for s in registry.SETTINGS]
    for setting, row in table.items():
        assert list(row) == list(NAMES)
        for name, text in row.items():
            assert text == _as_text(registry.get(name), setting), (setting, name)
    # The MAML paper's inner learning rates: Omniglot and sinusoid regression.
    maml = registry.get("maml")
    assert maml.default("inner_learning_rate", "classification") == 0.4
    assert maml.default("inner_learning_rate", "regression") == 0.01
    assert registry.get("reptile").defaults("regression")["inner_steps"] == 5
    assert registry.get("fomaml").defaults("regression")["first_order"] is True


def test_class_defaults_are_unchanged():
    learner = dense_learner()
    assert metakeras.MAML(learner).inner.get_config() == InnerLoop().get_config()
    assert metakeras.MetaSGD(learner).inner.learning_rate == 0.01
    reptile = metakeras.Reptile(learner).inner
    assert (reptile.steps, reptile.learning_rate, reptile.first_order) == (
        5,
        0.01,
        True,
    )
    assert demo.INNER_LEARNING_RATE == 0.01


def test_resolve_checks_values_and_applicability():
    maml = registry.get("maml")
    resolved = maml.resolve("classification", inner_steps=3, inner_clipnorm=2)
    assert resolved["inner_steps"] == 3 and resolved["inner_clipnorm"] == 2.0
    assert isinstance(resolved["inner_clipnorm"], float)
    assert resolved["inner_learning_rate"] == 0.4
    assert set(resolved) == {s.name for s in registry.SETTINGS}
    assert maml.resolve("regression", inner_steps=np.int64(2))["inner_steps"] == 2
    protonet = registry.get("protonet").resolve("classification")
    assert protonet["inner_steps"] is None and protonet["transductive_eval"] is False
    with pytest.raises(ValueError, match="`inner_clipnorm` must be a positive number"):
        maml.resolve("regression", inner_clipnorm=0)
    with pytest.raises(ValueError, match="`zero_head` must be true or false"):
        maml.resolve("regression", zero_head="yes")
    with pytest.raises(
        ValueError, match="has no inner loop, so these settings do not apply: zero_head"
    ):
        registry.get("protonet").resolve("classification", zero_head=True)
    with pytest.raises(
        ValueError,
        match="do not apply to reptile: per_step_bn_statistics. Remove them, or "
        "choose maml, fomaml, metasgd, anil",
    ):
        registry.get("reptile").resolve("regression", per_step_bn_statistics=True)
    with pytest.raises(ValueError, match="fomaml always has first_order=True"):
        registry.get("fomaml").resolve("regression", first_order=False)
    assert registry.get("fomaml").resolve("regression", first_order=True)["first_order"]


def test_create_builds_with_the_task_defaults_and_callbacks():
    fomaml = metakeras.models.get("fomaml")
    model = fomaml.create(dense_learner(), "classification", inner_clipnorm=1.0)
    assert isinstance(model, metakeras.MAML)
    assert (
        model.inner.get_config()
        == InnerLoop(
            steps=1, learning_rate=0.4, first_order=True, clipnorm=1.0
        ).get_config()
    )
    model = registry.get("metasgd").create(dense_learner(), "regression", name="m")
    assert (model.name, model.inner.learning_rate) == ("m", 0.01)
    protonet = registry.get("protonet").create(
        dense_learner(), "classification", transductive_eval=True
    )
    assert protonet.transductive_eval is True
    (callback,) = fomaml.callbacks(zero_head=True)
    assert isinstance(callback, metakeras.callbacks.ZeroHead)
    assert fomaml.callbacks(zero_head=False) == []
    with pytest.raises(ValueError, match="no inner loop"):
        registry.get("protonet").create(
            dense_learner(), "classification", zero_head=True
        )


def test_classes_of_ones_own_take_their_base_settings():
    class Mine(metakeras.Reptile):
        pass

    class Bare(metakeras.MetaModel):
        pass

    mine = registry.get(Mine)
    assert mine.name == "Mine" and mine.default("inner_steps", "regression") == 5
    assert isinstance(mine.create(dense_learner(), "regression"), Mine)
    assert registry.get(metakeras.MAML) is registry.get("maml")
    assert registry.get(Bare).settings == () and not registry.get(Bare).inner_loop


# ------------------------------------- every option reaches every front end


def test_every_inner_loop_option_is_a_setting_everywhere():
    # One shorthand per InnerLoop argument, each a registry setting.
    assert set(SHORTHANDS.values()) == set(InnerLoop().get_config())
    settings = [s.name for s in registry.SETTINGS]
    assert set(SHORTHANDS) <= set(settings)
    maml_arguments = inspect.signature(metakeras.MAML).parameters
    assert set(SHORTHANDS) | {"inner"} <= set(maml_arguments)
    for estimator in (MetaClassifier, MetaRegressor):
        parameters = inspect.signature(estimator).parameters
        for name in settings:
            assert parameters[name].default is None, (estimator, name)
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = {option for action in train._actions for option in action.option_strings}
    cli_doc = (ROOT / "docs" / "cli.md").read_text()
    for setting in registry.SETTINGS:
        assert setting.name in FIELDS
        assert setting.flag in flags
        assert f"`{setting.flag}`" in cli_doc


@pytest.mark.parametrize("name", PRETRAINED)
def test_pretrained_algorithms_reach_the_estimators_and_the_command(name):
    # The estimator's episodes keep their `classes`, so these algorithms
    # pretrain on the 6 training digits, then adapt to 3 unseen ones.
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    estimator = MetaClassifier(
        algorithm=name,
        epochs=2,
        steps_per_epoch=5,
        validation_fraction=None,  # every digit trains; the model is kept
        random_state=0,
    ).fit(x[y < 6] / 16, y[y < 6])
    assert estimator.model_.num_classes == 6
    few = np.concatenate([np.flatnonzero(y == c)[:3] for c in (6, 7, 8)])
    estimator.adapt(x[few] / 16, y[few])
    rows = np.isin(y, (6, 7, 8))
    assert estimator.score(x[rows] / 16, y[rows]) > 0.5
    args = build_parser().parse_args(["train", "--algorithm", name])
    assert args.algorithm == name


def _name_lists(path):
    """Lines of `path` listing algorithm names or comparing with one."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.List, ast.Tuple, ast.Set, ast.Dict)):
            items = node.keys if isinstance(node, ast.Dict) else node.elts
            # A name, or the first argument of a call (`Algorithm("maml", ...)`).
            items = [
                i.args[0] if isinstance(i, ast.Call) and i.args else i for i in items
            ]
            named = {
                item.value
                for item in items
                if isinstance(item, ast.Constant) and item.value in NAMES
            }
            if len(named) > 1:
                found.append(node.lineno)
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Constant) and o.value in NAMES for o in operands):
                found.append(node.lineno)
    return found


def test_the_names_are_listed_once_in_the_package():
    listed = {
        str(path.relative_to(ROOT)): lines
        for path in sorted((ROOT / "metakeras").rglob("*.py"))
        if (lines := _name_lists(path))
    }
    assert list(listed) == ["metakeras/models/registry.py"]
    assert len(listed["metakeras/models/registry.py"]) == 1


# ----------------------------------------------------------------- inner=


def _fit(model, seed=0):
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS)
    keras.utils.set_random_seed(seed)
    model.fit(informative_episodes(tasks=4, seed=5), batch_size=2, epochs=2, verbose=0)
    return model.get_weights()


INNER = dict(
    steps=2,
    learning_rate=0.2,
    first_order=False,
    batch_size=4,
    shuffle=True,
    clipnorm=0.5,
)
SHORT = dict(
    inner_steps=2,
    inner_learning_rate=0.2,
    first_order=False,
    inner_batch_size=4,
    inner_shuffle=True,
    inner_clipnorm=0.5,
)


@pytest.mark.parametrize("cls", [metakeras.MAML, metakeras.MetaSGD, metakeras.ANIL])
def test_inner_equals_the_shorthand(cls):
    whole = _fit(cls(dense_learner(seed=1), inner=InnerLoop(**INNER)))
    short = _fit(cls(dense_learner(seed=1), **SHORT))
    untrained = dense_learner(seed=1).get_weights()
    assert not np.allclose(whole[0], untrained[0])
    for a, b in zip(whole, short):
        np.testing.assert_array_equal(a, b)


def test_reptile_takes_inner_and_is_always_first_order():
    inner = InnerLoop(steps=3, learning_rate=0.1, global_clipnorm=1.0)
    model = metakeras.Reptile(dense_learner(seed=2), inner=inner)
    assert model.inner.first_order and model.inner.steps == 3
    assert model.inner.global_clipnorm == 1.0
    short = metakeras.Reptile(
        dense_learner(seed=2),
        inner_steps=3,
        inner_learning_rate=0.1,
        inner_global_clipnorm=1.0,
    )
    for a, b in zip(_fit(model), _fit(short)):
        np.testing.assert_array_equal(a, b)


def test_a_conflicting_shorthand_raises_naming_both():
    inner = InnerLoop(steps=3, learning_rate=0.1)
    with pytest.raises(ValueError) as info:
        metakeras.MAML(dense_learner(), inner=inner, inner_steps=5)
    message = str(info.value)
    assert "inner=InnerLoop(steps=3" in message and "inner_steps=5" in message
    with pytest.raises(ValueError, match="inner_clipnorm=2.0"):
        metakeras.MetaSGD(dense_learner(), inner=inner, inner_clipnorm=2.0)
    # A shorthand that agrees with `inner` is no conflict.
    model = metakeras.MAML(dense_learner(), inner=inner, inner_steps=3)
    assert model.inner is inner
    with pytest.raises(ValueError, match="`inner` must be None or a metakeras"):
        metakeras.MAML(dense_learner(), inner={"steps": 3})


def test_inner_round_trips_through_config_and_keras_files(tmp_path):
    inner = InnerLoop(steps=2, learning_rate=0.3, batch_size=2, shuffle=False)
    model = metakeras.MAML(dense_learner(), inner=inner, name="maml")
    config = model.get_config()
    assert config["inner_shuffle"] is False and config["inner_batch_size"] == 2
    rebuilt = metakeras.MAML.from_config(config)
    assert rebuilt.inner.get_config() == inner.get_config()
    _fit(model)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.inner.get_config() == inner.get_config()
    # The default shuffle is not written, so configs read as before.
    assert "inner_shuffle" not in metakeras.MAML(dense_learner()).get_config()


def test_configs_saved_before_inner_still_load():
    learner = keras.saving.serialize_keras_object(dense_learner())
    old = {
        "name": "maml",
        "trainable": True,
        "learner": learner,
        "vectorize_tasks": "auto",
        "inner_steps": 4,
        "inner_learning_rate": 0.2,
        "first_order": True,
        "inner_batch_size": None,
        "adapt_layers": None,
        "transductive_eval": False,
    }
    model = metakeras.MAML.from_config(old)
    assert (
        model.inner.get_config()
        == InnerLoop(steps=4, learning_rate=0.2, first_order=True).get_config()
    )
    reptile = dict(old, inner_steps=5)
    reptile.pop("first_order")
    assert metakeras.Reptile.from_config(reptile).inner.steps == 5


def test_inner_runs_in_adapt_like_the_shorthand():
    episodes = informative_episodes(tasks=1, seed=9)
    sx, sy = episodes["support_x"][0], episodes["support_y"][0]
    outputs = []
    for kwargs in (
        {"inner": InnerLoop(steps=3, learning_rate=0.5)},
        {"inner_steps": 3, "inner_learning_rate": 0.5},
    ):
        model = metakeras.MAML(dense_learner(seed=3), **kwargs)
        model.compile(loss=LOSS)
        outputs.append(model.adapt(sx, sy).predict(sx, verbose=0))
    assert outputs[0].shape == (len(sx), WAYS)
    np.testing.assert_array_equal(*outputs)


# ------------------------------------------------------- MAML++ and iMAML


def test_mamlpp_and_imaml_by_name_with_their_settings():
    mamlpp = registry.get("mamlpp").create(dense_learner(), "classification")
    assert isinstance(mamlpp, metakeras.MAMLPlusPlus)
    assert (mamlpp.inner.steps, mamlpp.inner.learning_rate) == (5, 0.1)
    # No BatchNormalization in the learner: no per-step statistics.
    assert mamlpp.per_step_learning_rates and not mamlpp.per_step_bn_statistics
    imaml = registry.get("imaml").create(
        dense_learner(),
        "regression",
        proximal_lambda=0.5,
        cg_steps=3,
        inner_optimizer="Adam",
    )
    assert (imaml.proximal_lambda, imaml.cg_steps) == (0.5, 3)
    assert imaml.inner.optimizer == "adam" and imaml.inner.learning_rate == 0.01
    with pytest.raises(ValueError, match="do not apply to imaml: first_order"):
        registry.get("imaml").resolve("regression", first_order=True)
    with pytest.raises(
        ValueError, match="do not apply to maml: cg_steps. Remove them, or choose imaml"
    ):
        registry.get("maml").resolve("regression", cg_steps=3)
    with pytest.raises(
        ValueError, match="`inner_optimizer` must be one of sgd, adam, rmsprop"
    ):
        registry.get("maml").resolve("regression", inner_optimizer="adagrad")


def test_the_command_line_and_estimators_offer_them():
    args = build_parser().parse_args(
        [
            "train",
            "--algorithm",
            "imaml",
            "--proximal-lambda",
            "0.5",
            "--cg-steps",
            "4",
            "--inner-optimizer",
            "RMSprop",
        ]
    )
    assert (args.algorithm, args.proximal_lambda, args.cg_steps) == ("imaml", 0.5, 4)
    assert args.inner_optimizer == "rmsprop"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--inner-optimizer", "adagrad"])
    estimator = MetaClassifier(algorithm="mamlpp", inner_optimizer="sgd")
    assert estimator._settings()["inner_steps"] == 5
    assert estimator._settings()["inner_optimizer"] == "sgd"
