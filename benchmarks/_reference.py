"""The plain-PyTorch meta-training steps metakeras is measured against.

What a PyTorch user would write by hand for the same network and math:
`torch.func.functional_call` over an `nn.Module` (conv4 with the same
BatchNormalization settings as Keras's, or the sinusoid MLP), Adam on the
meta-gradient, and either a loop over the tasks of a meta-batch (one backward
pass per task, gradients accumulated in `.grad`) or all tasks at once under
`torch.func.vmap` (the functorch MAML recipe: `torch.func.grad` for the inner
steps, BatchNormalization without running statistics, as
`torch.func.replace_all_batch_norm_modules_` makes it).

Imported by `_throughput_worker.py` and `operators.py`; only PyTorch and
NumPy are needed, so the learn2learn environment can import it too.
"""

import numpy as np
import torch
from torch import nn
from torch.func import functional_call


def modules(config):
    """`(network, loss function)` for a benchmark configuration."""
    torch.manual_seed(0)
    if config["learner"] == "mlp":
        net = nn.Sequential(
            nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1)
        )
        return net, nn.functional.mse_loss
    filters = config.get("filters", 64)
    blocks = []
    channels = config.get("channels", 1)
    for _ in range(4):
        blocks += [
            nn.Conv2d(channels, filters, 3, padding=1),
            nn.BatchNorm2d(filters, momentum=0.01, eps=1e-3),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        channels = filters
    size = config["image_size"]
    for _ in range(4):
        size //= 2
    blocks.append(nn.Flatten())
    if config["algorithm"] != "protonet":
        blocks.append(nn.Linear(filters * size * size, config["ways"]))
    return nn.Sequential(*blocks), nn.functional.cross_entropy


def prototype_logits(support, support_y, query, ways):
    """Negative squared Euclidean distances to the class means."""
    onehot = nn.functional.one_hot(support_y, ways).to(support.dtype)
    prototypes = onehot.T @ support / onehot.sum(0)[:, None]
    return -(torch.cdist(query, prototypes) ** 2)


def step_function(config, device="cpu", vectorize=False):
    """A function `step(batch)` doing one meta-training step on NumPy arrays.

    Args:
        config: the benchmark configuration (`throughput.py`'s `BASE`).
        device: where the network and the data live. Defaults to `"cpu"`.
        vectorize: all tasks at once under `torch.func.vmap` instead of a
            loop over tasks. Defaults to `False`.
    """
    net, loss_fn = modules(config)
    if vectorize:
        torch.func.replace_all_batch_norm_modules_(net)
    net = net.to(device).train()
    params = dict(net.named_parameters())
    buffers = dict(net.named_buffers())
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    lr, first_order, steps = config["inner_lr"], config["first_order"], config["steps"]
    protonet = config["algorithm"] == "protonet"

    def task_loss(fast, sx, sy, qx, qy, inner_grad):
        if protonet:
            support = functional_call(net, (fast, buffers), (sx,))
            query = functional_call(net, (fast, buffers), (qx,))
            logits = prototype_logits(support, sy, query, config["ways"])
            return loss_fn(logits, qy)
        for _ in range(steps):
            grads = inner_grad(fast, sx, sy)
            if first_order:
                grads = {n: g.detach() for n, g in grads.items()}
            fast = {n: w - lr * grads[n] for n, w in fast.items()}
        return loss_fn(functional_call(net, (fast, buffers), (qx,)), qy)

    def autograd_grad(fast, sx, sy):
        inner = loss_fn(functional_call(net, (fast, buffers), (sx,)), sy)
        grads = torch.autograd.grad(
            inner, list(fast.values()), create_graph=not first_order
        )
        return dict(zip(fast, grads))

    def functional_grad(fast, sx, sy):
        return torch.func.grad(
            lambda p: loss_fn(functional_call(net, (p, buffers), (sx,)), sy)
        )(fast)

    def step(batch):
        sx, sy, qx, qy = (torch.from_numpy(np.asarray(a)).to(device) for a in batch)
        optimizer.zero_grad()
        if vectorize:
            losses = torch.func.vmap(
                lambda *task: task_loss(params, *task, functional_grad),
                randomness="different",
            )(sx, sy, qx, qy)
            losses.mean().backward()
        else:
            for t in range(sx.shape[0]):
                loss = task_loss(params, sx[t], sy[t], qx[t], qy[t], autograd_grad)
                (loss / sx.shape[0]).backward()
        optimizer.step()

    return step
