"""One throughput measurement in a fresh process (so peak memory is its own).

Run by benchmarks/throughput.py as
`python _throughput_worker.py IMPL CONFIG_JSON`; prints one JSON line.
IMPL is `metakeras`, `metakeras-vmap`, `torch` (a plain PyTorch reference
written here: `torch.func.functional_call` over an `nn.Module`, the same
network and the same math) or `learn2learn`. Only the chosen library is
imported, so the learn2learn run can use its own virtual environment.
"""

import json
import resource
import sys
import time

import numpy as np


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
    size = config["image_size"]
    sx = rng.random((t, n * k, 1, size, size), dtype="float32")
    qx = rng.random((t, n * q, 1, size, size), dtype="float32")
    sy = np.tile(np.repeat(np.arange(n), k), (t, 1))
    qy = np.tile(np.repeat(np.arange(n), q), (t, 1))
    return sx, sy, qx, qy


def _metakeras_step(config, vectorize):
    import keras

    import metakeras

    keras.utils.set_random_seed(0)
    if config["learner"] == "mlp":
        from metakeras.demo import sinusoid_learner

        learner, loss = sinusoid_learner(), "mse"
    else:
        size = config["image_size"]
        outputs = None if config["algorithm"] == "protonet" else config["ways"]
        learner = metakeras.models.conv4(input_shape=(1, size, size), outputs=outputs)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if config["algorithm"] == "protonet":
        model = metakeras.ProtoNet(learner, vectorize_tasks=vectorize)
    else:
        model = metakeras.MAML(
            learner,
            inner_steps=config["steps"],
            inner_learning_rate=config["inner_lr"],
            first_order=config["first_order"],
            vectorize_tasks=vectorize,
        )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)

    def step(batch):
        sx, sy, qx, qy = batch
        model.train_on_batch(
            {"support_x": sx, "support_y": sy, "query_x": qx, "query_y": qy}
        )

    return step


def _torch_modules(config):
    import torch
    from torch import nn

    torch.manual_seed(0)
    if config["learner"] == "mlp":
        net = nn.Sequential(
            nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1)
        )
        return net, nn.functional.mse_loss
    blocks = []
    channels = 1
    for _ in range(4):
        blocks += [
            nn.Conv2d(channels, 64, 3, padding=1),
            nn.BatchNorm2d(64, momentum=0.01, eps=1e-3),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        channels = 64
    size = config["image_size"]
    for _ in range(4):
        size //= 2
    blocks.append(nn.Flatten())
    if config["algorithm"] != "protonet":
        blocks.append(nn.Linear(64 * size * size, config["ways"]))
    return nn.Sequential(*blocks), nn.functional.cross_entropy


def _prototype_logits(support, support_y, query, ways):
    import torch

    onehot = torch.nn.functional.one_hot(support_y, ways).float()
    prototypes = onehot.T @ support / onehot.sum(0)[:, None]
    return -(torch.cdist(query, prototypes) ** 2)


def _torch_step(config):
    import torch
    from torch.func import functional_call

    net, loss_fn = _torch_modules(config)
    net.train()
    params = dict(net.named_parameters())
    buffers = dict(net.named_buffers())
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    lr, first_order = config["inner_lr"], config["first_order"]

    def step(batch):
        sx, sy, qx, qy = (torch.from_numpy(np.asarray(a)) for a in batch)
        optimizer.zero_grad()
        total = 0.0
        for t in range(sx.shape[0]):
            if config["algorithm"] == "protonet":
                support = functional_call(net, (params, buffers), (sx[t],))
                query = functional_call(net, (params, buffers), (qx[t],))
                logits = _prototype_logits(support, sy[t], query, config["ways"])
                loss = loss_fn(logits, qy[t])
            else:
                fast = params
                for _ in range(config["steps"]):
                    inner = loss_fn(
                        functional_call(net, (fast, buffers), (sx[t],)), sy[t]
                    )
                    grads = torch.autograd.grad(
                        inner, list(fast.values()), create_graph=not first_order
                    )
                    fast = {n: w - lr * g for (n, w), g in zip(fast.items(), grads)}
                loss = loss_fn(functional_call(net, (fast, buffers), (qx[t],)), qy[t])
            (loss / sx.shape[0]).backward()
            total += float(loss)
        optimizer.step()

    return step


def _learn2learn_step(config):
    import learn2learn as l2l
    import torch

    net, loss_fn = _torch_modules(config)
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
                logits = _prototype_logits(support, sy[t], query, config["ways"])
                loss = loss_fn(logits, qy[t])
            else:
                learner = maml.clone()
                for _ in range(config["steps"]):
                    learner.adapt(loss_fn(learner(sx[t]), sy[t]))
                loss = loss_fn(learner(qx[t]), qy[t])
            (loss / sx.shape[0]).backward()
        optimizer.step()

    return step


def main():
    impl, config = sys.argv[1], json.loads(sys.argv[2])
    import torch

    torch.set_num_threads(config.get("threads", torch.get_num_threads()))
    rng = np.random.default_rng(0)
    batches = [_episode(config, rng) for _ in range(2)]
    if impl == "metakeras":
        step = _metakeras_step(config, vectorize=False)
    elif impl == "metakeras-vmap":
        step = _metakeras_step(config, vectorize=True)
    elif impl == "torch":
        step = _torch_step(config)
    elif impl == "learn2learn":
        step = _learn2learn_step(config)
    else:
        raise SystemExit(f"unknown implementation {impl!r}")
    built = _rss_mb()
    step(batches[0])  # warm-up: builds optimizer state and caches
    before = _rss_mb()
    start = time.perf_counter()
    steps = 0
    while (
        steps < config["min_steps"] or time.perf_counter() - start < config["seconds"]
    ):
        step(batches[steps % 2])
        steps += 1
        if steps >= config["max_steps"]:
            break
    elapsed = time.perf_counter() - start
    print(
        json.dumps(
            {
                "tasks_per_s": steps * config["meta_batch"] / elapsed,
                "steps": steps,
                "seconds": elapsed,
                "peak_rss_mb": _rss_mb(),
                "rss_before_mb": before,
                "rss_built_mb": built,
            }
        )
    )


if __name__ == "__main__":
    main()
