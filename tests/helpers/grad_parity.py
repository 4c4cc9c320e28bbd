"""One update's gradients on fixed, hand-made rollouts: on 1 process, or as one of 2 processes
(gloo) under torch DDP or FSDP2, each rank holding half of the groups. tests/test_scale.py runs
`python -m helpers.grad_parity MODE OUT` as 2 processes and compares with `gradients(...)`
computed in the test process on the union of the samples.

The rewards give PSR 6 kept rows on rank 0 and 2 on rank 1 (NSR: 2 and 6), so the ranks have
uneven work; every response has its own length, micro-batches of 3 rows are uneven too.
"""

from __future__ import annotations

import os
import sys

import torch

from nsr_lightning.models import TINY_MODEL, load_critic, load_policy, load_reference
from nsr_lightning.objectives import GRPO, PPO, Reinforce
from nsr_lightning.rollout import RolloutBatch
from nsr_lightning.update import Ranks, Update, UpdateSettings

REWARDS = [1, 1, 1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0, 1, 0, 0]  # 4 groups of 4; rank r: groups 2r, 2r+1
OBJECTIVES = {
    "psr": lambda: Reinforce(lambda_neg=0.0),
    "nsr": lambda: Reinforce(lambda_pos=0.0),
    "grpo": lambda: GRPO(kl_coef=0.1),
    "ppo": lambda: PPO(kl_penalty_coef=0.1),
}


def union_batch() -> RolloutBatch:
    """16 rows: 4 prompts (one per group, 3-7 tokens) x 4 responses of 2-11 tokens."""
    gen = torch.Generator().manual_seed(0)
    n, prompt_len, resp_len = 16, 7, 11
    plens = torch.tensor([3, 5, 7, 4]).repeat_interleave(4)
    rlens = torch.randint(2, resp_len + 1, (n,), generator=gen)
    prompts = torch.randint(2, 29, (4, prompt_len), generator=gen).repeat_interleave(4, 0)
    cols = torch.arange(prompt_len)
    prompt_mask = (cols >= prompt_len - plens.unsqueeze(1)).long()  # left-padded
    response_mask = (torch.arange(resp_len) < rlens.unsqueeze(1)).long()  # right-padded
    responses = torch.randint(2, 29, (n, resp_len), generator=gen) * response_mask
    return RolloutBatch(
        prompt_ids=prompts * prompt_mask,
        prompt_mask=prompt_mask,
        response_ids=responses,
        response_mask=response_mask,
        group_ids=torch.arange(4).repeat_interleave(4),
        truncated=torch.zeros(n, dtype=torch.bool),
        texts=[""] * n,
        rewards=torch.tensor(REWARDS, dtype=torch.float32),
    )


class Capture(torch.optim.Optimizer):
    """An optimizer whose step records the full gradients (gathered from FSDP2 shards)."""

    def __init__(self, params) -> None:
        super().__init__(list(params), {})
        self.grads: list[torch.Tensor] = []

    @torch.no_grad()
    def step(self, closure=None):
        from torch.distributed.tensor import DTensor

        grads = []
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad if p.grad is not None else torch.zeros_like(p)
                grads.append((g.full_tensor() if isinstance(g, DTensor) else g).flatten().clone())
        self.grads.append(torch.cat(grads))


def gradients(name: str, batch: RolloutBatch, mini_batch_size: int, ranks: Ranks, wrap=None) -> dict:
    """{"policy": flat gradient, "critic": ... (PPO)} of the step's single update, and its count."""
    objective = OBJECTIVES[name]()
    torch.manual_seed(0)  # the critic's fresh head: the same on every process
    model = load_policy(str(TINY_MODEL))
    ref = load_reference(str(TINY_MODEL)) if objective.needs_reference else None
    extras = {"critic": load_critic(str(TINY_MODEL))} if objective.extra_models() else {}
    backward = wrap(model, ref, extras) if wrap else None
    settings = UpdateSettings(mini_batch_size=mini_batch_size, micro_batch_size=3, max_grad_norm=1e6)
    update = Update(model, objective, settings, ref_model=ref, extras=extras, backward=backward)
    opts = [Capture(model.parameters())] + [Capture(m.parameters()) for m in extras.values()]
    stats = update.run(batch, opts, ranks=ranks)
    out = {"updates": stats.scalar("train/updates"), "policy": opts[0].grads}
    if extras:
        out["critic"] = opts[1].grads
    return out


def _ddp(model, ref, extras):
    from lightning.pytorch.overrides.distributed import prepare_for_backward
    from torch.nn.parallel import DistributedDataParallel

    ddp = DistributedDataParallel(torch.nn.ModuleDict({"policy": model, **extras}))

    def backward(loss):  # what Lightning's DDPStrategy does for a manual backward
        prepare_for_backward(ddp, loss)
        loss.backward()

    return backward


def _fsdp(model, ref, extras):
    from torch.distributed.device_mesh import init_device_mesh

    from nsr_lightning.fsdp import shard_model

    mesh = init_device_mesh("cpu", (torch.distributed.get_world_size(),))
    for m in [model, ref, *extras.values()]:
        if m is not None:
            shard_model(m, mesh, param_dtype="float32")
    return None


def main(mode: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    def reduce(t, op):
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return t

    ranks = Ranks(world, rank, reduce, sharded=mode == "fsdp")
    union = union_batch()
    mine = union.select(torch.arange(16).reshape(world, -1)[rank])
    results = {}
    for name in OBJECTIVES:
        kept = int(OBJECTIVES[name]().keep(union.rewards, union.group_ids).sum())
        results[name] = gradients(name, mine, kept // world, ranks, {"ddp": _ddp, "fsdp": _fsdp}[mode])
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(1)
    main(sys.argv[1], sys.argv[2])
