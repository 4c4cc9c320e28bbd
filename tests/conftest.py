import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Small settings that make one CLI step take seconds on 2 CPU cores.
FAST = [
    "trainer.max_steps=1",
    "trainer.enable_checkpointing=false",
    "data.batch_size=4",
    "data.num_heldout_problems=4",
    "rollout.n=4",
    "rollout.sampling.max_new_tokens=40",
    "callbacks.pass_at_k.n=4",
]


@pytest.fixture
def fast_overrides(tmp_path):
    return [*FAST, f"run_dir={tmp_path / 'run'}"]
