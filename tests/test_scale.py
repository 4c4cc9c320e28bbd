"""The same update on 1 process or 2: the loss is normalised over the global mini-batch and the
kept samples are counted over all ranks, so 2-process DDP and 2-process FSDP2 (gloo, real
processes) give the 1-process gradient on the union of the same samples
(tests/helpers/grad_parity.py holds the fixed rollouts and the gradient capture)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.grad_parity import OBJECTIVES, gradients, union_batch

from nsr_lightning.update import Ranks

TESTS = Path(__file__).parent


def spawn(mode: str, out: Path, world: int = 2) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world)}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "helpers.grad_parity", mode, str(out)],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(world)
    ]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)


@pytest.fixture(scope="module")
def one_process():
    """Each objective's gradient on 1 process, all 16 samples, one update of all kept rows."""
    union = union_batch()
    out = {}
    for name, make in OBJECTIVES.items():
        kept = int(make().keep(union.rewards, union.group_ids).sum())
        out[name] = gradients(name, union, kept, Ranks())
    return out


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_ranks_give_the_one_process_gradient(mode, one_process, tmp_path):
    """PSR keeps 6 rows on rank 0 and 2 on rank 1, with mini_batch_size=4 per rank: one update
    of the 8 kept rows (a per-rank count made 2, the second scaled by 0.5); NSR keeps 2 and 6;
    GRPO (kl_coef 0.1) and PPO (critic, KL reward penalty, whitening over both ranks' tokens)
    keep all 16. Micro-batches of 3 rows; the gradients within 1e-5 of the 1-process ones."""
    spawn(mode, tmp_path / "grads.pt")
    two = torch.load(tmp_path / "grads.pt")
    for name, want in one_process.items():
        got = two[name]
        assert got["updates"] == want["updates"] == 1, name
        for part in ("policy", "critic"):
            if part in want:
                (g,), (w,) = got[part], want[part]
                assert rel_error(g, w) <= 1e-5, (name, part, rel_error(g, w))
