"""FSDP2 helpers: shard a Hugging Face causal LM, and read its full weights back.

Used by `RLVRModule.configure_model` under Lightning's `ModelParallelStrategy` (`trainer=fsdp8`,
`trainer=fsdp_cpu`), by the vLLM engine's weight sync and by the CLI when it saves
`final_model`. Plain (unsharded) models pass through every function unchanged, so the callers
need no `if sharded` of their own.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn


def is_sharded(model: nn.Module) -> bool:
    """True when `model` (the root) was passed to FSDP2's `fully_shard`."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a Hugging Face causal LM (Llama, Qwen2, Qwen3, ...)."""
    base = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise TypeError(
            f"cannot find the decoder layers of {type(model).__name__} (expected model.model.layers)"
        )
    return list(layers)


def shard_model(
    model: nn.Module,
    mesh,
    *,
    param_dtype: str = "bfloat16",
    reduce_dtype: str = "float32",
    reshard_after_forward: bool = True,
    activation_checkpointing: bool = False,
) -> nn.Module:
    """`fully_shard` each decoder layer, then the root (embeddings, final norm, LM head).

    The sharded parameters keep the dtype the model was loaded in (use float32 masters:
    a 1e-6 learning-rate update is below bfloat16's resolution); forward and backward run in
    `param_dtype`, gradients are reduced in `reduce_dtype` (FSDP2 MixedPrecisionPolicy).
    Activation checkpointing is Hugging Face's own (non-reentrant), which keeps parameter
    names unchanged, so the vLLM weight sync and checkpoints see the usual names.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from nsr_lightning.config_rules import check_group
    from nsr_lightning.models import DTYPES

    check_group("fsdp", {"param_dtype": param_dtype, "reduce_dtype": reduce_dtype})
    if is_sharded(model):  # configure_model may run more than once (fit, then validate)
        return model
    if activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    policy = MixedPrecisionPolicy(param_dtype=DTYPES[param_dtype], reduce_dtype=DTYPES[reduce_dtype])
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    return model


def iter_full_tensors(model: nn.Module, dtype: torch.dtype | None = None) -> Iterator[tuple[str, Tensor]]:
    """(name, full tensor) in state-dict order, one tensor gathered at a time.

    A sharded (DTensor) entry is all-gathered with `.full_tensor()` only when the consumer asks
    for it, so at most one full parameter exists at once besides the consumer's own copy. Every
    rank must drain the iterator (the gathers are collectives). Unsharded entries are yielded
    as they are (detached; cast when `dtype` is given).
    """
    from torch.distributed.tensor import DTensor

    for name, value in model.state_dict().items():
        if isinstance(value, DTensor):
            value = value.full_tensor()
        value = value.detach()
        yield name, value.to(dtype) if dtype is not None and value.is_floating_point() else value


def full_state_dict(model: nn.Module) -> dict[str, Tensor] | None:
    """The full state dict on CPU: a collective under FSDP2 (call it on every rank); returns it on
    rank 0 and None elsewhere. Unsharded models: the model's own state dict."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=options)
    return state if torch.distributed.get_rank() == 0 else None


def to_local_scalar(value: Tensor | None) -> Tensor | None:
    """A DTensor scalar (e.g. the gradient norm clip_grad_norm_ returns under FSDP2) as a tensor."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value
