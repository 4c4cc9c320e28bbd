"""build_batch, the one RolloutBatch builder of both engines, on hand-made samples."""

from types import SimpleNamespace

import torch

from nsr_lightning.rollout.batch import build_batch
from nsr_lightning.rollout.vllm import VLLMEngine

PAD, EOS, STOP = 0, 1, 2


class Tokenizer:
    """Decodes ids as space-separated numbers; checks special tokens are skipped."""

    def batch_decode(self, rows: list[list[int]], skip_special_tokens: bool) -> list[str]:
        assert skip_special_tokens
        return [" ".join(map(str, r)) for r in rows]


def test_hf_style_blocks_of_rows():
    responses = [
        torch.tensor([[4, 1, 6, 6], [4, 5, 6, 3]]),  # prompt 0: EOS second; no EOS
        torch.tensor([[1, 4, 4], [3, 2, 1]]),  # prompt 1: EOS first; the other stop id first
    ]
    b = build_batch(Tokenizer(), [[7, 8, 9], [5]], responses, 2, eos_ids=[EOS, STOP], pad_id=PAD)
    assert b.prompt_ids.tolist() == [[7, 8, 9], [7, 8, 9], [0, 0, 5], [0, 0, 5]]
    assert b.prompt_mask.tolist() == [[1, 1, 1], [1, 1, 1], [0, 0, 1], [0, 0, 1]]
    assert b.response_ids.tolist() == [[4, 1, 0, 0], [4, 5, 6, 3], [1, 0, 0, 0], [3, 2, 0, 0]]
    assert b.response_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]]
    assert b.truncated.tolist() == [False, True, False, False]
    assert b.group_ids.tolist() == [0, 0, 1, 1]
    assert b.texts == ["4 1", "4 5 6 3", "1", "3 2"]
    assert b.sampler_logprobs is None


def vllm_style():
    """Rows as vLLM returns them: each as long as its sample; one logprob per token."""
    ids = [[4, 5, 1], [4, 5, 6, 3], [6], [1]]
    logprobs = [[-0.1, -0.2, -0.3], [-0.1, -0.2, -0.3, -0.4], [-0.5], [-0.6]]
    return [[7], [8, 9]], ids, logprobs


def check_vllm_style(b):
    assert b.prompt_ids.tolist() == [[0, 7], [0, 7], [8, 9], [8, 9]]
    assert b.prompt_mask.tolist() == [[0, 1], [0, 1], [1, 1], [1, 1]]
    # row 2 is shorter than the padded width and has no EOS: its length ends it
    assert b.response_mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 0, 0, 0]]
    assert b.response_ids.tolist() == [[4, 5, 1, 0], [4, 5, 6, 3], [6, 0, 0, 0], [1, 0, 0, 0]]
    assert b.truncated.tolist() == [False, True, True, False]  # truncated: no EOS in the row
    assert b.texts == ["4 5 1", "4 5 6 3", "6", "1"]
    expected = torch.tensor(
        [[-0.1, -0.2, -0.3, 0], [-0.1, -0.2, -0.3, -0.4], [-0.5, 0, 0, 0], [-0.6, 0, 0, 0]]
    )
    assert b.sampler_logprobs.dtype == torch.float32 and torch.equal(b.sampler_logprobs, expected)


def test_vllm_style_rows_with_lengths():
    prompts, ids, logprobs = vllm_style()
    b = build_batch(
        Tokenizer(),
        prompts,
        [torch.tensor(r) for r in ids],
        2,
        eos_ids=[EOS],
        pad_id=PAD,
        lengths=[len(r) for r in ids],
        sampler_logprobs=[torch.tensor(r) for r in logprobs],
    )
    check_vllm_style(b)


def test_vllm_engine_to_batch_without_vllm():
    """The vLLM engine's path from its outputs to the batch (no vllm needed: outputs faked)."""
    prompts, ids, logprobs = vllm_style()
    samples = [
        SimpleNamespace(
            token_ids=r, logprobs=[{t: SimpleNamespace(logprob=lp)} for t, lp in zip(r, lps, strict=True)]
        )
        for r, lps in zip(ids, logprobs, strict=True)
    ]
    outputs = [SimpleNamespace(outputs=samples[:2]), SimpleNamespace(outputs=samples[2:])]
    engine = SimpleNamespace(tokenizer=Tokenizer(), pad_id=PAD, stop_ids=[EOS])
    check_vllm_style(VLLMEngine._to_batch(engine, prompts, outputs, 2))


def test_empty_sample_counts_nothing():
    """A sample of no tokens (vLLM's defensive case: one pad token, length 0) is all padding."""
    b = build_batch(
        Tokenizer(),
        [[7]],
        [torch.tensor([PAD]), torch.tensor([4, 1])],
        2,
        eos_ids=[EOS],
        pad_id=PAD,
        lengths=[0, 2],
    )
    assert b.response_mask.tolist() == [[0, 0], [1, 1]] and b.texts == ["", "4 1"]
    assert b.truncated.tolist() == [True, False]
