"""The plain-PyTorch meta-training steps metakeras is measured against.

What a PyTorch user would write by hand for the same network and math:
`torch.func.functional_call` over an `nn.Module` (conv4 with the same
BatchNormalization settings as Keras's, or the sinusoid MLP), Adam on the
meta-gradient, and either a loop over the tasks of a meta-batch (one backward
pass per task, gradients accumulated in `.grad`) or all tasks at once under
`torch.func.vmap` (the functorch MAML recipe: `torch.func.grad` for the inner
steps, BatchNormalization without running statistics, as
`torch.func.replace_all_batch_norm_modules_` makes it). The pretrained
baselines (Baseline, Baseline++, SimpleShot) train as ordinary classifiers:
their step is a supervised batch through conv4 and a linear or cosine head
over all base classes (`pretraining_step_function`). The metric learners
(ProtoNet, Matching Networks, Relation Networks, R2D2) embed support and
query sets with conv4 and score the queries with their head, written as a
PyTorch user would (`prototype_logits`, `matching_logits`, `RelationHead`,
`RidgeHead`); the Relation Network's MLP and R2D2's penalty, scale and bias
are parameters trained with the embedding (`metric_head`).

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
    blocks.append(nn.Flatten())
    width = embedding_width(config)
    if config["algorithm"] in PRETRAINED:
        classes = config["classes"]
        if config["algorithm"] == "baselinepp":
            blocks.append(CosineHead(width, classes, scale=10.0))
        else:
            blocks.append(nn.Linear(width, classes))
    elif config["algorithm"] not in METRIC:
        blocks.append(nn.Linear(width, config["ways"]))
    return nn.Sequential(*blocks), nn.functional.cross_entropy


# The algorithms whose training step is a supervised batch of base classes.
PRETRAINED = ("baseline", "baselinepp", "simpleshot")
# The metric learners: conv4 embeds, a head without inner loop scores.
METRIC = ("protonet", "matchingnet", "relationnet", "r2d2")


class CosineHead(nn.Module):
    """Baseline++'s head: the scaled cosine similarity to one vector per class."""

    def __init__(self, width, classes, scale):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(classes, width))
        nn.init.xavier_uniform_(self.weight)
        self.scale = scale

    def forward(self, x):
        x = nn.functional.normalize(x, dim=1, eps=1e-8)
        return self.scale * x @ nn.functional.normalize(self.weight, dim=1).T


def pretraining_step_function(config, device="cpu"):
    """A function `step((x, y))`: one supervised step on a batch of base classes.

    What Baseline, Baseline++ and SimpleShot train on: conv4 with a head over
    every base class, the cross-entropy, Adam; for SimpleShot also the
    running mean of the embeddings (the centre of its CL2N features).
    """
    net, loss_fn = modules(config)
    net = net.to(device).train()
    body, head = net[:-1], net[-1]
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    mean = torch.zeros(head.weight.shape[1], device=device)
    seen = [0]

    def step(batch):
        x, y = (torch.from_numpy(np.asarray(a)).to(device) for a in batch)
        optimizer.zero_grad()
        embeddings = body(x)
        loss_fn(head(embeddings), y).backward()
        optimizer.step()
        if config["algorithm"] == "simpleshot":
            seen[0] += 1
            weight = max(1 / seen[0], 0.01)
            mean.add_(weight * (embeddings.detach().mean(0) - mean))

    return step


def class_means(support, support_y, ways):
    """The mean support embedding of each class, `(ways, d)`."""
    onehot = nn.functional.one_hot(support_y, ways).to(support.dtype)
    return onehot.T @ support / onehot.sum(0)[:, None]


def prototype_logits(support, support_y, query, ways):
    """Negative squared Euclidean distances to the class means."""
    return -(torch.cdist(query, class_means(support, support_y, ways)) ** 2)


def matching_logits(support, support_y, query, ways, scale=10.0):
    """Matching Networks: log of the attention on each class's support examples.

    The attention is the softmax over the support examples of their scaled
    cosine similarities to the query; a class's probability is the sum of
    the attention on its examples. Returns log-probabilities (metakeras's
    `matching_logits` returns them up to a constant per query, the same
    softmax and cross-entropy).
    """
    q = nn.functional.normalize(query, dim=-1, eps=1e-8)
    s = nn.functional.normalize(support, dim=-1, eps=1e-8)
    attention = torch.softmax(scale * q @ s.T, dim=-1)
    onehot = nn.functional.one_hot(support_y, ways).to(support.dtype)
    return torch.log(attention @ onehot)


class RelationHead(nn.Module):
    """Relation Networks' module: an MLP scoring (query, class mean) pairs.

    `[q, p, |q - p|, q * p] -> Linear(4d, units) -> ReLU -> Linear(units, 1)`,
    metakeras's default `relation_module()` (256 hidden units; PyTorch's
    initialisation, Keras's shapes).
    """

    def __init__(self, width, units=256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(4 * width, units), nn.ReLU(), nn.Linear(units, 1)
        )

    def forward(self, support, support_y, query, ways):
        prototypes = class_means(support, support_y, ways)
        m = query.shape[0]
        q = query[:, None, :].expand(m, ways, -1)
        p = prototypes[None, :, :].expand(m, ways, -1)
        pairs = torch.cat([q, p, (q - p).abs(), q * p], dim=-1)
        return self.mlp(pairs).squeeze(-1)


class RidgeHead(nn.Module):
    """R2D2's head: ridge regression of the support labels, solved in closed form.

    `W = X^T (X X^T + regularizer * I)^-1 Y` (Woodbury: an n x n system in
    the support size), logits `scale * Q W + bias`; the penalty (through its
    logarithm), the scale and the bias are learned, starting at metakeras's
    defaults (1, 10, 0).
    """

    def __init__(self, regularizer=1.0, scale=10.0):
        super().__init__()
        self.log_regularizer = nn.Parameter(torch.tensor(float(np.log(regularizer))))
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self.bias = nn.Parameter(torch.tensor(0.0))

    def forward(self, support, support_y, query, ways):
        targets = nn.functional.one_hot(support_y, ways).to(support.dtype)
        eye = torch.eye(support.shape[0], dtype=support.dtype, device=support.device)
        gram = support @ support.T + self.log_regularizer.exp() * eye
        weights = support.T @ torch.linalg.solve(gram, targets)
        return self.scale * query @ weights + self.bias


def metric_head(config, width):
    """`(module or None, logits(support, support_y, query, ways))` of a metric learner."""
    algorithm = config["algorithm"]
    if algorithm == "relationnet":
        head = RelationHead(width)
        return head, head
    if algorithm == "r2d2":
        head = RidgeHead()
        return head, head
    if algorithm == "matchingnet":
        return None, matching_logits
    return None, prototype_logits


def embedding_width(config):
    """The size of conv4's flattened embedding."""
    size = config["image_size"]
    for _ in range(4):
        size //= 2
    return config.get("filters", 64) * size * size


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
    trained = list(net.parameters())
    metric = config["algorithm"] in METRIC
    if metric:
        head, head_logits = metric_head(config, embedding_width(config))
        if head is not None:
            # Shared by all tasks (not batched under vmap), trained with the
            # embedding.
            head = head.to(device).train()
            trained += list(head.parameters())
    optimizer = torch.optim.Adam(trained, 1e-3)
    lr, first_order, steps = config["inner_lr"], config["first_order"], config["steps"]

    def task_loss(fast, sx, sy, qx, qy, inner_grad):
        if metric:
            support = functional_call(net, (fast, buffers), (sx,))
            query = functional_call(net, (fast, buffers), (qx,))
            logits = head_logits(support, sy, query, config["ways"])
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

    step.parameters = trained  # what Adam trains (for the tests)
    return step
