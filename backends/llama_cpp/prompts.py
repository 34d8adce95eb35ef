"""Turn a neutral request into the token ids the model sees."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from backends.base import GenerationRequest
from backends.errors import InvalidRequest, check_token_ids
from backends.llama_cpp.chat_template import ChatTemplate
from backends.llama_cpp.native import FimTokens, Model


@dataclass(frozen=True, slots=True)
class PromptTokens:
    tokens: list[int]
    echo_text: str = ""  # what echo returns: the prompt as the client wrote it
    echo_from: int = 0  # tokens before this index were added (BOS), not written


def build_prompt(
    model: Model,
    request: GenerationRequest,
    template: ChatTemplate | None,
    model_id: str,
    room: int | None = None,
) -> PromptTokens:
    """`room`: how many tokens the prompt may take (the context less the tokens to
    generate); only repository context for fill-in-the-middle is cut to fit it."""
    if request.is_chat:
        if template is None:
            raise InvalidRequest(
                f"Model '{model_id}' has no chat template: its GGUF declares none. Set "
                "chat_template (or chat_template_file) in its [models.options], or use "
                "/v1/completions.",
                "messages",
            )
        return PromptTokens(chat_tokens(model, request, template))
    if request.suffix is not None:
        return _fill_in_the_middle(model, request, model_id, room)
    if isinstance(request.prompt, str):
        tokens = model.tokenize(request.prompt, add_special=True, parse_special=True)
        # A BOS the vocabulary adds is not part of the echoed text.
        echo_from = 1 if model.add_bos and tokens[:1] == [model.bos] else 0
        prompt = PromptTokens(tokens, request.prompt, echo_from)
    else:
        check_token_ids(request.prompt, model.n_vocab, "prompt")
        tokens = list(request.prompt)
        prompt = PromptTokens(tokens, model.detokenize(tokens))
    if not prompt.tokens:
        # An empty prompt still needs one token to condition on.
        start = model.bos if model.bos >= 0 else model.eos
        return PromptTokens([start], prompt.echo_text, 1)
    return prompt


def tokens_at_least(model: Model, request: GenerationRequest) -> int:
    """A lower bound of the prompt's tokens from its text's size alone (no token stands
    for more than `max_token_bytes` bytes), cheap enough for the event loop."""
    texts = [m.content for m in request.messages]
    if isinstance(request.prompt, str):
        texts.append(request.prompt)
    if request.suffix:
        texts.append(request.suffix)
    n_bytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    return n_bytes // model.max_token_bytes()


def chat_tokens(model: Model, request: GenerationRequest, template: ChatTemplate) -> list[int]:
    """Only the template's own markup becomes control tokens: text in a message that
    spells one (`<|im_end|>`, say) is tokenised as the plain text it is, so a client
    cannot forge turns or roles. Conversations without such text tokenise exactly as
    the whole rendered prompt always did (llama.cpp's special-token pass included)."""
    specials = model.special_texts()
    messages = request.messages
    if any(s in (m.name or "") for m in messages for s in specials):
        raise InvalidRequest("a message 'name' contains a control token's text", "messages")
    tools = template_tools(request, template)
    if tools and any(s in json.dumps(tools, ensure_ascii=False) for s in specials):
        raise InvalidRequest("a tool's definition contains a control token's text", "tools")
    calls = [json.dumps(c.arguments) + c.name for m in messages for c in m.tool_calls]
    if any(s in text for text in calls for s in specials):
        raise InvalidRequest("a message's tool call contains a control token's text", "messages")
    if not any(s in m.content for m in messages for s in specials):
        return model.tokenize(
            template.render(messages, tools), add_special=False, parse_special=True
        )
    parts = template.render_parts(messages, tools)
    if parts is None:
        raise InvalidRequest(
            "a message contains a control token's text, and this model's chat template "
            "rewrites message text, so that text cannot be kept apart from the template's "
            "own markup; remove the control-token text from the messages",
            "messages",
        )
    return tokens_from_parts(model, parts)


def template_tools(
    request: GenerationRequest, template: ChatTemplate
) -> list[dict[str, Any]] | None:
    """The tools in OpenAI's shape, for a template that renders them itself and a
    request that lets the model choose (`auto`); None otherwise (the generic tools
    prompt of structured.py, or no tools)."""
    if not (template.supports_tools and request.tools and request.tool_choice.mode == "auto"):
        return None
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description or "",
                "parameters": dict(t.parameters) or {"type": "object"},
            },
        }
        for t in request.tools
    ]


def tokens_from_parts(model: Model, parts: list[tuple[str, bool]]) -> list[int]:
    """Tokenise a rendered prompt as llama.cpp's special-token pass would (split at
    control-token text, tokenise the text between), except that control-token text
    inside a message's part is left as text. Text runs across the markup/message
    boundaries, so the tokens there are the same as for the whole prompt."""
    specials = model.special_texts()
    pattern = re.compile("|".join(re.escape(s) for s in specials)) if specials else None
    ids: dict[str, int] = {}
    tokens: list[int] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            tokens.extend(model.tokenize("".join(run), add_special=False, parse_special=False))
            run.clear()

    for text, is_message in parts:
        if is_message or pattern is None:
            run.append(text)
            continue
        pos = 0
        for match in pattern.finditer(text):
            run.append(text[pos : match.start()])
            flush()
            special = match.group()
            if special not in ids:
                ids[special] = model.tokenize(special, add_special=False, parse_special=True)[0]
            tokens.append(ids[special])
            pos = match.end()
        run.append(text[pos:])
    flush()
    return tokens


def _fill_in_the_middle(
    model: Model, request: GenerationRequest, model_id: str, room: int | None = None
) -> PromptTokens:
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
    if request.context_files:
        extra = _repository_context(model, fim, request.context_files)
        if room is not None:
            # the newest chunks (last) are kept, as llama.cpp's server keeps them
            extra = extra[max(0, len(extra) - max(0, room - len(tokens))) :]
        tokens = [*extra, *tokens]
    return PromptTokens(tokens, request.prompt, len(tokens))


# "\n\n--- snippet ---\n\n": llama.cpp's chunk separator for models without a file
# separator token
SNIPPET_SEPARATOR = "\n\n--- snippet ---\n\n"


def _repository_context(
    model: Model, fim: FimTokens, files: tuple[tuple[str, str], ...]
) -> list[int]:
    """Other files' chunks laid out as llama.cpp's server lays out `input_extra`
    (format_infill): with the model's repo-name and file-separator tokens where it
    declares them (`<|repo_name|>myproject`, `<|file_sep|>name` before each chunk
    and `<|file_sep|>filename` before the FIM prefix), else a plain separator line."""

    def text(value: str) -> list[int]:
        return model.tokenize(value, add_special=False, parse_special=False)

    out: list[int] = []
    if fim.repo >= 0:
        out += [fim.repo, *text("myproject\n")]
    for filename, chunk in files:
        if fim.separator >= 0:
            out += [fim.separator, *text((filename or "tmp") + "\n")]
        else:
            out += text(SNIPPET_SEPARATOR)
        out += text(chunk)
    if fim.separator >= 0:
        out += [fim.separator, *text("filename\n")]
    return out
