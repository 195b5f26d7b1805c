"""`compile(jit_compile=True)`: the whole meta-training step as one CUDA graph.

At few-shot sizes a GPU meta-step is bound by kernel launches and Python,
not arithmetic. Episodes of one task source all have the same shapes, so
the step (inner loop with its second-order gradients, outer backward,
optimizer update, metrics) can be recorded once as a CUDA graph and replayed
for every later meta-batch: one launch instead of thousands of kernels and
their Python. `torch.compile` cannot differentiate twice, so this is what
`jit_compile=True` means for a `MetaModel`.

How a step runs (`GraphedTrainStep.__call__`):

1. The meta-batch is checked and moved to the device as in eager mode.
2. The first steps of a shape run eagerly (they warm up cuDNN and the
   caching allocator); the last of them is watched by `_CaptureChecker`,
   which lists everything a graph cannot replay: values read back to the host
   (`.item()`, `bool()`), copies from host memory, work left on the CPU,
   operators whose output shape depends on data. If anything is found, the
   model warns once, naming the operator and the line, and stays eager.
3. Otherwise the step is captured, then replayed for this and every later
   meta-batch of that shape, after copying it into the graph's input buffers.

Every step, eager or replayed, computes the same thing: the update is
applied, then taken back on the device (`torch.where`) if the meta-gradient
or the new state is not finite, so `on_nonfinite="raise"` and `"skip"` keep
their meaning without a host synchronisation inside the step; `"raise"`
reads one flag after the step (as eager mode does). Python scalars that Keras
turns into tensors inside the step become device constants
(`torch.full`), since a graph cannot copy from host memory.
"""

import traceback
import warnings

import numpy as np
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from metakeras import distributed

# Steps run eagerly for each new episode shape before it is captured.
WARMUP_STEPS = 2
# Graphs kept at once (one per episode shape; the oldest is dropped).
MAX_GRAPHS = 4

_DYNAMIC_SHAPE_OPS = {
    "nonzero",
    "masked_select",
    "unique",
    "_unique",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "repeat_interleave",
}


class GraphedTrainStep:
    """Runs a `MetaModel`'s training steps as CUDA graphs where it can.

    Args:
        model: the compiled `MetaModel`.
    """

    def __init__(self, model):
        self.model = model
        self.reason = None
        self._graphs = {}
        self._warmups = {}
        self._pool = None
        self._warned = False

    # ------------------------------------------------------------- public

    def __call__(self, data):
        model = self.model
        tensors = model._episode_tensors(data)
        reason = self._static_reason(tensors[0].device)
        if reason is not None:
            self._fall_back(reason)
            return model.train_step(tensors)
        key = self._key(tensors)
        entry = self._graphs.get(key)
        if entry is None:
            done = self._warmups.get(key, 0)
            if done < WARMUP_STEPS - 1:
                self._warmups[key] = done + 1
                return self._eager(tensors)
            logs, problems = self._checked_warmup(tensors)
            if problems:
                self._fall_back(problems[0])
            else:
                # Recording runs nothing: this step is the warm-up's.
                self._capture(tensors, key)
            return logs
        for static, value in zip(entry["inputs"], tensors):
            static.copy_(value)
        entry["graph"].replay()
        self._after_step(entry["ok"], entry["gradients"])
        # The graph's outputs are overwritten by the next replay.
        return {name: value.clone() for name, value in entry["logs"].items()}

    @property
    def captured(self):
        """How many episode shapes are currently replayed as graphs."""
        return len(self._graphs)

    # ----------------------------------------------------------- stepping

    def _body(self, tensors):
        """One training step, free of host synchronisation.

        Returns:
            `(logs, ok, gradients)`: the metric results after the step,
            whether the update was finite (a 0-d bool tensor), and the
            meta-gradients (for the error message).
        """
        model = self.model
        guard = model.on_nonfinite != "ignore"
        watched = self._watched_variables() if guard else []
        backup = _copies([v.value for v in watched])
        model._graph_checks = []
        model._graph_episode = tensors
        try:
            model.train_step(tensors)
        finally:
            model._graph_episode = None
            checks, model._graph_checks = model._graph_checks, None
        gradients, ok = checks[-1] if checks else ([], None)
        if ok is None:
            ok = torch.ones((), dtype=torch.bool, device=tensors[0].device)
        if guard:
            with torch.no_grad():
                for variable, saved in zip(watched, backup):
                    value = variable.value
                    torch.where(ok, value, saved, out=value)
                if model.on_nonfinite == "skip":
                    model._skipped_tracker.update_state(
                        torch.logical_not(ok).to(torch.float32)
                    )
        return model.get_metrics_result(), ok, gradients

    def _eager(self, tensors):
        logs, ok, gradients = self._body(tensors)
        self._after_step(ok, gradients)
        return logs

    def _after_step(self, ok, gradients):
        model = self.model
        if model.on_nonfinite == "raise" and not bool(ok):
            raise FloatingPointError(
                model._nonfinite_message(gradients, model.trainable_variables)
            )

    def _watched_variables(self):
        """What a non-finite update must leave as it was (not the skip count)."""
        model = self.model
        tracker = getattr(model, "_skipped_tracker", None)
        skipped = {id(v) for v in tracker.variables} if tracker is not None else set()
        seen, watched = set(), []
        for variable in (
            list(model.weights)
            + list(model.metrics_variables)
            + list(model.optimizer.variables)
        ):
            if id(variable) in seen or id(variable) in skipped:
                continue
            seen.add(id(variable))
            if variable.value.is_floating_point() or variable.value.dtype in (
                torch.int32,
                torch.int64,
            ):
                watched.append(variable)
        return watched

    # ----------------------------------------------------------- capture

    def _checked_warmup(self, tensors):
        """The last eager warm-up step, watched for what a graph cannot do."""
        stream = torch.cuda.Stream(tensors[0].device)
        stream.wait_stream(torch.cuda.current_stream(tensors[0].device))
        checker = _CaptureChecker(tensors[0].device)
        with torch.cuda.stream(stream), _DeviceScalars(), checker:
            logs, ok, gradients = self._body(tensors)
        torch.cuda.current_stream(tensors[0].device).wait_stream(stream)
        self._after_step(ok, gradients)
        return logs, checker.problems

    def _capture(self, tensors, key):
        device = tensors[0].device
        inputs = [t.clone() for t in tensors]
        graph = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        torch.cuda.synchronize(device)
        try:
            with torch.cuda.graph(graph, pool=self._pool), _DeviceScalars():
                logs, ok, gradients = self._body(inputs)
        except Exception as error:  # noqa: BLE001 - reported, then eager
            self._fall_back(f"recording failed: {type(error).__name__}: {error}")
            return
        if len(self._graphs) >= MAX_GRAPHS:
            self._graphs.pop(next(iter(self._graphs)))
        self._graphs[key] = {
            "graph": graph,
            "inputs": inputs,
            "logs": logs,
            "ok": ok,
            "gradients": gradients,
        }

    def _key(self, tensors):
        model = self.model
        return (
            tuple((tuple(t.shape), t.dtype) for t in tensors),
            model._graph_signature(),
            id(model.optimizer),
            tuple(id(v.value) for v in model.trainable_variables),
        )

    # ------------------------------------------------------------ reasons

    def _static_reason(self, device):
        model = self.model
        if device.type != "cuda":
            return f"there is no CUDA device (the episodes are on {device})"
        if distributed.is_distributed():
            return "meta-training runs in several processes (metakeras.distributed)"
        if type(model.optimizer).__name__ == "LossScaleOptimizer":
            return "a LossScaleOptimizer decides on the host whether to apply a step"
        constrained = [v.path for v in model.trainable_variables if v.constraint]
        if constrained:
            return (
                f"the weights {constrained[:3]} have constraints (pruning masks, "
                "quantization grids), which callbacks may replace between steps"
            )
        return None

    def _fall_back(self, reason):
        self.reason = reason
        self._graphs.clear()
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"`jit_compile=True`: {type(self.model).__name__} trains eagerly "
                f"because {reason}.",
                stacklevel=3,
            )


def _copies(tensors):
    """Copies of `tensors`, made by one multi-tensor kernel per dtype."""
    copies = [torch.empty_like(t) for t in tensors]
    groups = {}
    for copy, tensor in zip(copies, tensors):
        targets, sources = groups.setdefault(tensor.dtype, ([], []))
        targets.append(copy)
        sources.append(tensor.detach())
    with torch.no_grad():
        for targets, sources in groups.values():
            torch._foreach_copy_(targets, sources)
    return copies


class _DeviceScalars(TorchFunctionMode):
    """Creates tensors of Python scalars on the device without a host copy.

    `torch.as_tensor(0.9, device="cuda")` copies one value from host memory,
    which a CUDA graph cannot replay; `torch.full((), 0.9, device="cuda")`
    writes it with a kernel instead. The value is the same every step.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.as_tensor, torch.tensor) and args:
            value = args[0]
            if isinstance(value, np.generic):
                value = value.item()
            device = kwargs.get("device")
            if (
                isinstance(value, (bool, int, float))
                and device is not None
                and torch.device(device).type != "cpu"
            ):
                dtype = kwargs.get("dtype") or _scalar_dtype(value)
                return torch.full((), value, dtype=dtype, device=device)
        return func(*args, **kwargs)


def _scalar_dtype(value):
    """The dtype `torch.tensor(value)` gives a Python scalar."""
    if isinstance(value, bool):
        return torch.bool
    if isinstance(value, int):
        return torch.int64
    return torch.get_default_dtype()


class _CaptureChecker(TorchDispatchMode):
    """Lists the operators of a step that a CUDA graph cannot replay."""

    def __init__(self, device):
        super().__init__()
        self.device = torch.device(device)
        self.problems = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if len(self.problems) < 3:
            problem = self._problem(func, args, out)
            if problem is not None:
                self.problems.append(f"{problem} ({_caller()})")
        return out

    def _problem(self, func, args, out):
        name = func.__name__.split(".")[0]
        if name == "_local_scalar_dense":
            return "a tensor's value is read on the host (`.item()`, `bool()`)"
        if name in _DYNAMIC_SHAPE_OPS or (
            name == "index"
            and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool
                for i in (args[1] if len(args) > 1 else ())
                if i is not None
            )
        ):
            return f"`{name}` returns a shape that depends on the data"
        if name == "lift_fresh" and _devices(out) - {"cpu"}:
            return "data is copied from host memory"
        if name == "_to_copy" and len(_devices((args[0], out))) > 1:
            return "a tensor is copied between devices"
        if name == "copy_" and len(_devices(args[:2])) > 1:
            return "a tensor is copied between devices"
        if self.device.type != "cpu" and "cpu" in _devices(out):
            return f"`{name}` computes on the CPU"
        return None


def _devices(values):
    flat = values if isinstance(values, (list, tuple)) else [values]
    return {v.device.type for v in flat if isinstance(v, torch.Tensor)}


def _caller():
    """The innermost line of the step outside PyTorch and this module."""
    for frame in reversed(traceback.extract_stack()[:-3]):
        path = frame.filename.replace("\\", "/")
        if any(part in path for part in ("/torch/", "/keras/", "/_cuda_graph.py")):
            continue
        return f"{path.rsplit('/', 1)[-1]}:{frame.lineno} in {frame.name}"
    return "unknown location"
