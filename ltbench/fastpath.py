"""The fast path: static shapes and whole-step graphs (an execution option, never part of a run).

``ExecOptions(fast="static" | "graph")`` (``python -m ltbench execute --fast``) attaches a
:class:`FastPath` to the trainer (:func:`attach`); the engine then runs each epoch's steps through
it (:attr:`ltbench.engine.Trainer.step_runner`). Without it nothing here runs, and the default
path is the eager loop of :meth:`~ltbench.engine.Trainer.train_epoch`, bit for bit.

**Static shapes** (both modes). Every step has the shape of a full batch ``B``:

* The last partial batch of an epoch (``n < B`` samples) is augmented exactly as the eager loop
  augments it (same generator draws), then padded to ``B`` with copies of its own samples
  (cyclically) and a 0/1 sample mask. Every image is still seen once per epoch.
* The loss takes the mask (:meth:`ltbench.losses.LossBase.forward`): the loss, its gradient and
  a stateful loss's statistics are those of the ``n`` real samples alone (every normaliser counts
  only them: the mean over ``n``, PyTorch's weighted mean ``sum w[y_i] CE_i / sum w[y_i]`` over
  the real samples, the sigmoid family's ``1 / n``). OHEM ranks only real samples; FSA's mixed
  maps of padded samples get weight 0.
* **BatchNorm sees only the real samples.** Every BatchNorm layer of the model in training mode
  computes its batch mean and variance over the masked-in samples and updates its running
  statistics from them (unbiased variance over ``n x H x W`` values, as
  :class:`torch.nn.BatchNorm2d` with ``n`` samples): :func:`masked_batch_norm`. The padded
  samples are normalised with those statistics but reach nothing else, so their gradient is
  exactly zero. A padded step therefore equals the unpadded eager step within float tolerance,
  BatchNorm included. Full batches use the same code with an all-ones mask. In evaluation mode
  BatchNorm layers run PyTorch's own kernel.
* A loss without a mask (a user loss whose ``compute`` has no ``mask`` keyword) is not padded:
  its last batch keeps its shape (a second static graph in ``graph`` mode).

**Whole-step graphs** (``graph``): forward, loss, backward and the SGD update are one function
traced by ``torch.compile(fullgraph=True)`` (``mode="reduce-overhead"`` on CUDA, i.e. CUDA
graphs; inductor's default mode elsewhere). What changes between steps or epochs lives in
static tensors updated in place: the learning rate (one 0-d tensor per parameter group, set
before each epoch), the SGD momentum buffers, the sample mask, the DRW class weights (copied into
one tensor per run: a run has two graphs, before and after DRW switches them on), the
trainer's own state tensors (BBN's alpha, OHEM's per-class counters) and the stateful losses'
statistics (updated in the traced backward). The batch's random augmentation (crop offsets and
flips, mixup's pairing and lambda, FSA's mixing draws) is drawn outside the graph, exactly as the
eager loop draws it, and passed in.

**One step per method.** The fast path runs the trainer's own step
(:class:`~ltbench.engine.Trainer`: ``step_inputs`` eagerly, ``step_loss`` traced), so the eager
and the fast path share every line of a method's step. ``step_inputs``' tensors are padded by
their declared kinds (:attr:`~ltbench.engine.Trainer.step_input_kinds`, :func:`pad_inputs`) and
``step_loss`` gets the sample mask.

SGD is applied by :class:`StaticSGD`, the arithmetic of :class:`torch.optim.SGD` (weight decay,
momentum, dampening 0, Nesterov) with a tensor learning rate, on the optimiser's own momentum
buffers (so checkpoints and resume are unchanged). Its first step uses a zero momentum buffer,
which gives exactly PyTorch's first step (``0 * m + g = g``).

Trainers: :class:`~ltbench.engine.Trainer` (every loss, sampler, DRW, DRS, cosine head),
:class:`~ltbench.two_stage.ClassifierTrainer` (cRT, LWS, the stage-2 grid),
:class:`~ltbench.bbn.BBNTrainer`, :class:`~ltbench.ohem.OHEMTrainer` (both forms),
:class:`~ltbench.mixup.MixupTrainer`, :class:`~ltbench.fsa.FSATrainer` (phase II) and any subclass
that overrides ``step_inputs`` / ``step_loss``. :func:`unsupported_reason` names why any other
trainer stays eager (a trainer with its own ``training_step`` or ``train_epoch``, DDP, an
optimiser other than SGD); :func:`attach` then warns and returns None.

**Packed runs** (:func:`ltbench.runs.run_pack`, ``execute --pack K``): K ``joint`` runs of one recipe (same
data, model, epochs, batch size, lr schedule, momentum and weight decay; any loss, sampler,
seed, DRW/DRS or head: :data:`PACK_VARYING`) train as one network, :class:`PackedCifarResNet`:
every convolution with K x the channels and ``groups=K``, every BatchNorm with K x the channels,
so weights, gradients and BatchNorm statistics stay per run; each run draws its batches from its
own sampler and augmentation generator and keeps its own head, loss (DRW weights, stateful
statistics) and momentum; the step (:meth:`PackedRuns.step_loss`) minimises the sum of the K
losses (disjoint parameters: each run's gradient is its own loss's). Each run keeps its own checkpoint, evaluation, history and
``metrics.json`` (:func:`fit_pack` drives the runs' :meth:`~ltbench.engine.Trainer.fit_epochs`
in lockstep); ``execution.pack`` records the pack. ``tests/test_packing.py`` shows a pack of CE,
CB-focal and LDAM-DRW equal to the three runs trained alone. Runs whose epochs differ in length
(another imbalance ratio, ``class_aware``'s epoch) are not packed together.

Not here: evaluation through a static graph (evaluation runs eagerly, once per ``eval_every``
epochs), hand-captured CUDA graphs (``mode="reduce-overhead"`` does the capture) and
``ExecOptions.compile`` (model-only compilation; the fast path compiles the whole step itself and
ignores it). On a 2-core CPU the whole-step graph is slower than the eager step (the CPU is
compute-bound, and the masked BatchNorm costs about 15% there); it exists for GPUs, where the
eager step is bound by kernel launches.

Equivalence with the eager path is tested on CPU (``tests/test_fastpath.py``).
"""
from __future__ import annotations

import functools
import itertools
import types
import warnings
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .bbn import BBNTrainer
from .engine import DeadlineReached, Trainer
from .losses import supports_mask
from .models import MODELS, CifarResNet
from .models.resnet_cifar import BasicBlock, LambdaShortcut

__all__ = ["MODES", "check_mode", "BatchMasks", "masked_batch_norm", "install_masked_bn", "remove_masked_bn",
           "pad_batch", "pad_inputs", "INPUT_KINDS", "StaticSGD", "FastPath", "attach", "detach", "unsupported_reason", "default_compile_mode",
           "PACK_VARYING", "pack_key", "PackedCifarResNet", "PackedRuns", "fit_pack"]

#: ``static``: padded static shapes, eager step; ``graph``: the same step compiled whole.
MODES = ("static", "graph")


def check_mode(mode: Any) -> Optional[str]:
    """``None``/``False`` (off), ``"static"``, ``"graph"`` (``True`` means ``"graph"``)."""
    if mode is None or mode is False:
        return None
    if mode is True:
        return "graph"
    if mode not in MODES:
        raise ValueError(f"invalid fast={mode!r}: must be False, True, 'static' or 'graph'")
    return mode


def default_compile_mode(device: torch.device) -> Optional[str]:
    """``"reduce-overhead"`` (CUDA graphs) on CUDA, inductor's default elsewhere."""
    return "reduce-overhead" if device.type == "cuda" else None


# --------------------------------------------------------------------------------------------
# Masked BatchNorm


class BatchMasks:
    """The sample masks the masked BatchNorm layers of one model use, by batch size (shapes are
    static, so the size picks the mask while tracing)."""

    def __init__(self) -> None:
        self.by_size: Dict[int, Tensor] = {}

    def get(self, n: int) -> Optional[Tensor]:
        return self.by_size.get(n)


def masked_batch_norm(bn: _BatchNorm, x: Tensor, mask: Tensor, track: bool = True) -> Tensor:
    """Training-mode BatchNorm of ``x [N, C, ...]`` over the samples with ``mask [N] == 1``.

    Mean and biased variance over the masked-in samples (normalisation), running statistics
    updated with their unbiased variance when ``bn`` tracks them and ``track`` is set, exactly as
    ``bn`` would on the masked-in samples alone (within float rounding). Computed in float32
    under autocast; returns ``x``'s dtype.
    """
    shape = (1, -1) + (1,) * (x.dim() - 2)
    dims = [0] + list(range(2, x.dim()))
    xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
    w = mask.to(xf.dtype).view((-1,) + (1,) * (x.dim() - 1))
    per_sample = x[0, 0].numel()  # H * W (1 for [N, C])
    count = mask.to(xf.dtype).sum() * per_sample
    mean = (xf * w).sum(dims) / count
    centred = xf - mean.view(shape)
    var = (centred * centred * w).sum(dims) / count
    if track and bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            mom = bn.momentum if bn.momentum is not None else 1.0 / bn.num_batches_tracked
            bn.running_mean.mul_(1 - mom).add_(mean.detach() * mom)
            bn.running_var.mul_(1 - mom).add_(var.detach() * (count / (count - 1)) * mom)
    y = centred * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    return y.to(x.dtype)


def _masked_bn_forward(bn: _BatchNorm, masks: BatchMasks, x: Tensor) -> Tensor:
    mask = masks.get(x.shape[0]) if bn.training else None
    if mask is None:
        return type(bn).forward(bn, x)
    return masked_batch_norm(bn, x, mask)


def install_masked_bn(model: nn.Module, masks: BatchMasks) -> int:
    """Route every BatchNorm layer of ``model`` through :func:`masked_batch_norm` when in
    training mode and ``masks`` holds a mask for the batch size; returns the number of layers.
    Parameters, buffers and state dicts are unchanged; :func:`remove_masked_bn` undoes it."""
    n = 0
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.forward = functools.partial(_masked_bn_forward, m, masks)  # type: ignore[method-assign]
            n += 1
    return n


def remove_masked_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, _BatchNorm) and "forward" in m.__dict__:
            del m.forward


# --------------------------------------------------------------------------------------------
# Padding


def pad_batch(batch_size: int, *tensors: Tensor) -> Tuple[List[Tensor], Tensor]:
    """Pad tensors of ``n <= batch_size`` rows to ``batch_size`` by repeating their rows
    cyclically; returns them and the mask ``[batch_size]`` (1 for the ``n`` real rows)."""
    n = tensors[0].shape[0]
    dev = tensors[0].device
    if n == batch_size:
        return list(tensors), torch.ones(batch_size, device=dev)
    if not 0 < n < batch_size:
        raise ValueError(f"cannot pad a batch of {n} rows to {batch_size}")
    rep = torch.arange(batch_size, device=dev) % n
    out = []
    for t in tensors:
        p = t[rep]
        if t.dim() == 4:
            p = p.contiguous(memory_format=torch.channels_last if t.is_contiguous(memory_format=torch.channels_last)
                             and not t.is_contiguous() else torch.contiguous_format)
        out.append(p)
    return out, (torch.arange(batch_size, device=dev) < n).float()


# --------------------------------------------------------------------------------------------
# SGD with a tensor learning rate


class StaticSGD:
    """:class:`torch.optim.SGD`'s update with 0-d tensor learning rates, traceable in one graph.

    Reads every group's ``momentum``, ``dampening``, ``nesterov``, ``weight_decay`` and
    ``maximize`` once (they never change in ltbench's recipes) and each group's ``lr`` before
    every epoch (:meth:`sync`, which also makes the optimiser's momentum buffers the static
    tensors this class updates in place). ``step()`` must run right after backward.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        if type(optimizer) is not torch.optim.SGD:
            raise ValueError(f"the fast path applies SGD only, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.groups: List[Dict[str, Any]] = []
        for g in optimizer.param_groups:
            if g.get("maximize") or g.get("dampening", 0) != 0 or g.get("differentiable"):
                raise ValueError("the fast path's SGD supports dampening 0, maximize False only")
            if isinstance(g["lr"], Tensor) or isinstance(g["weight_decay"], Tensor):
                raise ValueError("the fast path's SGD needs float lr and weight decay in the optimiser")
            p0 = g["params"][0]  # the lr in the parameters' dtype, as PyTorch applies a float lr
            self.groups.append({"params": list(g["params"]), "momentum": float(g["momentum"]),
                                "nesterov": bool(g["nesterov"]), "weight_decay": float(g["weight_decay"]),
                                "lr": torch.zeros((), device=p0.device, dtype=p0.dtype),
                                "bufs": [torch.zeros_like(p) for p in g["params"]]})
        self.params = [p for g in self.groups for p in g["params"]]

    def static_tensors(self) -> List[Tensor]:
        return [t for g in self.groups for t in [g["lr"], *g["bufs"]]]

    def sync(self) -> None:
        """Copy each group's current lr into its tensor; adopt the optimiser's momentum buffers
        (after a checkpoint was loaded) into the static ones and hand those back to it."""
        for g, pg in zip(self.groups, self.optimizer.param_groups):
            g["lr"].fill_(float(pg["lr"]))
            if g["momentum"] == 0:
                continue
            for p, buf in zip(g["params"], g["bufs"]):
                st = self.optimizer.state[p]
                cur = st.get("momentum_buffer")
                if cur is None:
                    buf.zero_()  # 0 * m + g = g: PyTorch's first step (a clone of g)
                elif cur is not buf:
                    buf.copy_(cur)
                st["momentum_buffer"] = buf

    def step(self) -> None:
        """One SGD step on the parameters' ``.grad`` (skipped where it is None), in place."""
        with torch.no_grad():
            for g in self.groups:
                lr, mom, wd = g["lr"], g["momentum"], g["weight_decay"]
                for p, buf in zip(g["params"], g["bufs"]):
                    grad = p.grad
                    if grad is None:
                        continue
                    if wd != 0:
                        grad = grad.add(p, alpha=wd)
                    if mom != 0:
                        buf.mul_(mom).add_(grad)
                        grad = grad.add(buf, alpha=mom) if g["nesterov"] else buf
                    p.addcmul_(grad, lr, value=-1)


# --------------------------------------------------------------------------------------------
# The trainer's step: padding its inputs, what it can run

#: What :attr:`ltbench.engine.Trainer.step_input_kinds` may name.
INPUT_KINDS = ("sample", "mask", None)


def pad_inputs(inputs: Sequence[Tensor], kinds: Sequence[Optional[str]],
               batch_size: Optional[int]) -> Tuple[List[Tensor], Tensor]:
    """The tensors of a trainer's ``step_inputs`` padded to a full batch by their ``kinds``
    (:attr:`~ltbench.engine.Trainer.step_input_kinds`): every ``"sample"`` tensor of ``m n`` rows
    (``m`` rows per sample, sample-major) to ``m batch_size`` rows by repeating them cyclically,
    the others as they are; returns them and the sample mask ``[batch_size]``. ``batch_size``
    None: no padding (an all-ones mask of the batch's ``n``)."""
    if len(inputs) != len(kinds):
        raise ValueError(f"step_inputs returned {len(inputs)} tensors but step_input_kinds names {len(kinds)}")
    first = inputs[kinds.index("sample")]
    n, dev = first.shape[0], first.device
    if batch_size is None or n == batch_size:
        return list(inputs), torch.ones(n, device=dev)
    out = list(inputs)
    for i, (t, kind) in enumerate(zip(inputs, kinds)):
        if kind == "sample":
            m, rest = divmod(t.shape[0], n)
            if rest or m == 0:
                raise ValueError(f"step input {i} has {t.shape[0]} rows, not a multiple of the batch's {n} samples")
            out[i] = pad_batch(m * batch_size, t)[0][0]
    return out, (torch.arange(batch_size, device=dev) < n).float()


def unsupported_reason(trainer: Any) -> Optional[str]:
    """Why ``trainer`` cannot run on the fast path (None when it can): the fast path traces the
    trainer's own :meth:`~ltbench.engine.Trainer.step_loss`, so a trainer whose step is not
    ``step_loss(*step_inputs(...))`` (its own ``training_step`` or ``train_epoch``) stays eager."""
    if getattr(trainer, "world_size", 1) != 1:
        return "distributed training (world_size > 1)"
    if getattr(trainer, "optimizer", None) is None:
        return "nothing to train (no optimiser)"
    if type(trainer.optimizer) is not torch.optim.SGD:
        return f"optimiser {type(trainer.optimizer).__name__} (the fast path applies SGD)"
    cls = type(trainer)
    if getattr(cls, "training_step", None) is not Trainer.training_step:
        return (f"{cls.__name__} has its own training_step (the fast path traces step_loss: override "
                "step_inputs / step_loss instead)")
    if cls.train_epoch not in (Trainer.train_epoch, BBNTrainer.train_epoch):
        return f"{cls.__name__} has its own train_epoch (e.g. the DDP trainer of ltbench.train)"
    bad = [k for k in cls.step_input_kinds if k not in INPUT_KINDS]
    if bad or "sample" not in cls.step_input_kinds:
        return f"{cls.__name__}.step_input_kinds={cls.step_input_kinds!r} (kinds: {INPUT_KINDS}, one 'sample' at least)"
    return None


# --------------------------------------------------------------------------------------------
# The fast path


_COUNTER = itertools.count()


def _fresh_function(fn: Callable, tag: str, **kwdefaults: Any) -> Callable:
    """A copy of ``fn`` with its own code object and keyword defaults, so that dynamo's cache (per
    code object) and its recompile limit are per run, not shared by every run of a process (a
    ``functools.partial`` would be compiled through one shared wrapper)."""
    code = fn.__code__
    code = code.replace(co_name=f"{code.co_name}_{tag}", co_qualname=f"{code.co_name}_{tag}") \
        if hasattr(code, "co_qualname") else code.replace(co_name=f"{code.co_name}_{tag}")
    out = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)
    out.__kwdefaults__ = {**(fn.__kwdefaults__ or {}), **kwdefaults}
    return out


def _step(mask: Optional[Tensor], *inputs: Tensor, fp: "FastPath") -> None:
    """One training step: the trainer's ``step_loss``, backward, SGD, the epoch's loss sum (traced
    whole)."""
    for p in fp.params:
        p.grad = None
    loss = fp.trainer.step_loss(*inputs, mask=mask)
    loss.backward()
    fp.sgd.step()
    # The gradients stay in .grad until the next step (as in the eager loop): resetting them to
    # None here, after the update, makes inductor (torch 2.14) drop the parameter updates.
    fp.loss_sum.add_(loss.detach())


class FastPath:
    """Runs a trainer's epochs with static shapes (``mode="static"``) and, with ``"graph"``, as
    one compiled whole-step function (see the module docstring). Build it with :func:`attach`.

    Each step is the trainer's own: ``step_inputs`` eagerly, its tensors padded to the full batch
    (:func:`pad_inputs`), then ``step_loss(*inputs, mask=mask)`` with backward and SGD, traced.

    ``backend`` / ``compile_mode``: ``torch.compile``'s (default: inductor, and
    ``"reduce-overhead"`` on CUDA). ``compile_seconds`` accumulates the time of the steps that
    compiled (the first of each graph).
    """

    def __init__(self, trainer: Any, mode: str = "graph", backend: Optional[str] = None,
                 compile_mode: Optional[str] = "auto") -> None:
        mode = check_mode(mode)
        if mode is None:
            raise ValueError("FastPath needs mode 'static' or 'graph'")
        why = None if isinstance(trainer, PackedRuns) else unsupported_reason(trainer)
        if why:
            raise ValueError(f"the fast path cannot train this run: {why}")

        self.trainer, self.mode = trainer, mode
        self.kinds = tuple(trainer.step_input_kinds)
        self.batch_size = trainer.local_batch_size
        self.loss_fns = list(getattr(trainer, "loss_fns", None) or [trainer.loss_fn])
        self.pad = all(supports_mask(f) for f in self.loss_fns)
        self.masks = BatchMasks()
        self.statics: List[Tensor] = []
        self.sgd = StaticSGD(trainer.optimizer)
        self.params = self.sgd.params
        self.loss_sum = torch.zeros((), device=trainer.device)
        self._drw: Dict[int, Tensor] = {}
        # The fast path compiles the whole step itself: the model, not cfg.compile's wrapper.
        self._forward = trainer.__dict__.get("forward")
        if self._forward is not None:
            trainer.forward = trainer.model
        self.bn_layers = install_masked_bn(trainer.model, self.masks)
        self.compile_seconds = 0.0
        self.graphs = 0
        tag = str(next(_COUNTER))
        fn = _fresh_function(_step, tag, fp=self)
        if mode == "graph":
            cmode = default_compile_mode(trainer.device) if compile_mode == "auto" else compile_mode
            kwargs: Dict[str, Any] = {"fullgraph": True, "dynamic": False}
            if backend is not None:
                kwargs["backend"] = backend
            if cmode is not None and backend in (None, "inductor"):
                kwargs["mode"] = cmode
            self.compile_kwargs = kwargs
            fn = torch.compile(fn, **kwargs)
        else:
            self.compile_kwargs = {}
        self._fn = fn
        self._seen_shapes: set = set()

    # -- per epoch ---------------------------------------------------------------------------------
    def _pin(self) -> None:
        """Per-epoch state into static tensors (after the trainer's on_epoch_start)."""
        self.sgd.sync()
        for i, loss in enumerate(self.loss_fns):
            w = getattr(loss, "class_weight", None) if hasattr(loss, "set_class_weight") else None
            if isinstance(w, Tensor):
                static = self._drw.get(i)
                if static is None:
                    static = self._drw[i] = w.detach().clone()
                elif w is not static:
                    static.copy_(w)
                loss.class_weight = static  # the same tensor every epoch (a static graph input)

    def run_epoch(self, epoch: int, generator: torch.Generator) -> Tuple[Tensor, int]:
        """The epoch's steps (the trainer's ``on_epoch_start`` already ran); returns the summed
        loss (a 0-d tensor) and the number of steps, as the eager loop of ``train_epoch``."""
        self._pin()
        self.loss_sum.zero_()
        steps = 0
        for batch in self.trainer.epoch_batches(epoch):
            self.step(batch, epoch, generator)
            steps += 1
        self._reset_masks()
        return self.loss_sum.clone(), steps

    def step(self, batch: Any, epoch: int, generator: Any) -> None:
        """One training step on ``batch`` (one item of the trainer's ``epoch_batches``), its
        loss added to the epoch's sum. :meth:`run_epoch` calls it per batch after :meth:`_pin`;
        ``benchmarks/throughput.py`` calls it to time the fast path's step alone."""
        import time

        # A loss without a mask is not padded: its last batch keeps its shape.
        inputs, mask = pad_inputs(tuple(self.trainer.step_inputs(batch, epoch, generator)), self.kinds,
                                  self.batch_size if self.pad else None)
        self._set_masks(inputs, mask)
        key = (tuple(isinstance(getattr(f, "class_weight", None), Tensor) for f in self.loss_fns),
               *(tuple(t.shape) for t in inputs))
        first = self.mode == "graph" and key not in self._seen_shapes
        if first and self.trainer.device.type == "cuda":
            self._mark_static()
        t0 = time.perf_counter()
        with _compile_config():
            self._fn(mask if self.pad else None, *inputs)
        if first:
            if self.trainer.device.type == "cuda":
                torch.cuda.synchronize(self.trainer.device)
            self.compile_seconds += time.perf_counter() - t0
            self._seen_shapes.add(key)
            self.graphs += 1

    def _set_masks(self, inputs: Sequence[Tensor], mask: Tensor) -> None:
        # The masked BatchNorm's masks by batch size: the inputs of kind "mask" (OHEM's kept
        # samples), then the batch's own (it wins on its size).
        for t, kind in zip(inputs, self.kinds):
            if kind == "mask":
                self._put(t)
        self._put(mask)

    def _put(self, mask: Tensor) -> None:
        n = mask.shape[0]
        cur = self.masks.by_size.get(n)
        if cur is None:
            cur = self.masks.by_size[n] = mask.clone()
            self.statics.append(cur)
        else:
            cur.copy_(mask)

    def _mark_static(self) -> None:
        """Tell CUDA graphs that the tensors updated in place keep their address (they are not
        parameters or buffers of the model, which it assumes static already)."""
        import torch._dynamo

        tr = self.trainer
        extra = [self.loss_sum, *self.sgd.static_tensors(), *self.statics, *self._drw.values()]
        extra += [b for f in self.loss_fns for b in f.buffers()]
        extra += self.trainer_state(tr)
        for t in extra:
            torch._dynamo.mark_static_address(t)

    def _reset_masks(self) -> None:
        for m in self.masks.by_size.values():
            m.fill_(1.0)

    @staticmethod
    def trainer_state(trainer: Any) -> List[Tensor]:
        """The trainer's tensor attributes: the state its step keeps across steps and updates in
        place (BBN's alpha, OHEM's counters, a pack's loss sums)."""
        return [v for v in vars(trainer).values() if isinstance(v, Tensor)]

    def close(self) -> None:
        """Restore the trainer's eager path (BatchNorm layers, forward, step runner)."""
        remove_masked_bn(self.trainer.model)
        if self._forward is not None:
            self.trainer.forward = self._forward
        if getattr(self.trainer, "step_runner", None) is self:
            self.trainer.step_runner = None
        self._fn = None  # type: ignore[assignment]

    def record(self) -> Dict[str, Any]:
        """What ``metrics.json["execution"]["fast"]`` keeps."""
        step = type(self.trainer).step_loss
        return {"mode": self.mode, "step": getattr(step, "__qualname__", str(step)), "padded": self.pad,
                "bn_layers_masked": self.bn_layers,
                "compile": {k: v for k, v in self.compile_kwargs.items()}, "graphs": self.graphs,
                "compile_seconds": round(self.compile_seconds, 3)}


class _compile_config:
    """``torch._dynamo.config`` for tracing a step: autograd's backward inside the graph."""

    def __enter__(self) -> None:
        import torch._dynamo

        self._patch = torch._dynamo.config.patch(trace_autograd_ops=True)
        self._patch.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._patch.__exit__(*exc)


def attach(trainer: Any, mode: Union[str, bool] = "graph", backend: Optional[str] = None,
           compile_mode: Optional[str] = "auto", strict: bool = False) -> Optional[FastPath]:
    """Put ``trainer`` on the fast path (``mode`` ``"static"`` or ``"graph"``); returns the
    :class:`FastPath`, or None with a warning naming why the trainer stays eager (an error with
    ``strict``)."""
    mode = check_mode(mode)
    if mode is None:
        return None
    why = unsupported_reason(trainer)
    if why:
        if strict:
            raise ValueError(f"the fast path cannot train this run: {why}")
        warnings.warn(f"ltbench fast path off for {type(trainer).__name__}: {why}; training eagerly", stacklevel=2)
        return None
    fp = FastPath(trainer, mode, backend=backend, compile_mode=compile_mode)
    trainer.step_runner = fp
    return fp


def detach(trainer: Any) -> None:
    fp = getattr(trainer, "step_runner", None)
    if isinstance(fp, FastPath):
        fp.close()


# --------------------------------------------------------------------------------------------
# Packed runs: K runs of one recipe trained as one network in one step

#: Configuration fields in which the runs of a pack may differ; every other field (data, model,
#: epochs, batch size, lr schedule, momentum, weight decay, ...) must be equal.
PACK_VARYING = ("loss", "loss_params", "sampler", "sampler_params", "drw_epoch", "drw_beta", "drs_epoch", "seed",
                "classifier")


def pack_key(spec: Any) -> Optional[str]:
    """The recipe a run shares with the runs it can be packed with, or None when it cannot be
    packed: a ``joint`` run (one network, the plain training step) of a CIFAR ResNet
    (:class:`~ltbench.models.CifarResNet`), with epochs of the same length as the other runs'
    (the sampler's ``num_samples``; ``class_aware``'s default epoch length is its own)."""
    import json

    if spec.method != "joint" or spec.deps or spec.params:
        return None
    c = spec.config
    model = c.get("model", "resnet32")
    if model.startswith("timm/") or model not in MODELS:
        return None
    try:
        if not isinstance(MODELS.build(model, 2), CifarResNet):
            return None
    except Exception:  # noqa: BLE001 - an unknown or unbuildable model is simply not packed
        return None
    length = (c.get("sampler_params") or {}).get("num_samples")
    kind = "n_max_x_classes" if c.get("sampler") == "class_aware" and length is None else length
    same = {k: v for k, v in c.items() if k not in PACK_VARYING}
    return json.dumps({"recipe": same, "epoch_length": kind}, sort_keys=True, default=str)


class _PackedShortcutA(nn.Module):
    """Option-A shortcut of K packed runs: stride, then each run's channels zero-padded."""

    def __init__(self, k: int, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.k, self.in_planes, self.stride, self.pad = k, in_planes, stride, planes - in_planes

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        n, _, h, w = x.shape
        half = self.pad // 2
        x = F.pad(x.reshape(n, self.k, self.in_planes, h, w), (0, 0, 0, 0, half, self.pad - half))
        return x.reshape(n, self.k * (self.in_planes + self.pad), h, w)


class _PackedBlock(nn.Module):
    def __init__(self, conv1: nn.Module, bn1: nn.Module, conv2: nn.Module, bn2: nn.Module, shortcut: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1, self.conv2, self.bn2, self.shortcut = conv1, bn1, conv2, bn2, shortcut

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PackedCifarResNet(nn.Module):
    """The backbones of K :class:`~ltbench.models.CifarResNet` runs as one network: every
    convolution with K x the channels and ``groups=K`` (run k owns the k-th group), every
    BatchNorm with K x the channels (so its statistics stay per run), the option-A shortcut
    padding each run's channels. Input ``[N, 3 K, H, W]`` (the runs' batches side by side along
    channels); :meth:`forward_features` gives ``[N, K D, h, w]``. The classifiers stay the runs'
    own modules. :meth:`copy_in` / :meth:`copy_out` move weights and BatchNorm buffers between the
    runs' models and this one.
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()

        k = self.k = len(models)
        ref = models[0]
        self._pairs: List[Tuple[Tensor, List[Tensor]]] = []  # (packed tensor, the runs' tensors)
        self._counters: List[Tuple[Tensor, List[Tensor]]] = []  # num_batches_tracked

        def conv(mods: Sequence[nn.Conv2d]) -> nn.Conv2d:
            c = mods[0]
            out = nn.Conv2d(k * c.in_channels, k * c.out_channels, c.kernel_size, c.stride, c.padding,
                            groups=k * c.groups, bias=c.bias is not None, device=c.weight.device, dtype=c.weight.dtype)
            self._pairs.append((out.weight, [m.weight for m in mods]))
            if c.bias is not None:
                self._pairs.append((out.bias, [m.bias for m in mods]))
            return out

        def bn(mods: Sequence[nn.BatchNorm2d]) -> nn.BatchNorm2d:
            b = mods[0]
            out = nn.BatchNorm2d(k * b.num_features, b.eps, b.momentum, b.affine, b.track_running_stats,
                                 device=b.weight.device, dtype=b.weight.dtype)
            for name in ("weight", "bias", "running_mean", "running_var"):
                if getattr(b, name) is not None:
                    self._pairs.append((getattr(out, name), [getattr(m, name) for m in mods]))
            if b.num_batches_tracked is not None:
                self._counters.append((out.num_batches_tracked, [m.num_batches_tracked for m in mods]))
            return out

        self.conv1, self.bn1 = conv([m.conv1 for m in models]), bn([m.bn1 for m in models])
        stages = []
        for s, stage in enumerate(ref.layers):
            blocks = []
            for j, block in enumerate(stage):
                if not isinstance(block, BasicBlock):
                    raise ValueError(f"packing supports BasicBlock CIFAR ResNets, got {type(block).__name__}")
                runs = [m.layers[s][j] for m in models]
                sc = block.shortcut
                if isinstance(sc, nn.Identity):
                    shortcut: nn.Module = nn.Identity()
                elif isinstance(sc, LambdaShortcut):
                    shortcut = _PackedShortcutA(k, block.conv1.in_channels, block.conv1.out_channels, sc.stride)
                else:
                    shortcut = nn.Sequential(conv([r.shortcut[0] for r in runs]), bn([r.shortcut[1] for r in runs]))
                blocks.append(_PackedBlock(conv([r.conv1 for r in runs]), bn([r.bn1 for r in runs]),
                                           conv([r.conv2 for r in runs]), bn([r.bn2 for r in runs]), shortcut))
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.ModuleList(stages)
        self.num_features = ref.num_features
        self.copy_in()

    def forward_features(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for stage in self.layers:
            x = stage(x)
        return x

    @torch.no_grad()
    def copy_in(self) -> None:
        """The runs' weights and buffers into the packed tensors."""
        for packed, runs in self._pairs:
            packed.copy_(torch.cat([r.detach() for r in runs]))
        for packed, runs in self._counters:
            packed.copy_(runs[0])

    @torch.no_grad()
    def copy_out(self) -> None:
        """The packed tensors back into the runs' weights and buffers (foreach: a few kernels)."""
        dst, src = [], []
        for packed, runs in self._pairs:
            dst += [r.detach() for r in runs]
            src += list(packed.detach().chunk(self.k))
        for packed, runs in self._counters:
            dst += runs
            src += [packed] * len(runs)
        torch._foreach_copy_(dst, src)


class PackedRuns:
    """K trainers of one recipe as the one "trainer" a :class:`FastPath` drives: the packed
    backbone and the runs' own heads, losses, samplers and augmentation generators, one SGD over
    all parameters (the runs' momentum buffers copied in and out with the weights). Its step
    follows the trainers' contract (:meth:`step_inputs` / :meth:`step_loss`)."""

    #: The runs' batches side by side ``[N, 3 K, H, W]`` and their labels ``[N, K]``.
    step_input_kinds = ("sample", "sample")

    def __init__(self, trainers: Sequence[Any]) -> None:
        if len(trainers) < 1:
            raise ValueError("a pack needs at least one run")
        for t in trainers:
            if type(t) is not Trainer or type(t.optimizer) is not torch.optim.SGD or t.world_size != 1:
                raise ValueError(f"only plain Trainer runs (method 'joint', SGD, one process) can be packed, "
                                 f"got {type(t).__name__}")
        t0 = trainers[0]
        for t in trainers[1:]:
            if (t.local_batch_size, t.device, t.amp_dtype, t.channels_last, len(t.train_set)) != \
                    (t0.local_batch_size, t0.device, t0.amp_dtype, t0.channels_last, len(t0.train_set)):
                raise ValueError("the runs of a pack need the same batch size, device, precision and training-set size")
        self.trainers = list(trainers)
        self.k = len(trainers)
        self.device, self.world_size = t0.device, 1
        self.local_batch_size = t0.local_batch_size
        self.amp_dtype = t0.amp_dtype
        self.loss_fns = [t.loss_fn for t in trainers]
        self.sums = torch.zeros(self.k, device=self.device)  # each run's summed loss of the epoch
        self.heads = [t.model.fc for t in trainers]
        self.backbone = PackedCifarResNet([t.model for t in trainers])
        if t0.channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        self.model = nn.ModuleDict({"backbone": self.backbone, "heads": nn.ModuleList(self.heads)})
        # One SGD: the packed backbone (the recipe's weight decay) and each run's head parameters
        # with their own group's settings (sigmoid losses do not decay the prior bias).
        head_ids = {id(p) for h in self.heads for p in h.parameters()}
        g0 = t0.optimizer.param_groups[0]
        common = {"momentum": g0["momentum"], "nesterov": g0["nesterov"], "dampening": g0.get("dampening", 0)}
        backbone_wd = {g["weight_decay"] for t in trainers for g in t.optimizer.param_groups
                       if any(id(p) not in head_ids for p in g["params"])}
        if len(backbone_wd) != 1:
            raise ValueError(f"the runs of a pack need one backbone weight decay, got {sorted(backbone_wd)}")
        groups = [{"params": list(self.backbone.parameters()), "weight_decay": backbone_wd.pop()}]
        self._head_params: List[Tuple[Tensor, Any]] = []
        for t in trainers:
            for g in t.optimizer.param_groups:
                heads = [p for p in g["params"] if id(p) in head_ids]
                if heads:
                    groups.append({"params": heads, "weight_decay": g["weight_decay"]})
                    self._head_params += [(p, t.optimizer) for p in heads]
        self.optimizer = torch.optim.SGD(groups, lr=g0["lr"], **common)
        self._backbone_map = [(pp, runs, [t.optimizer for t in trainers]) for pp, runs in self.backbone._pairs
                              if isinstance(pp, nn.Parameter)]

    def autocast(self):
        return self.trainers[0].autocast()

    def epoch_batches(self, epoch: int) -> Iterable[Tuple[Tensor, ...]]:
        lists = [list(t.epoch_batches(epoch)) for t in self.trainers]
        shapes = {tuple(len(b) for b in batches) for batches in lists}
        if len(shapes) != 1:
            raise ValueError(f"the runs of a pack drew epochs of different lengths in epoch {epoch}: pack only runs "
                             "whose samplers draw the same number of samples")
        return zip(*lists)

    def step_inputs(self, batches: Tuple[Tensor, ...], epoch: int,
                    generators: Sequence[torch.Generator]) -> Tuple[Tensor, Tensor]:
        """Each run's batch from its own sampler and generator (its own ``step_inputs``), side by
        side along channels, and the runs' labels ``[N, K]``."""
        xs, ys = [], []
        for t, idx, g in zip(self.trainers, batches, generators):
            x, y = t.step_inputs(idx, epoch, g)
            xs.append(x)
            ys.append(y)
        x = torch.cat(xs, dim=1)
        if self.trainers[0].channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, torch.stack(ys, dim=1)

    def step_loss(self, x: Tensor, y: Tensor, *, mask: Optional[Tensor] = None) -> Tensor:
        """The packed backbone once, then each run's head and loss (its ``criterion``) on its slice
        of the features; the sum of the runs' losses. The K losses are combined here, not in the
        runs' own ``step_loss``: those forward a whole network each, a pack forwards one."""
        with self.autocast():
            pooled = self.backbone.forward_features(x).mean(dim=(2, 3))
        d = self.backbone.num_features
        total = None
        for k, (t, head) in enumerate(zip(self.trainers, self.heads)):
            with self.autocast():
                logits = head(pooled[:, k * d:(k + 1) * d])
            loss = t.criterion(logits.float(), y[:, k], mask)
            self.sums[k].add_(loss.detach())  # parameters are disjoint: each run's gradient is its own loss's
            total = loss if total is None else total + loss
        return total

    def momentum_in(self) -> None:
        """Each run's momentum buffers (if any) into the packed optimiser's state."""
        st = self.optimizer.state
        for pp, runs, opts in self._backbone_map:
            bufs = [o.state.get(r, {}).get("momentum_buffer") for r, o in zip(runs, opts)]
            if all(b is not None for b in bufs):
                st[pp]["momentum_buffer"] = torch.cat(bufs)
            else:
                st.pop(pp, None)
        for p, opt in self._head_params:
            b = opt.state.get(p, {}).get("momentum_buffer")
            if b is not None:
                st[p]["momentum_buffer"] = b.clone()
            else:
                st.pop(p, None)

    @torch.no_grad()
    def momentum_out(self) -> None:
        """The packed momentum buffers back into each run's optimiser state."""
        dst, src = [], []
        st = self.optimizer.state
        for pp, runs, opts in self._backbone_map:
            buf = st.get(pp, {}).get("momentum_buffer")
            if buf is None:
                continue
            for r, o, part in zip(runs, opts, buf.chunk(self.k)):
                cur = o.state[r].get("momentum_buffer")
                if cur is None:
                    cur = o.state[r]["momentum_buffer"] = torch.empty_like(r)
                dst.append(cur)
                src.append(part)
        for p, opt in self._head_params:
            buf = st.get(p, {}).get("momentum_buffer")
            if buf is None:
                continue
            cur = opt.state[p].get("momentum_buffer")
            if cur is None or cur is buf:
                cur = opt.state[p]["momentum_buffer"] = torch.empty_like(p)
            dst.append(cur)
            src.append(buf)
        if dst:
            torch._foreach_copy_(dst, src)


def fit_pack(trainers: Sequence[Any], out_dirs: Sequence[Any], deadline: Optional[float] = None,
             mode: Union[str, bool] = "graph", backend: Optional[str] = None) -> List[Any]:
    """Train K runs of one recipe as one packed network (:class:`PackedCifarResNet`) in lockstep
    and return each run's :class:`~ltbench.engine.TrainResult`, as its own :meth:`fit` would.

    Each run keeps its own checkpoint, evaluation, history and extras (every epoch's weights,
    BatchNorm buffers and momentum are copied back into its model and optimiser before its
    bookkeeping); its ``train_seconds`` is its share (1/K) of the packed epochs' time. The runs
    must start at the same epoch (all new, or resumed from checkpoints of the same epoch). At the
    ``deadline`` every run checkpoints the same epoch and :class:`~ltbench.engine.DeadlineReached`
    is raised. ``mode``: ``"static"`` or ``"graph"`` (:class:`FastPath`).
    """
    import time

    mode = check_mode(mode) or "graph"
    loops = [t.fit_epochs(d, None) for t, d in zip(trainers, out_dirs)]
    results: List[Any] = [None] * len(trainers)
    epochs: List[Optional[int]] = []
    for i, loop in enumerate(loops):
        try:
            epochs.append(next(loop))
        except StopIteration as done:  # already at its last epoch (a finished checkpoint)
            results[i] = done.value
            epochs.append(None)
    live = [i for i, e in enumerate(epochs) if e is not None]
    if not live:
        return results
    if len({epochs[i] for i in live}) != 1:
        raise ValueError(f"the runs of a pack must resume from the same epoch, got {[epochs[i] for i in live]}")
    pack = PackedRuns([trainers[i] for i in live])
    fp = FastPath(pack, mode, backend=backend)
    pack.fast = fp
    pack.momentum_in()
    stopped: Optional[BaseException] = None
    epoch = epochs[live[0]]
    while live:
        t0 = time.perf_counter()
        for t in pack.trainers:
            t.model.train()
            t.on_epoch_start(epoch)
        lrs = {g["lr"] for t in pack.trainers for g in t.optimizer.param_groups}
        if len(lrs) != 1:
            raise ValueError(f"the runs of a pack must share the lr schedule, got lr {sorted(lrs)} in epoch {epoch}")
        lr = lrs.pop()
        for g in pack.optimizer.param_groups:
            g["lr"] = lr
        pack.backbone.train()
        gens = [t.augment_generator(epoch) for t in pack.trainers]
        pack.sums.zero_()
        _, steps = fp.run_epoch(epoch, gens)
        pack.backbone.copy_out()
        pack.momentum_out()
        sums = pack.sums.tolist()  # one host sync per epoch
        if pack.device.type == "cuda":
            torch.cuda.synchronize(pack.device)
        share = (time.perf_counter() - t0) / pack.k
        stop = deadline is not None and time.time() >= deadline
        nxt = None
        for j, (i, t) in enumerate(zip(live, pack.trainers)):
            row = {"epoch": epoch + 1, "lr": t.optimizer.param_groups[0]["lr"],
                   "train_loss": sums[j] / max(steps, 1), "_seconds": share, "_stop": stop}
            try:
                nxt = loops[i].send(row)
            except StopIteration as done:
                results[i] = done.value
            except DeadlineReached as exc:
                stopped = exc
        if stopped is not None:
            fp.close()
            raise stopped
        finished = [results[i] is not None for i in live]
        if all(finished):
            break
        if any(finished):
            raise RuntimeError("the runs of a pack finished at different epochs")
        epoch = nxt
    fp.close()
    return results
