"""Prompt templates: how a problem becomes the token ids the policy sees, chosen by name in config.

- ``chat``: the model's own chat template, one user turn holding the problem as is.
- ``qwen25_math``: the paper's prompt for Qwen2.5-Math (Qwen chat format, system
  "You are a helpful assistant.", the problem followed by the boxed-answer instruction).
- ``qwen3_nonthinking``: the same with an empty think block opening the assistant turn
  (Qwen3 in non-thinking mode).
- any string containing ``{problem}``: a custom template, used as is.

The Qwen texts are written out here (not taken from a tokenizer) so that they are the same
whatever tokenizer version is installed; they tokenise without extra special tokens.
"""

from __future__ import annotations

from nsr_lightning.errors import UserError

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
_QWEN = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n{problem}\n" + INSTRUCTION.replace("{}", "{{}}") + "<|im_end|>\n"
    "<|im_start|>assistant\n"
)
TEXT_TEMPLATES = {"qwen25_math": _QWEN, "qwen3_nonthinking": _QWEN + "<think>\n\n</think>\n\n"}
TEMPLATES = ("chat", *TEXT_TEMPLATES)


def render_prompt(question: str, template: str) -> str:
    """The prompt text of a text template (every template but ``chat``)."""
    text = TEXT_TEMPLATES.get(template)
    if text is None:
        if "{problem}" not in template:
            raise UserError(
                f"data.template must be one of {', '.join(TEMPLATES)} or a string containing "
                f"{{problem}}; got {template!r}"
            )
        return template.replace("{problem}", question)
    return text.format(problem=question)


def build_prompt(tokenizer, question: str, template: str = "chat") -> list[int]:
    """Token ids of the prompt for `question`, ending where the model's answer starts."""
    if template == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise UserError("data.template=chat but the tokenizer has no chat template")
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers >= 5 returns a BatchEncoding
            ids = ids["input_ids"]
        return list(ids)
    return list(tokenizer(render_prompt(question, template), add_special_tokens=False)["input_ids"])
