"""A stdio MCP server with the fixtures of the conformance suite's 2026-07-28 scenarios.

`@modelcontextprotocol/conformance` 0.2.x measures a server against the scenarios the
2026-07-28 revision requires (`--requirements 2026-07-28`). Each scenario calls
fixtures it names; this server provides them, written from the scenarios'
descriptions of what each fixture must do:

- content tools: `test_simple_text`, `test_image_content`, `test_audio_content`,
  `test_embedded_resource`, `test_multiple_content_types`, `test_error_handling`,
  `test_tool_with_progress` (progress 0, 50, 100 of 100 when the request carries a
  progress token);
- stateless-protocol probes: `test_missing_capability` (needs `sampling`; without it
  the call fails with -32021 and `requiredCapabilities: {"sampling": {}}`),
  `test_streaming_elicitation` (at 2026-07-28 answers with an InputRequiredResult,
  never with a request of its own on the response stream), `test_logging_tool` (logs three info messages, which the SDK
  delivers only when the request's `_meta` carries `io.modelcontextprotocol/logLevel`),
  `test_trigger_tool_change` and `test_trigger_prompt_change` (add or remove a tool /
  prompt and announce it on `subscriptions/listen` streams);
- multi-round-trip tools (SEP-2322), each answering its first call with an
  InputRequiredResult under fixed keys and completing once the retry carries the
  answers: `test_input_required_result_elicitation` (`user_name`), `..._sampling`
  (`capital_question`), `..._list_roots` (`client_roots`), `..._request_state`
  (`confirm`, plus a requestState it checks: the result says "state-ok"),
  `..._multiple_inputs` (`user_name`, `greeting`, `client_roots`), `..._multi_round`
  (`step1`, then `step2` with a new requestState), `..._tampered_state`,
  `..._capabilities` (asks only for what the request's client capabilities allow);
  and the prompt `test_input_required_result_prompt` (`user_context`);
- resources `test://static-text`, `test://static-binary`, the template
  `test://template/{id}/data` (an unknown URI fails with -32602 and `data.uri`);
- prompts `test_simple_prompt`, `test_prompt_with_arguments`,
  `test_prompt_with_embedded_resource`, `test_prompt_with_image`, and completion for
  the arguments of `test_prompt_with_arguments`;
- caching hints (`ttlMs`, `cacheScope`) on every cacheable result;
- for the unscored `json-schema-2020-12` scenario, `json_schema_2020_12_tool`, whose
  input schema keeps `$schema`, `$defs` (with an `$anchor`), `allOf`/`anyOf`,
  `if`/`then`/`else` and `additionalProperties`.

Written with `MCPServer` from the Python MCP SDK 2.x, so run it with the 2.x venv:

    .testdeps/py-mcp2/bin/python tests/conformance/fixture_server_modern.py

The SDK's stdio loop picks the era from the first request: one carrying the
2026-07-28 `_meta` envelope (`server/discover` from a gateway, say) makes this a
stateless 2026-07-28 server; an `initialize` makes it a session-era one. The
interactive fixtures work in both: at 2026-07-28 they answer with an
InputRequiredResult and finish on the client's retry; in the session era they send
each question to the client as an `elicitation/create`, `sampling/createMessage` or
`roots/list` request mid-call (same questions and texts; a round's questions all at
once), which is what a gateway bridging session-era backends to stateless clients
has to turn into InputRequiredResults itself. `requestState` values are sealed by the SDK (AES-GCM
under a key made when the process starts, bound to the request), so a modified one is
rejected with -32602 and a retry must reach the same process.

`server` is importable, so the same fixtures can be served over Streamable HTTP by the
SDK itself to tell fixture bugs from gateway bugs. stdout carries only MCP messages;
logs go to stderr.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import struct
import sys
import warnings
import zlib
from collections.abc import Callable
from typing import Annotated, Any

import anyio
from mcp.server.caching import CacheHint
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.prompts.base import Message, UserMessage
from mcp.server.mcpserver.tools import Tool
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    AudioContent,
    CallToolResult,
    Completion,
    CompletionArgument,
    CreateMessageResult,
    ElicitResult,
    EmbeddedResource,
    ImageContent,
    InputRequest,
    InputRequiredResult,
    ListRootsResult,
    PromptReference,
    TextContent,
    TextResourceContents,
)
from mcp_types.methods import CACHEABLE_METHODS
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field, TypeAdapter

# ctx.info() and friends are deprecated at 2026-07-28 (SEP-2577) but still the way a
# tool logs; the warning would only clutter stderr.
warnings.filterwarnings("ignore", message=r".*deprecated as of 2026-07-28.*")

log = logging.getLogger("conformance-fixture-modern")

SERVER_NAME = "mcpgate-conformance-fixture-modern"
SERVER_VERSION = "1.0.0"

# Every list and read here is the same for every caller: cacheable by anyone for a minute.
CACHE_HINT = CacheHint(ttl_ms=60_000, scope="public")

# ---- a tool whose input schema is written by hand -------------------------------------
# `MCPServer` derives input schemas from signatures; the (unscored, pending)
# json-schema-2020-12 scenario wants one that keeps its 2020-12 keywords, so this
# tool's registration carries the schema as written. Arguments are still checked
# against the signature.

SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "postalAddress",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "reachBy": {"type": "string", "enum": ["email", "phone"]},
        "email": {"type": "string"},
        "phone": {"type": "string"},
    },
    # Some way to reach the person: the email address when reachBy says "email", else a phone.
    "allOf": [{"anyOf": [{"required": ["email"]}, {"required": ["phone"]}]}],
    "if": {"required": ["reachBy"], "properties": {"reachBy": {"const": "email"}}},
    "then": {"required": ["email"]},
    "else": {"required": ["phone"]},
    "additionalProperties": False,
}


def json_schema_2020_12_tool(
    name: str | None = None,
    address: dict[str, Any] | None = None,
    reachBy: str | None = None,  # noqa: N803 (wire name)
    email: str | None = None,
    phone: str | None = None,
) -> CallToolResult:
    given = {"name": name, "address": address, "reachBy": reachBy, "email": email, "phone": phone}
    received = {k: v for k, v in given.items() if v is not None}
    text = f"json_schema_2020_12_tool received: {json.dumps(received, sort_keys=True)}"
    return CallToolResult(content=[TextContent(type="text", text=text)])


_schema_tool = Tool.from_function(json_schema_2020_12_tool, description="Tool with JSON Schema 2020-12 features")
_schema_tool.parameters = SCHEMA_2020_12

server = MCPServer(
    SERVER_NAME,
    version=SERVER_VERSION,
    instructions="Fixtures for the MCP conformance suite's 2026-07-28 server scenarios.",
    tools=[_schema_tool],
    cache_hints={method: CACHE_HINT for method in CACHEABLE_METHODS},  # type: ignore[misc]
    log_level=os.environ.get("FIXTURE_LOG_LEVEL", "WARNING").upper(),  # type: ignore[arg-type]
)

# ---- binary payloads, built rather than pasted ---------------------------------------


def _png_1x1_red() -> bytes:
    """A valid 1x1 RGB PNG holding one red pixel."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit, truecolour
    pixels = zlib.compress(b"\x00\xff\x00\x00")  # filter byte 0, then R G B
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def _wav_silence(samples: int = 800, rate: int = 8000) -> bytes:
    """A valid mono 8-bit PCM WAV: 0.1 s of silence."""
    data = b"\x80" * samples
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate, 1, 8)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


PNG = _png_1x1_red()
PNG_B64 = base64.b64encode(PNG).decode()
WAV_B64 = base64.b64encode(_wav_silence()).decode()


def _text(text: str) -> TextContent:
    return TextContent(type="text", text=text)


def _image() -> ImageContent:
    return ImageContent(type="image", data=PNG_B64, mime_type="image/png")


def _result(*content: Any, is_error: bool = False) -> CallToolResult:
    return CallToolResult(content=list(content), is_error=is_error)


# ---- content tools ---------------------------------------------------------------------


@server.tool(description="Returns a fixed text content block.")
def test_simple_text() -> CallToolResult:
    return _result(_text("This is a simple text response for testing."))


@server.tool(description="Returns a 1x1 red PNG image content block.")
def test_image_content() -> CallToolResult:
    return _result(_image())


@server.tool(description="Returns a short silent WAV audio content block.")
def test_audio_content() -> CallToolResult:
    return _result(AudioContent(type="audio", data=WAV_B64, mime_type="audio/wav"))


@server.tool(description="Returns an embedded text resource.")
def test_embedded_resource() -> CallToolResult:
    resource = TextResourceContents(
        uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."
    )
    return _result(EmbeddedResource(type="resource", resource=resource))


@server.tool(description="Returns text, image and embedded resource content together.")
def test_multiple_content_types() -> CallToolResult:
    resource = TextResourceContents(
        uri="test://mixed-content-resource",
        mime_type="application/json",
        text=json.dumps({"test": "data", "value": 123}, separators=(",", ":")),
    )
    return _result(
        _text("Multiple content types test:"), _image(), EmbeddedResource(type="resource", resource=resource)
    )


@server.tool(description="Always fails: the result has isError set.")
def test_error_handling() -> CallToolResult:
    return _result(_text("This tool intentionally returns an error for testing"), is_error=True)


@server.tool(description="Reports progress 0, 50 and 100 of 100 about 50 ms apart, then returns.")
async def test_tool_with_progress(ctx: Context) -> CallToolResult:
    for step, progress in enumerate((0, 50, 100)):
        if step:
            await anyio.sleep(0.05)
        # A no-op when the request carried no progress token.
        await ctx.report_progress(progress, 100, f"step {step + 1} of 3")
    return _result(_text("Tool with progress executed successfully"))


# ---- client capabilities ------------------------------------------------------------------


def _declared(ctx: Context, capability: str) -> bool:
    """Whether the request's client declared `capability` (at 2026-07-28 the capabilities
    come with each request, in `_meta["io.modelcontextprotocol/clientCapabilities"]`)."""
    capabilities = ctx.client_capabilities
    return capabilities is not None and getattr(capabilities, capability, None) is not None


def _require(ctx: Context, *capabilities: str) -> None:
    """Fails the request with -32021 unless the client declared every capability."""
    missing = [c for c in capabilities if not _declared(ctx, c)]
    if missing:
        raise MCPError(
            code=MISSING_REQUIRED_CLIENT_CAPABILITY,
            message=f"This request needs the client capabilities {missing}, which it did not declare",
            data={"requiredCapabilities": {c: {} for c in missing}},
        )


# ---- input requests and responses ------------------------------------------------------
#
# Each interactive fixture is written once, as a *step*: a function of the answers and
# the state it has so far that either finishes (a result) or asks for more (`Ask`).
# `_rounds` runs a step in the era of the connection: at 2026-07-28 an `Ask` becomes an
# InputRequiredResult and the client's retry brings the answers; in the session era
# each question goes to the client as a request of its own, mid-call, and the step runs
# again with the answers, so a gateway bridging session-era backends to stateless
# clients has something to bridge.


class Ask:
    """What a step still needs: input requests by key, and the state to carry along."""

    def __init__(self, requests: dict[str, dict[str, Any]], state: dict[str, Any] | None = None) -> None:
        self.requests = requests
        self.state = state


def _ask_form(message: str, field: str, kind: str = "string") -> dict[str, Any]:
    """An `elicitation/create` input request for a form with one required field."""
    return {
        "method": "elicitation/create",
        "params": {
            "mode": "form",
            "message": message,
            "requestedSchema": {"type": "object", "properties": {field: {"type": kind}}, "required": [field]},
        },
    }


def _ask_model(text: str, max_tokens: int) -> dict[str, Any]:
    """A `sampling/createMessage` input request with one user message."""
    return {
        "method": "sampling/createMessage",
        "params": {
            "messages": [{"role": "user", "content": {"type": "text", "text": text}}],
            "maxTokens": max_tokens,
        },
    }


ASK_ROOTS: dict[str, Any] = {"method": "roots/list", "params": {}}

_INPUT_REQUEST = TypeAdapter(InputRequest)
_ANSWER_TYPES: dict[str, type[Any]] = {
    "elicitation/create": ElicitResult,
    "sampling/createMessage": CreateMessageResult,
    "roots/list": ListRootsResult,
}

# A step gets the context, the answers by key, and the state (None on the first round).
Step = Callable[[Context, dict[str, Any], "dict[str, Any] | None"], Any]


def _input_required(ask: Ask) -> InputRequiredResult:
    """The InputRequiredResult for `ask`; its state (plain JSON here) is sealed by the
    SDK on the way out and unsealed, after verification, on the retry."""
    wire: dict[str, Any] = {"resultType": "input_required", "inputRequests": ask.requests}
    if ask.state is not None:
        wire["requestState"] = json.dumps(ask.state, separators=(",", ":"), sort_keys=True)
    return InputRequiredResult.model_validate(wire)


def _echoed_state(ctx: Context) -> dict[str, Any] | None:
    """The requestState the retry echoed, as this server minted it (the SDK has already
    rejected anything it did not seal); None when the retry carried none."""
    if ctx.request_state is None:
        return None
    try:
        state = json.loads(ctx.request_state)
    except ValueError:
        state = None
    return state if isinstance(state, dict) else {"unreadable": ctx.request_state}


async def _ask_directly(ctx: Context, request: dict[str, Any]) -> Any:
    """Session era: send one input request to the client as a request of its own."""
    typed = _INPUT_REQUEST.validate_python(request)
    return await ctx.session.send_request(
        typed,  # type: ignore[arg-type]
        _ANSWER_TYPES[request["method"]],
        metadata=ServerMessageMetadata(related_request_id=ctx.request_context.request_id),
    )


async def _ask_all_directly(ctx: Context, requests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Session era: send a round's input requests to the client all at once (as a
    multi-input round would go out at 2026-07-28) and wait for every answer. A refused
    request fails the call with the client's error."""
    answers: dict[str, Any] = {}
    errors: list[MCPError] = []

    async def ask(key: str, request: dict[str, Any]) -> None:
        try:
            answers[key] = await _ask_directly(ctx, request)
        except MCPError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as group:
        for key, request in requests.items():
            group.start_soon(ask, key, request)
    if errors:
        raise errors[0]
    return answers


async def _rounds(ctx: Context, step: Step) -> Any:
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        outcome = step(ctx, dict(ctx.input_responses or {}), _echoed_state(ctx))
        return _input_required(outcome) if isinstance(outcome, Ask) else outcome
    answers: dict[str, Any] = {}
    state: dict[str, Any] | None = None
    for _ in range(8):
        outcome = step(ctx, answers, state)
        if not isinstance(outcome, Ask):
            return outcome
        answers = await _ask_all_directly(ctx, outcome.requests)
        state = outcome.state
    raise MCPError(code=INTERNAL_ERROR, message="the fixture kept asking for input")


def _form_value(answer: Any, field: str) -> str | None:
    """The value of `field` in an accepted elicitation answer, as text; None when the
    answer is missing, not an elicitation result, declined, or lacks the field."""
    if not isinstance(answer, ElicitResult) or answer.action != "accept" or not answer.content:
        return None
    value = answer.content.get(field)
    if value is None or isinstance(value, list):
        return None
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _declined(answer: Any) -> str | None:
    """"decline" or "cancel" when the answer is an elicitation the user did not accept."""
    if isinstance(answer, ElicitResult) and answer.action != "accept":
        return answer.action
    return None


def _model_text(answer: Any) -> str | None:
    """The text of a sampling answer; None when the answer is not one."""
    if not isinstance(answer, CreateMessageResult):
        return None
    content = answer.content
    return content.text if isinstance(content, TextContent) else json.dumps(content.model_dump(mode="json"))


def _root_uris(answer: Any) -> list[str] | None:
    """The root URIs of a roots/list answer; None when the answer is not one."""
    if not isinstance(answer, ListRootsResult):
        return None
    return [str(root.uri) for root in answer.roots]


# ---- multi-round-trip tools (SEP-2322) ----------------------------------------------------

ASK_NAME = _ask_form("What is your name?", "name")


def _greet(ctx: Context, answers: dict[str, Any], state: dict[str, Any] | None) -> Any:
    answer = answers.get("user_name")
    if (action := _declined(answer)) is not None:
        return _result(_text(f"No name given (the user chose {action})."))
    name = _form_value(answer, "name")
    if name is None:
        # First call, or a retry without a usable user_name answer: ask (again).
        return Ask({"user_name": ASK_NAME})
    return _result(_text(f"Hello, {name}!"))


@server.tool(description="Asks for the user's name (elicitation, key user_name) and greets them.")
async def test_input_required_result_elicitation(ctx: Context) -> CallToolResult | InputRequiredResult:
    _require(ctx, "elicitation")
    return await _rounds(ctx, _greet)


def _capital(ctx: Context, answers: dict[str, Any], state: dict[str, Any] | None) -> Any:
    reply = _model_text(answers.get("capital_question"))
    if reply is None:
        return Ask({"capital_question": _ask_model("What is the capital of France?", 100)})
    return _result(_text(f"The model answered: {reply}"))


@server.tool(description="Asks the client's model a question (sampling, key capital_question) and returns its answer.")
async def test_input_required_result_sampling(ctx: Context) -> CallToolResult | InputRequiredResult:
    _require(ctx, "sampling")
    return await _rounds(ctx, _capital)


def _roots(ctx: Context, answers: dict[str, Any], state: dict[str, Any] | None) -> Any:
    uris = _root_uris(answers.get("client_roots"))
    if uris is None:
        return Ask({"client_roots": ASK_ROOTS})
    return _result(_text(f"The client has {len(uris)} root(s): {', '.join(uris) or '(none)'}"))


@server.tool(description="Asks the client for its roots (roots/list, key client_roots) and lists them.")
async def test_input_required_result_list_roots(ctx: Context) -> CallToolResult | InputRequiredResult:
    _require(ctx, "roots")
    return await _rounds(ctx, _roots)


CONFIRM_STATE = {"tool": "test_input_required_result_request_state", "step": "confirm"}


def _confirm_with_state(ctx: Context, answers: dict[str, Any], state: dict[str, Any] | None) -> Any:
    ok = _form_value(answers.get("confirm"), "ok")
    if ok is None or state != CONFIRM_STATE:
        # No answer yet, or the retry lost (or never had) the state this call depends on.
        return Ask({"confirm": _ask_form("Please confirm", "ok", "boolean")}, CONFIRM_STATE)
    return _result(_text(f"state-ok: the requestState came back intact; confirmed={ok}"))


@server.tool(
    description="Asks for a confirmation (key confirm) with a requestState, and checks the state on the retry."
)
async def test_input_required_result_request_state(ctx: Context) -> CallToolResult | InputRequiredResult:
    _require(ctx, "elicitation")
    return await _rounds(ctx, _confirm_with_state)


def _three_inputs(ctx: Context, answers: dict[str, Any], state: dict[str, Any] | None) -> Any:
    # Answers from an earlier round travel in the state, so each round asks only for
    # what is still missing.
    known = dict((state or {}).get("known", {}))
    if "name" not in known and (name := _form_value(answers.get("user_name"), "name")) is not None:
        known["name"] = name
    if "greeting" not in known and (greeting := _model_text(answers.get("greeting"))) is not None:
        known["greeting"] = greeting
    if "roots" not in known and (roots := _root_uris(answers.get("client_roots"))) is not None:
        known["roots"] = roots
    wanted: dict[str, dict[str, Any]] = {}
    if "name" not in known:
        wanted["user_name"] = ASK_NAME
    if "greeting" not in known:
        wanted["greeting"] = _ask_model("Generate a greeting", 50)
    if "roots" not in known:
        wanted["client_roots"] = ASK_ROOTS
    if wanted:
        return Ask(wanted, {"tool": "test_input_required_result_multiple_inputs", "known": known})
    return _result(_text(f"{known['greeting']} {known['name']} (with {len(known['roots'])} root(s))"))


@server.tool(
    description="Asks for a name, a model-written greeting and the client's roots in one round (three keys)."
)
async def test_input_required_result_multiple_inputs(ctx: Context) -> CallToolResult | InputRequiredResult:
    _require(ctx, "elicitation", "sampling", "roots")
    return await _rounds(ctx, _three_inputs)


def _two_rounds(ctx: Context, answers: dict[str, Any], state: dict[str, Any] | None) -> Any:
    name = (state or {}).get("name") if (state or {}).get("round") == 2 else None
    if name is None:
        name = _form_value(answers.get("step1"), "name")
        if name is None:
            return Ask({"step1": _ask_form("Step 1: What is your name?", "name")}, {"round": 1})
    colour = _form_value(answers.get("step2"), "color")
    if colour is None:
        # The name travels in the (sealed) state, so the next round needs no memory here.
        return Ask({"step2": _ask_form("Step 2: What is your favorite color?", "color")}, {"round": 2, "name": name})
    return _result(_text(f"{name}'s favorite color is {colour}."))


@server.tool(description="Asks two questions in two rounds (step1: name, step2: colour), carrying state between them.")
async def test_input_required_result_multi_round(ctx: Context) -> CallToolResult | InputRequiredResult:
    _require(ctx, "elicitation")
    return await _rounds(ctx, _two_rounds)


TAMPER_STATE = {"tool": "test_input_required_result_tampered_state"}


def _confirm_untampered(ctx: Context, answers: dict[str, Any], state: dict[str, Any] | None) -> Any:
    # A tampered state never reaches this point at 2026-07-28: the SDK fails its
    # verification first (-32602). A readable but foreign one is refused here the same way.
    if state is not None and state != TAMPER_STATE:
        raise MCPError(code=INVALID_PARAMS, message="requestState failed verification")
    ok = _form_value(answers.get("confirm"), "ok")
    if ok is None or state is None:
        return Ask({"confirm": _ask_form("Please confirm", "ok", "boolean")}, TAMPER_STATE)
    return _result(_text(f"Confirmed ({ok}); the requestState verified."))


@server.tool(description="Asks for a confirmation with an integrity-protected requestState; a modified one is refused.")
async def test_input_required_result_tampered_state(ctx: Context) -> CallToolResult | InputRequiredResult:
    _require(ctx, "elicitation")
    return await _rounds(ctx, _confirm_untampered)


def _within_capabilities(ctx: Context, answers: dict[str, Any], state: dict[str, Any] | None) -> Any:
    usable = [c for c in ("elicitation", "sampling") if _declared(ctx, c)]
    wanted: dict[str, dict[str, Any]] = {}
    got: list[str] = []
    if "elicitation" in usable:
        name = _form_value(answers.get("user_name"), "name")
        if name is None:
            wanted["user_name"] = ASK_NAME
        else:
            got.append(f"name={name}")
    if "sampling" in usable:
        reply = _model_text(answers.get("summary"))
        if reply is None:
            wanted["summary"] = _ask_model("Summarize the capabilities you declared in one sentence.", 50)
        else:
            got.append(f"summary={reply}")
    if wanted:
        return Ask(wanted)
    return _result(_text(f"Used only the declared capabilities {usable}: {'; '.join(got)}"))


@server.tool(
    description="Asks the user (elicitation) and the model (sampling) for input, but only through the "
    "capabilities the request's client declared."
)
async def test_input_required_result_capabilities(ctx: Context) -> CallToolResult | InputRequiredResult:
    if not any(_declared(ctx, c) for c in ("elicitation", "sampling")):
        _require(ctx, "sampling")
    return await _rounds(ctx, _within_capabilities)


# ---- stateless-protocol probes (SEP-2575) ----------------------------------------------


def _probe_model(ctx: Context, answers: dict[str, Any], state: dict[str, Any] | None) -> Any:
    reply = _model_text(answers.get("probe"))
    if reply is None:
        return Ask({"probe": _ask_model("Reply with any short text.", 20)})
    return _result(_text(f"The client's model answered: {reply}"))


@server.tool(description="Needs the client's sampling capability; without it the call fails with -32021.")
async def test_missing_capability(ctx: Context) -> CallToolResult | InputRequiredResult:
    _require(ctx, "sampling")
    return await _rounds(ctx, _probe_model)


def _proceed(ctx: Context, answers: dict[str, Any], state: dict[str, Any] | None) -> Any:
    ok = _form_value(answers.get("proceed"), "ok")
    if ok is None:
        return Ask({"proceed": _ask_form("Proceed?", "ok", "boolean")})
    return _result(_text(f"Streaming elicitation answered: ok={ok}"))


@server.tool(
    description="Asks for a confirmation through elicitation: at 2026-07-28 an InputRequiredResult on the "
    "request's own response, never a request of its own on the stream."
)
async def test_streaming_elicitation(ctx: Context) -> CallToolResult | InputRequiredResult:
    _require(ctx, "elicitation")
    await ctx.report_progress(0, 1, "asking")  # only with a progress token
    return await _rounds(ctx, _proceed)


@server.tool(
    description="Logs three info messages, then returns; at 2026-07-28 they are sent only when the request "
    "asked for them (_meta io.modelcontextprotocol/logLevel)."
)
async def test_logging_tool(ctx: Context) -> CallToolResult:
    for message in ("Logging tool started", "Logging tool working", "Logging tool finished"):
        await ctx.info(message, logger_name="conformance-fixture")
    return _result(_text("Logging tool executed successfully"))


def _extra_tool() -> CallToolResult:
    return _result(_text("This tool comes and goes with test_trigger_tool_change."))


def _extra_prompt() -> str:
    return "This prompt comes and goes with test_trigger_prompt_change."


EXTRA_TOOL, EXTRA_PROMPT = "test_toggled_tool", "test_toggled_prompt"


@server.tool(description=f"Adds or removes the tool {EXTRA_TOOL} and announces the tools list change.")
async def test_trigger_tool_change(ctx: Context) -> CallToolResult:
    names = {tool.name for tool in await server.list_tools()}
    if EXTRA_TOOL in names:
        server.remove_tool(EXTRA_TOOL)
        change = "removed"
    else:
        server.add_tool(_extra_tool, name=EXTRA_TOOL, description="Appears and disappears with each trigger.")
        change = "added"
    await ctx.notify_tools_changed()
    return _result(_text(f"{EXTRA_TOOL} {change}; tools list change announced"))


@server.tool(description=f"Adds or removes the prompt {EXTRA_PROMPT} and announces the prompts list change.")
async def test_trigger_prompt_change(ctx: Context) -> CallToolResult:
    names = {prompt.name for prompt in await server.list_prompts()}
    if EXTRA_PROMPT in names:
        server.remove_prompt(EXTRA_PROMPT)
        change = "removed"
    else:
        server.prompt(name=EXTRA_PROMPT, description="Appears and disappears with each trigger.")(_extra_prompt)
        change = "added"
    await ctx.notify_prompts_changed()
    return _result(_text(f"{EXTRA_PROMPT} {change}; prompts list change announced"))


# ---- resources -------------------------------------------------------------------------


@server.resource("test://static-text", name="static-text", description="A static text resource", mime_type="text/plain")
def static_text() -> str:
    return "This is the content of the static text resource."


@server.resource(
    "test://static-binary",
    name="static-binary",
    description="A static binary resource (a 1x1 PNG)",
    mime_type="image/png",
)
def static_binary() -> bytes:
    return PNG


@server.resource(
    "test://template/{id}/data",
    name="template-data",
    description="JSON data for the given id",
    mime_type="application/json",
)
def template_data(id: str) -> str:
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"}, separators=(",", ":"))


# ---- prompts ---------------------------------------------------------------------------


@server.prompt(description="A prompt without arguments")
def test_simple_prompt() -> list[Message]:
    return [UserMessage("This is a simple prompt for testing.")]


@server.prompt(description="A prompt that substitutes two arguments")
def test_prompt_with_arguments(
    arg1: Annotated[str, Field(description="First test argument")],
    arg2: Annotated[str, Field(description="Second test argument")],
) -> list[Message]:
    return [UserMessage(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")]


@server.prompt(description="A prompt that embeds a resource")
def test_prompt_with_embedded_resource(
    resourceUri: Annotated[str, Field(description="URI of the resource to embed")],  # noqa: N803 (wire name)
) -> list[Message]:
    resource = TextResourceContents(
        uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
    )
    return [
        UserMessage(EmbeddedResource(type="resource", resource=resource)),
        UserMessage("Please process the embedded resource above."),
    ]


@server.prompt(description="A prompt that carries an image")
def test_prompt_with_image() -> list[Message]:
    return [UserMessage(_image()), UserMessage("Please analyze the image above.")]


def _with_context(ctx: Context, answers: dict[str, Any], state: dict[str, Any] | None) -> Any:
    context = _form_value(answers.get("user_context"), "context")
    if context is None:
        return Ask({"user_context": _ask_form("What context should the prompt use?", "context")})
    return [UserMessage(f"Answer with this context in mind: {context}")]


@server.prompt(description="Asks the user for context (elicitation, key user_context) before it renders")
async def test_input_required_result_prompt(ctx: Context) -> list[Message] | InputRequiredResult:
    _require(ctx, "elicitation")
    return await _rounds(ctx, _with_context)


# ---- completion ------------------------------------------------------------------------

COMPLETIONS = {"arg1": ["paris", "park", "party", "test", "testing"], "arg2": ["world", "word", "work"]}


@server.completion()
async def complete(ref: Any, argument: CompletionArgument, context: Any) -> Completion:
    values: list[str] = []
    if isinstance(ref, PromptReference) and ref.name == "test_prompt_with_arguments":
        values = [v for v in COMPLETIONS.get(argument.name, []) if v.startswith(argument.value)]
    return Completion(values=values, total=len(values), has_more=False)


if __name__ == "__main__":
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("FIXTURE_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        server.run("stdio")
    except KeyboardInterrupt:
        pass
