"""OpenAI request schemas plus the `ponder` object (docs/api.md). Unknown top-level fields from
other tools are accepted and ignored; the `ponder` object itself is strict."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, create_model, model_validator

from ..answers.extract import Format
from ..strategies import OPTIONS, AdaptiveOptions

AnswerFormat = Format
"""answers.extract.FORMAT_RULES' names (checked equal by tests/unit/test_answers.py)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class AnswerOptions(_Strict):
    format: AnswerFormat = "auto"
    pattern: str | None = Field(None, max_length=1000)
    vote: Literal["object", "field"] = Field(
        "object", description="format json: vote on whole values, or on each field"
    )
    ignore_arguments: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="format tool_call: arguments that do not make a call another call",
    )

    @model_validator(mode="after")
    def _options_of_their_format(self) -> AnswerOptions:
        if self.vote == "field" and self.format != "json":
            raise ValueError("vote 'field' applies to format 'json'")
        if self.ignore_arguments and self.format != "tool_call":
            raise ValueError("ignore_arguments applies to format 'tool_call'")
        return self


class _PonderBase(_Strict):
    """The request's `ponder` object: the fields every strategy shares."""

    strategy: str | None = None
    samples: int | None = Field(None, ge=1)
    answer: AnswerOptions = Field(default_factory=AnswerOptions)
    include_candidates: bool = False
    adaptive: AdaptiveOptions | None = None


if TYPE_CHECKING:
    PonderOptions = _PonderBase
else:
    PonderOptions = create_model(
        "PonderOptions",
        __base__=_PonderBase,
        __doc__="The request's `ponder` object; each strategy's own block "
        "(`ponder.<key>`) is its options model, collected from the registry.",
        **{key: (model | None, None) for key, model in OPTIONS.items()},
    )


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    model: str = Field(..., min_length=1, max_length=256)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1, description="vLLM-style; 0 or -1 = off")
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=128)
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    stop: str | list[str] | None = None
    min_tokens: int = Field(0, ge=0, description="vLLM's: no end of generation before this")
    ignore_eos: bool = Field(False, description="vLLM's: generate to max_tokens")
    stream: bool = False
    stream_options: StreamOptions | None = None
    ponder: PonderOptions | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None


class JsonSchemaSpec(BaseModel):
    """`response_format.json_schema` (OpenAI's shape)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field("response", min_length=1, max_length=64)
    description: str | None = Field(None, max_length=1024)
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """`response_format`: plain text, any JSON object, or JSON valid against a schema."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("`json_schema` is given with, and only with, type 'json_schema'")
        return self


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = Field(None, max_length=4096)
    parameters: dict[str, Any] | None = None


class ToolSpec(BaseModel):
    """One of `tools` (OpenAI's shape: a function)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"] = "function"
    function: FunctionSpec


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(..., min_length=1)
    response_format: ResponseFormat | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


class CompletionRequest(_Common):
    prompt: str | list[str] | list[StrictInt] | list[list[StrictInt]]
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False


class ResponseInputItem(BaseModel):
    """One `input` item of /v1/responses: a message (`type` "message" or absent), its content
    a string or input/output text parts; an earlier `function_call` (`call_id`, `name`,
    `arguments`) or a `function_call_output` (`call_id`, `output`). Other item types
    (images, files, built-in tools' calls) are refused by name."""

    model_config = ConfigDict(extra="allow")

    type: str = "message"
    role: Literal["system", "developer", "user", "assistant"] | None = None
    content: str | list[ContentPart] | None = None
    call_id: str | None = Field(None, max_length=128)
    name: str | None = Field(None, max_length=64)
    arguments: str | None = None
    output: str | list[ContentPart] | None = None


class ResponseTool(BaseModel):
    """One of the Responses API's `tools`: a function, in its flat form (`name`,
    `description`, `parameters`, `strict`); built-in tools are refused by name."""

    model_config = ConfigDict(extra="forbid")

    type: str
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = Field(None, max_length=4096)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ResponseTextFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = "text"


class ResponseText(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: ResponseTextFormat = Field(default_factory=ResponseTextFormat)


class ResponsesRequest(BaseModel):
    """`POST /v1/responses` (OpenAI's Responses API, as vLLM serves it), run as the chat
    completion of its `instructions` and `input` messages; the `ponder` object as on chat."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    model: str = Field(..., min_length=1, max_length=256)
    input: str | list[ResponseInputItem]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stream: bool = False
    text: ResponseText | None = None
    previous_response_id: str | None = Field(None, max_length=128)
    store: bool | None = None
    metadata: dict[str, str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    ponder: PonderOptions | None = None


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error envelope: every error response has this body."""

    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error statuses a route can answer with."""
    return {s: {"model": ErrorResponse, "description": "OpenAI error envelope"} for s in statuses}


# ---------------------------------------------------------------- success bodies
# What render.py writes, published in /openapi.json so clients (and the fuzz tests' response
# checks) see the real shapes. Extra fields are allowed: OpenAI adds fields over time.


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int
    accepted_prediction_tokens: int
    rejected_prediction_tokens: int


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails


class TallyEntry(BaseModel):
    answer: str
    votes: int
    score: float
    share: float


class CandidateOut(BaseModel):
    """One sample (`include_candidates`), plus the strategy's own per-sample scores."""

    model_config = ConfigDict(extra="allow")

    index: int
    answer: str | None
    text: str
    tokens: int
    finish_reason: str
    mean_logprob: float
    self_certainty: float
    pruned: bool


class Timing(BaseModel):
    queue_s: float
    generate_s: float
    select_s: float


class PonderMeta(BaseModel):
    """The `ponder` object (docs/api.md): present whenever a strategy other than `none` ran."""

    strategy: str
    samples: int
    generated: int
    answer: str | None
    confidence: float | None
    """null when the strategy has no measure of it (aggregate on a free-form answer)."""
    confidence_raw: float | None = None
    chosen: int
    tally: list[TallyEntry]
    unanswered: int
    exact: bool
    stopped: Literal["settled", "ceiling"] | None = None
    notes: dict[str, Any] | None = None
    usage: dict[str, dict[str, Any]] | None = None
    """The calls a strategy made after its samples (usc, aggregate, verify): "followup" (this
    model) and "verifier" (an external one), each with calls, prompt_tokens,
    completion_tokens (and failures). Their tokens are in `usage` too."""
    candidates: list[CandidateOut] | None = None
    timing: Timing


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[dict[str, Any]] | None = None


class ChatChoice(BaseModel):
    index: int
    finish_reason: str
    message: AssistantMessage
    logprobs: dict[str, Any] | None = None


class CompletionChoice(BaseModel):
    index: int
    finish_reason: str
    text: str
    logprobs: dict[str, Any] | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    ponder: PonderMeta | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    ponder: PonderMeta | list[PonderMeta] | None = None
    """With a batch of prompts, one `ponder` object per prompt, in prompt order."""


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None


class CompletionChunkChoice(BaseModel):
    index: int
    text: str
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed chat completion."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    ponder: dict[str, Any] | None = None
    """The final chunk's `PonderMeta`, or `{"progress": ...}` while samples finish."""


class CompletionChunk(BaseModel):
    """One server-sent event of a streamed completion."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChunkChoice]
    usage: Usage | None = None
    ponder: dict[str, Any] | None = None


class ResponseOutputText(BaseModel):
    type: Literal["output_text"]
    text: str
    annotations: list[Any]


class ResponseMessage(BaseModel):
    id: str
    type: Literal["message"]
    status: Literal["in_progress", "completed", "incomplete"]
    role: Literal["assistant"]
    content: list[ResponseOutputText]


class ResponseFunctionCall(BaseModel):
    """A `function_call` output item: the model calls one of the request's tools."""

    id: str
    type: Literal["function_call"]
    status: Literal["in_progress", "completed", "incomplete"]
    call_id: str
    name: str
    arguments: str


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: dict[str, int]
    output_tokens: int
    output_tokens_details: dict[str, int]
    total_tokens: int


class ResponseObject(BaseModel):
    """A `response` object of the Responses API, plus the `ponder` object."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, str] | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[ResponseMessage | ResponseFunctionCall]
    parallel_tool_calls: bool
    previous_response_id: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    text: dict[str, Any]
    tool_choice: str | dict[str, Any]
    tools: list[Any]
    truncation: str
    store: bool
    metadata: dict[str, str]
    usage: ResponseUsage | None = None
    ponder: PonderMeta | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    root: str
    ponder: dict[str, Any] | None = None
    """What the name does: strategy, samples and temperature (null: the request's or the
    server's default), and for an operator's alias its spec."""


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class TokenizeRequest(_Strict):
    """`POST /tokenize` (vLLM's shape): a raw `prompt`, or chat `messages` rendered with the
    model's template exactly as /v1/chat/completions renders them."""

    model: str | None = Field(None, max_length=256)
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(None, min_length=1)
    add_special_tokens: bool | None = Field(
        None, description="`prompt` only (default true): add the model's BOS where it wants one"
    )
    add_generation_prompt: Literal[True] = Field(
        True, description="`messages` only: the assistant turn is always opened"
    )
    return_token_strs: bool = False

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        if self.messages is not None and self.add_special_tokens is not None:
            raise ValueError(
                "add_special_tokens applies to prompt; with messages the chat template decides"
            )
        return self


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(_Strict):
    model: str | None = Field(None, max_length=256)
    tokens: list[StrictInt]


class DetokenizeResponse(BaseModel):
    prompt: str


class TokenizerInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    tokenizer_class: str
    bos_token: str | None
    eos_token: str | None
    pad_token: str | None
    chat_template: str | None
    model_max_length: int


class Status(BaseModel):
    status: str
    model: str | None = None


def _completion_responses(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "model": model,
            "description": "A completion (JSON), or server-sent events when `stream` is true",
            "content": {"text/event-stream": {}},
        },
        **error_responses(400, 401, 404, 413, 422, 429, 499, 500, 503, 504),
    }


CHAT_RESPONSES = _completion_responses(ChatCompletionResponse)
RESPONSES_RESPONSES = _completion_responses(ResponseObject)
RETRIEVE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": ResponseObject},
    **error_responses(401, 404, 413),
}
COMPLETION_RESPONSES = _completion_responses(CompletionResponse)
