"""Turn a neutral request into the token ids the model sees."""

from __future__ import annotations

from dataclasses import dataclass

from backends.base import GenerationRequest
from backends.errors import InvalidRequest
from backends.llama_cpp.chat_template import ChatTemplate
from backends.llama_cpp.native import Model


@dataclass(frozen=True, slots=True)
class PromptTokens:
    tokens: list[int]
    echo_text: str = ""  # what echo returns: the prompt as the client wrote it
    echo_from: int = 0  # tokens before this index were added (BOS), not written


def build_prompt(
    model: Model, request: GenerationRequest, template: ChatTemplate | None, model_id: str
) -> PromptTokens:
    if request.is_chat:
        if template is None:
            raise InvalidRequest(
                f"Model '{model_id}' has no chat template: its GGUF declares none. Set "
                "chat_template (or chat_template_file) in its [models.options], or use "
                "/v1/completions.",
                "messages",
            )
        text = template.render(request.messages)
        return PromptTokens(model.tokenize(text, add_special=False, parse_special=True))
    if request.suffix is not None:
        return _fill_in_the_middle(model, request, model_id)
    if isinstance(request.prompt, str):
        tokens = model.tokenize(request.prompt, add_special=True, parse_special=True)
        bare = model.tokenize(request.prompt, add_special=False, parse_special=True)
        echo_from = len(tokens) - len(bare) if tokens[-len(bare) :] == bare or not bare else 0
        prompt = PromptTokens(tokens, request.prompt, echo_from)
    else:
        bad = next((t for t in request.prompt if not 0 <= t < model.n_vocab), None)
        if bad is not None:
            raise InvalidRequest(
                f"token id {bad} is outside this model's vocabulary (0..{model.n_vocab - 1})",
                "prompt",
            )
        tokens = list(request.prompt)
        prompt = PromptTokens(tokens, model.detokenize(tokens))
    if not prompt.tokens:
        # An empty prompt still needs one token to condition on.
        start = model.bos if model.bos >= 0 else model.eos
        return PromptTokens([start], prompt.echo_text, 1)
    return prompt


def _fill_in_the_middle(model: Model, request: GenerationRequest, model_id: str) -> PromptTokens:
    fim = model.fim_tokens()
    if fim is None:
        raise InvalidRequest(
            f"Model '{model_id}' does not support 'suffix' (fill-in-the-middle): its GGUF "
            "declares no FIM prefix/suffix/middle tokens. Use a code model that has them.",
            "suffix",
        )
    if not isinstance(request.prompt, str):
        raise InvalidRequest("'suffix' needs 'prompt' as a string", "prompt")
    prefix = model.tokenize(request.prompt, add_special=False, parse_special=False)
    suffix = model.tokenize(request.suffix or "", add_special=False, parse_special=False)
    # Prefix-suffix-middle order, as the FIM-trained models (and llama.cpp) use it.
    tokens = [fim.prefix, *prefix, fim.suffix, *suffix, fim.middle]
    return PromptTokens(tokens, request.prompt, len(tokens))
