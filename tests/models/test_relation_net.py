"""Relation Networks: learned pair scores against a hand computation."""

import keras
import numpy as np
import pytest
from test_matching_net import LOSS, embedding, episodes

import metakeras
from metakeras.models import RelationClassifier, RelationNet


def hand_logits(model, sx, sy, qx, ways):
    w = [keras.ops.convert_to_numpy(v) for v in model.learner.weights]
    r = [keras.ops.convert_to_numpy(v) for v in model.relation.weights]

    def embed(x):
        return np.maximum(x @ w[0] + w[1], 0) @ w[2] + w[3]

    support, query = embed(sx), embed(qx)
    prototypes = np.stack([support[sy == c].mean(0) for c in range(ways)])
    logits = np.empty((len(query), ways))
    for i, q in enumerate(query):
        for c, p in enumerate(prototypes):
            pair = np.concatenate([q, p, np.abs(q - p), q * p])
            logits[i, c] = (np.maximum(pair @ r[0] + r[1], 0) @ r[2] + r[3])[0]
    return logits


def test_training_moves_both_networks_and_matches_the_hand_computation(tmp_path):
    keras.utils.set_random_seed(0)
    model = RelationNet(embedding())
    model.compile("adam", LOSS, metrics=["accuracy"])
    batch = episodes()
    first = model.train_on_batch(batch)[0]
    relation_before = [w.copy() for w in model.relation.get_weights()]
    learner_before = [w.copy() for w in model.learner.get_weights()]
    for _ in range(40):
        last = model.train_on_batch(batch)[0]
    assert last < first
    for before, after in zip(relation_before, model.relation.get_weights()):
        assert not np.allclose(before, after)
    for before, after in zip(learner_before, model.learner.get_weights()):
        assert not np.allclose(before, after)
    sx, sy, qx = (batch[k][0] for k in ("support_x", "support_y", "query_x"))
    logits = model.adapt_and_predict(sx[None], sy[None], qx[None])[0]
    np.testing.assert_allclose(
        logits, hand_logits(model, sx, sy, qx, 3), rtol=1e-4, atol=1e-4
    )
    classifier = model.adapt(sx, sy)
    assert isinstance(classifier, RelationClassifier)
    np.testing.assert_allclose(
        classifier.predict(qx, verbose=0), logits, rtol=1e-5, atol=1e-5
    )
    model.save(tmp_path / "relation.keras")
    restored = keras.models.load_model(tmp_path / "relation.keras")
    np.testing.assert_allclose(
        restored.adapt_and_predict(sx[None], sy[None], qx[None])[0], logits, rtol=1e-5
    )
    classifier.save(tmp_path / "classifier.keras")
    np.testing.assert_allclose(
        keras.models.load_model(tmp_path / "classifier.keras").predict(qx, verbose=0),
        classifier.predict(qx, verbose=0),
        rtol=1e-6,
    )


def test_relation_module_compares_the_pair_or_reads_it_as_it_is():
    pairs = np.array([[1.0, -2.0, 3.0, 5.0]], "float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(metakeras.layers.PairComparison()(pairs)),
        [[1.0, -2.0, 3.0, 5.0, 2.0, 7.0, 3.0, -10.0]],
    )
    with pytest.raises(ValueError, match="last axis must be even"):
        metakeras.layers.PairComparison()(np.ones((1, 3), "float32"))
    compared = metakeras.models.relation_module(units=8)
    compared.build((None, 4))
    assert compared.get_layer("relation_hidden").kernel.shape == (8, 8)
    plain = metakeras.models.relation_module(units=8, compare=False)
    plain.build((None, 4))
    assert [layer.name for layer in plain.layers] == [
        "relation_hidden",
        "relation_score",
    ]
    assert plain.get_layer("relation_hidden").kernel.shape == (4, 8)


def test_custom_relation_module_and_errors():
    relation = keras.Sequential(
        [keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)]
    )
    model = RelationNet(embedding(), relation=relation)
    model.compile("adam", LOSS)
    model.train_on_batch(episodes())
    assert model.relation.layers[0].units == 4
    assert metakeras.models.get("relationnet").cls is RelationNet
    with pytest.raises(ValueError, match="`relation` must be a keras.Model"):
        RelationNet(embedding(), relation=lambda x: x)
