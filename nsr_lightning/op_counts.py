"""Device-independent counts of the work a piece of code asks of PyTorch: aten operations, host
synchronisations, FLOPs and the full-vocabulary float32 tensors it forms.

    with OpCounts(vocab_size=V) as counts:
        ...                      # any torch code, on any device (a CPU shows what a GPU would run)
    counts.summary()             # {"aten_ops": ..., "host_syncs": ..., "flops": ..., ...}

Why counts: a GPU timing moves with the machine, the driver and the queue; these numbers do not,
so they serve as budgets in tests (tests/test_budgets.py) and as the side-by-side table of
`scripts/bench_step.py --counts`.

- aten_ops: every operator call that reaches a backend kernel (TorchDispatchMode: after autograd,
  so the backward's kernels count too; a fused kernel counts once).
- host_syncs: the calls that make the host wait for the device on a GPU: an operator whose output
  size or value the host must read (`.item()`, `int(t)`, `bool(t)`, `nonzero`, `unique`,
  `masked_select`, boolean indexing, `bincount`, ...), and `Tensor.tolist()` / `.numpy()`. On a
  CPU the same calls are made, so the count is the GPU's.
- full_vocab_f32 / full_vocab_f32_bytes: new float32 tensors (not views, not in-place results)
  produced by an operator, whose last dimension is the vocabulary and that hold more than one row
  of it: the logits-sized tensors that dominate an LLM update's memory and allocator traffic.
- flops: torch.utils.flop_counter's count (matmuls, convolutions, attention).
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten

# Operators whose result the host must read before it can go on (a device-to-host wait on a GPU).
SYNC_OPS = {
    aten._local_scalar_dense,  # .item(), int(t), float(t), bool(t), `if t:`
    aten.nonzero,
    aten._unique2,
    aten.unique_dim,
    aten.unique_consecutive,
    aten.masked_select,
    aten.bincount,
    aten.equal,
    aten.is_nonzero,
    aten.repeat_interleave,  # the Tensor overload without output_size reads the repeats
    aten.histc,
}


class _Dispatch(TorchDispatchMode):
    def __init__(self, owner: OpCounts) -> None:
        super().__init__()
        self.owner = owner

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.owner._op(func, out, kwargs or {}, args)
        return out


class OpCounts:
    """Counts while active (a context manager); `summary()` gives the totals."""

    def __init__(self, vocab_size: int | None = None, *, flops: bool = True) -> None:
        self.vocab_size = vocab_size
        self.aten_ops = 0
        self.host_syncs = 0
        self.full_vocab_f32 = 0
        self.full_vocab_f32_bytes = 0
        self.by_op: Counter[str] = Counter()
        self.syncs_by_op: Counter[str] = Counter()
        self._flop_mode = FlopCounterMode(display=False) if flops else None
        self._dispatch = _Dispatch(self)
        self._patched: dict[str, object] = {}

    def _op(self, func, out, kwargs: dict, args: tuple = ()) -> None:
        name = str(func.overloadpacket.__name__)
        self.aten_ops += 1
        self.by_op[name] += 1
        packet = func.overloadpacket
        if packet in SYNC_OPS and not (packet is aten.repeat_interleave and not _reads_repeats(func, kwargs)):
            self._sync(name)
        if self.vocab_size:
            inputs = {_storage(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
            for t in tree_flatten(out)[0]:
                if (
                    isinstance(t, torch.Tensor)
                    and _storage(t) not in inputs  # a view or an in-place result forms nothing new
                    and t.dtype == torch.float32
                    and t.dim() >= 2
                    and t.shape[-1] == self.vocab_size
                    and t.numel() > self.vocab_size
                ):
                    self.full_vocab_f32 += 1
                    self.full_vocab_f32_bytes += t.numel() * 4

    def _sync(self, name: str) -> None:
        self.host_syncs += 1
        self.syncs_by_op[name] += 1

    def _patch(self, method: str) -> None:
        """Tensor.tolist / .numpy reach no operator on a CPU tensor; on a GPU they wait for it."""
        original = getattr(torch.Tensor, method)
        counts = self

        def counted(tensor, *args, **kwargs):
            counts._sync(method)
            return original(tensor, *args, **kwargs)

        self._patched[method] = original
        setattr(torch.Tensor, method, counted)

    def __enter__(self) -> OpCounts:
        for method in ("tolist", "numpy"):
            self._patch(method)
        if self._flop_mode is not None:
            self._flop_mode.__enter__()
        self._dispatch.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._dispatch.__exit__(*exc)
        if self._flop_mode is not None:
            self._flop_mode.__exit__(*exc)
        for method, original in self._patched.items():
            setattr(torch.Tensor, method, original)
        self._patched.clear()

    @property
    def flops(self) -> int:
        return int(self._flop_mode.get_total_flops()) if self._flop_mode is not None else 0

    def summary(self) -> dict:
        return {
            "aten_ops": self.aten_ops,
            "host_syncs": self.host_syncs,
            "flops": self.flops,
            "full_vocab_f32": self.full_vocab_f32,
            "full_vocab_f32_bytes": self.full_vocab_f32_bytes,
            "syncs_by_op": dict(self.syncs_by_op.most_common()),
        }


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _reads_repeats(func, kwargs: dict) -> bool:
    """repeat_interleave reads its repeats on the host unless they are an int (`self_int`) or
    output_size is given."""
    return func._overloadname in ("Tensor", "self_Tensor") and kwargs.get("output_size") is None
