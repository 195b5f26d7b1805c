"""One throughput measurement in a fresh process (so peak memory is its own).

Run by benchmarks/throughput.py as
`python _throughput_worker.py IMPL CONFIG_JSON`; prints one JSON line.
IMPL is one of `IMPLEMENTATIONS`: metakeras with its default
`vectorize_tasks="auto"` (`metakeras`), a task loop (`metakeras-loop`),
`vectorize_tasks=True` (`metakeras-vmap`), or `compile(jit_compile=True)`
(`metakeras-graph`: the whole step as a CUDA graph); the plain PyTorch
reference of `_reference.py` as a task loop (`torch`) or under vmap
(`torch-vmap`); or learn2learn. Only the chosen library is imported, so the
learn2learn run can use its own virtual environment. `config["device"]`
(`"cpu"` or `"cuda"`) says where everything runs.
"""

import json
import os
import resource
import sys
import time
import warnings

import numpy as np

# Algorithms whose training step is a supervised batch of base classes (the
# pretrained baselines); their reference is `pretraining_step_function`.
PRETRAINED = ("baseline", "baselinepp", "simpleshot")
# Episodic metric learners that learn2learn does not implement (their
# reference is `step_function`'s metric path, like ProtoNet's).
NO_LEARN2LEARN = ("matchingnet", "relationnet", "r2d2")
IMPLEMENTATIONS = (
    "metakeras",
    "metakeras-loop",
    "metakeras-vmap",
    "metakeras-graph",
    "torch",
    "torch-vmap",
    "learn2learn",
)


def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _episode(config, rng):
    t, n, k, q = (
        config["meta_batch"],
        config["ways"],
        config["shots"],
        config["queries"],
    )
    if config["learner"] == "mlp":
        amplitude = rng.uniform(0.1, 5, (t, 1, 1))
        x = rng.uniform(-5, 5, (t, k + q, 1)).astype("float32")
        y = (amplitude * np.sin(x)).astype("float32")
        return x[:, :k], y[:, :k], x[:, k:], y[:, k:]
    shape = (config.get("channels", 1), config["image_size"], config["image_size"])
    if config["algorithm"] in PRETRAINED:
        # A pretraining batch: the examples of an episode, base-class labels.
        size = t * n * (k + q)
        x = rng.random((size, *shape), dtype="float32")
        return x, rng.integers(0, config["classes"], size)
    sx = rng.random((t, n * k, *shape), dtype="float32")
    qx = rng.random((t, n * q, *shape), dtype="float32")
    sy = np.tile(np.repeat(np.arange(n), k), (t, 1))
    qy = np.tile(np.repeat(np.arange(n), q), (t, 1))
    return sx, sy, qx, qy


def _metakeras_step(config, vectorize, jit_compile=False):
    import keras

    import metakeras

    keras.utils.set_random_seed(0)
    if config["learner"] == "mlp":
        from metakeras.demo import sinusoid_learner

        learner, loss = sinusoid_learner(), "mse"
    else:
        size = config["image_size"]
        embedding = config["algorithm"] != "maml"
        outputs = None if embedding else config["ways"]
        learner = metakeras.models.conv4(
            input_shape=(config.get("channels", 1), size, size),
            outputs=outputs,
            filters=config.get("filters", 64),
        )
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if config["algorithm"] in PRETRAINED:
        model = metakeras.models.get(config["algorithm"]).create(
            learner,
            "classification",
            num_classes=config["classes"],
            vectorize_tasks=vectorize,
        )
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
        return lambda batch: model.train_on_batch(*batch)
    if config["algorithm"] == "protonet":
        model = metakeras.ProtoNet(learner, vectorize_tasks=vectorize)
    elif config["algorithm"] in NO_LEARN2LEARN:
        # MatchingNet, RelationNet, R2D2 at their registry defaults.
        model = metakeras.models.get(config["algorithm"]).create(
            learner, "classification", vectorize_tasks=vectorize
        )
    elif config["algorithm"] == "imaml":
        model = metakeras.IMAML(
            learner,
            inner_steps=config["steps"],
            inner_learning_rate=config["inner_lr"],
            vectorize_tasks=vectorize,
        )
    else:
        model = metakeras.MAML(
            learner,
            inner_steps=config["steps"],
            inner_learning_rate=config["inner_lr"],
            first_order=config["first_order"],
            vectorize_tasks=vectorize,
        )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss=loss, jit_compile=jit_compile
    )

    def step(batch):
        sx, sy, qx, qy = batch
        model.train_on_batch(
            {"support_x": sx, "support_y": sy, "query_x": qx, "query_y": qy}
        )

    return step


def _learn2learn_step(config):
    if config["algorithm"] in PRETRAINED + NO_LEARN2LEARN:
        raise SystemExit(f"learn2learn has no {config['algorithm']!r} to measure")
    import learn2learn as l2l
    import torch
    from _reference import modules, prototype_logits

    net, loss_fn = modules(config)
    maml = l2l.algorithms.MAML(
        net, lr=config["inner_lr"], first_order=config["first_order"]
    )
    optimizer = torch.optim.Adam(maml.parameters(), 1e-3)

    def step(batch):
        sx, sy, qx, qy = (torch.from_numpy(np.asarray(a)) for a in batch)
        optimizer.zero_grad()
        for t in range(sx.shape[0]):
            if config["algorithm"] == "protonet":
                support, query = net(sx[t]), net(qx[t])
                logits = prototype_logits(support, sy[t], query, config["ways"])
                loss = loss_fn(logits, qy[t])
            else:
                learner = maml.clone()
                for _ in range(config["steps"]):
                    learner.adapt(loss_fn(learner(sx[t]), sy[t]))
                loss = loss_fn(learner(qx[t]), qy[t])
            (loss / sx.shape[0]).backward()
        optimizer.step()

    return step


def _step(impl, config):
    if impl == "metakeras":
        return _metakeras_step(config, vectorize="auto")
    if impl == "metakeras-loop":
        return _metakeras_step(config, vectorize=False)
    if impl == "metakeras-vmap":
        return _metakeras_step(config, vectorize=True)
    if impl == "metakeras-graph":
        return _metakeras_step(config, vectorize="auto", jit_compile=True)
    if impl == "torch" and config["algorithm"] in PRETRAINED:
        from _reference import pretraining_step_function

        return pretraining_step_function(config, config["device"])
    if impl in ("torch", "torch-vmap"):
        from _reference import step_function

        return step_function(config, config["device"], vectorize=impl == "torch-vmap")
    if impl == "learn2learn":
        return _learn2learn_step(config)
    raise SystemExit(f"unknown implementation {impl!r}; choose from {IMPLEMENTATIONS}")


def _measure(impl, config):
    import torch

    cuda = config["device"].startswith("cuda")

    def synchronize():
        if cuda:
            torch.cuda.synchronize()

    rng = np.random.default_rng(0)
    batches = [_episode(config, rng) for _ in range(2)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step = _step(impl, config)
        built = _rss_mb()
        # Warm-up: builds optimizer state and caches (and, after two eager
        # steps, records the CUDA graph).
        warmup = config.get("warmup_steps", 3) if impl == "metakeras-graph" else 1
        for _ in range(warmup):
            step(batches[0])
        synchronize()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        before = _rss_mb()
        start = time.perf_counter()
        steps = 0
        while (
            steps < config["min_steps"]
            or time.perf_counter() - start < config["seconds"]
        ):
            step(batches[steps % 2])
            steps += 1
            if steps >= config["max_steps"]:
                break
        synchronize()
        elapsed = time.perf_counter() - start
    result = {
        "tasks_per_s": steps * config["meta_batch"] / elapsed,
        "steps": steps,
        "seconds": elapsed,
        "peak_rss_mb": _rss_mb(),
        "rss_before_mb": before,
        "rss_built_mb": built,
    }
    if cuda:
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    notes = [str(w.message) for w in caught if "jit_compile" in str(w.message)]
    if notes:
        result["note"] = notes[0][:300]
    return result


def main():
    """`IMPL CONFIG_JSON`: one JSON line per configuration (a list runs several)."""
    impl, configs = sys.argv[1], json.loads(sys.argv[2])
    configs = configs if isinstance(configs, list) else [configs]
    device = configs[0].get("device", "cpu")
    # Keras reads its backend and device once, on import.
    os.environ.setdefault("KERAS_BACKEND", "torch")
    os.environ["KERAS_TORCH_DEVICE"] = device
    import torch

    torch.set_num_threads(configs[0].get("threads", torch.get_num_threads()))
    for config in configs:
        config.setdefault("device", device)
        print(json.dumps(_measure(impl, config)), flush=True)


if __name__ == "__main__":
    main()
