"""The stdio MCP server behind `/mcp/conformance` in the conformance test.

It provides every fixture the server scenarios of the official conformance suite
(`@modelcontextprotocol/conformance`) call: the `test_*` tools, the `test://`
resources and the `test_*` prompts, plus logging/setLevel, resource
subscriptions and completion. Each fixture does what its scenario's description
asks (exact texts, 0/50/100 progress, three info log messages ~50 ms apart,
sampling and elicitation requests sent back to the client), so a scenario that
would also accept an `isError` "unknown tool" result is still really exercised.

Written with the low-level API of the Python MCP SDK 1.x, so every schema is
sent exactly as written here (the 2020-12 tool keeps `$schema`, `$defs`,
`additionalProperties`). stdout carries only MCP messages; logs go to stderr.

    .testdeps/py-mcp1/bin/python tests/conformance/fixture_server.py

`build_server()` is importable, so the same fixtures can be served over
Streamable HTTP by the SDK itself to tell fixture bugs from gateway bugs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import struct
import sys
import zlib
from typing import Any


def _bare_sdk_packages() -> None:
    """Registers the SDK's `mcp` and `mcp.server` packages without running their
    `__init__` files, which import the client and FastMCP (half the start-up time,
    about 0.5 s per session here). Their submodules import as usual. Does
    nothing when the SDK is already loaded (the fixtures imported by an HTTP
    wrapper, for instance)."""
    import importlib.util
    from types import ModuleType

    if "mcp" in sys.modules:
        return
    for name in ("mcp", "mcp.server"):
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            return
        package = ModuleType(name)
        package.__spec__ = spec
        package.__path__ = list(spec.submodule_search_locations)
        package.__file__ = spec.origin
        sys.modules[name] = package


for _bare in (True, False):
    try:
        if _bare:
            _bare_sdk_packages()
        import mcp.types as types
        from mcp.server.lowlevel import NotificationOptions, Server
        from mcp.server.lowlevel.helper_types import ReadResourceContents
        from mcp.server.stdio import stdio_server
        from mcp.shared.exceptions import McpError

        break
    except Exception:
        if not _bare:
            raise
        # A future SDK may need its package __init__ after all: load it normally.
        for _name in [m for m in sys.modules if m == "mcp" or m.startswith("mcp.")]:
            del sys.modules[_name]


log = logging.getLogger("conformance-fixture")

SERVER_NAME = "mcpgate-conformance-fixture"
SERVER_VERSION = "1.0.0"

# ---- binary payloads, built rather than pasted ------------------------------


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

# ---- tool definitions -------------------------------------------------------

NO_ARGS: dict[str, Any] = {"type": "object", "properties": {}}

JSON_SCHEMA_2020_12 = "https://json-schema.org/draft/2020-12/schema"


def _tool(name: str, description: str, schema: dict[str, Any] | None = None) -> types.Tool:
    return types.Tool(name=name, description=description, inputSchema=schema or NO_ARGS)


TOOLS: list[types.Tool] = [
    _tool("test_simple_text", "Returns a fixed text content block."),
    _tool("test_image_content", "Returns a 1x1 red PNG image content block."),
    _tool("test_audio_content", "Returns a short silent WAV audio content block."),
    _tool("test_embedded_resource", "Returns an embedded text resource."),
    _tool("test_multiple_content_types", "Returns text, image and embedded resource content together."),
    _tool("test_tool_with_logging", "Sends three info log notifications about 50 ms apart, then returns."),
    _tool("test_tool_with_progress", "Reports progress 0, 50 and 100 of 100 about 50 ms apart, then returns."),
    _tool("test_error_handling", "Always fails: the result has isError set."),
    _tool(
        "test_sampling",
        "Asks the client for an LLM completion (sampling/createMessage) and returns it.",
        {
            "type": "object",
            "properties": {"prompt": {"type": "string", "description": "The prompt to send to the LLM"}},
            "required": ["prompt"],
        },
    ),
    _tool(
        "test_elicitation",
        "Asks the user (elicitation/create) for a username and an email and returns the answer.",
        {
            "type": "object",
            "properties": {"message": {"type": "string", "description": "The message to show the user"}},
            "required": ["message"],
        },
    ),
    _tool(
        "test_elicitation_sep1034_defaults",
        "Elicits a form whose string, integer, number, enum and boolean fields carry defaults (SEP-1034).",
    ),
    _tool(
        "test_elicitation_sep1330_enums",
        "Elicits a form using each enum variant of SEP-1330 (titled, untitled, legacy, multi-select).",
    ),
    _tool(
        "json_schema_2020_12_tool",
        "Tool with JSON Schema 2020-12 features",
        {
            "$schema": JSON_SCHEMA_2020_12,
            "type": "object",
            "$defs": {
                "address": {
                    "type": "object",
                    "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
                }
            },
            "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
            "additionalProperties": False,
        },
    ),
    _tool(
        "test_reconnection",
        "Closes its own SSE stream mid-call when the transport allows it (SEP-1699), then returns.",
    ),
]

ELICIT_USER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "username": {"type": "string", "description": "User's response"},
        "email": {"type": "string", "description": "User's email address"},
    },
    "required": ["username", "email"],
}

ELICIT_DEFAULTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "Name", "default": "John Doe"},
        "age": {"type": "integer", "description": "Age", "default": 30},
        "score": {"type": "number", "description": "Score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "Status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verified", "default": True},
    },
}

ELICIT_ENUMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "untitledSingle": {
            "type": "string",
            "description": "Untitled single-select",
            "enum": ["option1", "option2", "option3"],
        },
        "titledSingle": {
            "type": "string",
            "description": "Titled single-select",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "description": "Legacy titled enum (enumNames)",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {
            "type": "array",
            "description": "Untitled multi-select",
            "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
        },
        "titledMulti": {
            "type": "array",
            "description": "Titled multi-select",
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    },
}

# Elicitation tools: (default message, requested schema, label of the result text).
# test_elicitation shows the message it is given instead.
ELICITATIONS: dict[str, tuple[str, dict[str, Any], str]] = {
    "test_elicitation": ("Please provide your information", ELICIT_USER_SCHEMA, "User response"),
    "test_elicitation_sep1034_defaults": (
        "Please review your details (defaults provided)",
        ELICIT_DEFAULTS_SCHEMA,
        "Elicitation completed",
    ),
    "test_elicitation_sep1330_enums": (
        "Please pick from these options",
        ELICIT_ENUMS_SCHEMA,
        "Elicitation completed",
    ),
}

# ---- resources and prompts --------------------------------------------------

STATIC_TEXT = "This is the content of the static text resource."
WATCHED_TEXT = "This is the content of the watched resource."

RESOURCES: list[types.Resource] = [
    types.Resource(
        uri="test://static-text",
        name="static-text",
        description="A static text resource",
        mimeType="text/plain",
    ),
    types.Resource(
        uri="test://static-binary",
        name="static-binary",
        description="A static binary resource (a 1x1 PNG)",
        mimeType="image/png",
    ),
    types.Resource(
        uri="test://watched-resource",
        name="watched-resource",
        description="A resource clients may subscribe to",
        mimeType="text/plain",
    ),
]

TEMPLATE_PREFIX, TEMPLATE_SUFFIX = "test://template/", "/data"

TEMPLATES: list[types.ResourceTemplate] = [
    types.ResourceTemplate(
        uriTemplate="test://template/{id}/data",
        name="template-data",
        description="JSON data for the given id",
        mimeType="application/json",
    )
]


def _arg(name: str, description: str) -> types.PromptArgument:
    return types.PromptArgument(name=name, description=description, required=True)


PROMPTS: list[types.Prompt] = [
    types.Prompt(name="test_simple_prompt", description="A prompt without arguments"),
    types.Prompt(
        name="test_prompt_with_arguments",
        description="A prompt that substitutes two arguments",
        arguments=[_arg("arg1", "First test argument"), _arg("arg2", "Second test argument")],
    ),
    types.Prompt(
        name="test_prompt_with_embedded_resource",
        description="A prompt that embeds a resource",
        arguments=[_arg("resourceUri", "URI of the resource to embed")],
    ),
    types.Prompt(name="test_prompt_with_image", description="A prompt that carries an image"),
]

# Completion candidates for the arguments of test_prompt_with_arguments.
COMPLETIONS = {"arg1": ["paris", "park", "party", "test", "testing"], "arg2": ["world", "word", "work"]}

LOG_LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]


def _text(text: str) -> types.TextContent:
    return types.TextContent(type="text", text=text)


def _image() -> types.ImageContent:
    return types.ImageContent(type="image", data=PNG_B64, mimeType="image/png")


def _not_found(what: str) -> McpError:
    return McpError(types.ErrorData(code=types.INVALID_PARAMS, message=f"{what} not found"))


# ---- the server -------------------------------------------------------------


class FixtureServer(Server):
    """A low-level server that also advertises resource subscriptions."""

    def get_capabilities(self, notification_options, experimental_capabilities):
        capabilities = super().get_capabilities(notification_options, experimental_capabilities)
        if capabilities.resources is not None:
            capabilities.resources.subscribe = True
        return capabilities


def build_server() -> Server:
    server = FixtureServer(SERVER_NAME, version=SERVER_VERSION)
    # Behind the gateway each session has its own process, so this is per session;
    # served over HTTP by the SDK, sessions share it (harmless for the scenarios).
    state: dict[str, Any] = {"log_level": None, "subscriptions": set()}

    def session_and_id():
        ctx = server.request_context
        return ctx, ctx.session, ctx.request_id

    async def send_log(level: str, message: str) -> None:
        threshold = state["log_level"]
        if threshold is not None and LOG_LEVELS.index(level) < LOG_LEVELS.index(threshold):
            return
        _, session, request_id = session_and_id()
        await session.send_log_message(
            level, message, logger="conformance-fixture", related_request_id=request_id
        )

    def client_can(capability: str) -> bool:
        _, session, _ = session_and_id()
        params = session.client_params
        return params is not None and getattr(params.capabilities, capability, None) is not None

    # -- tools --

    @server.list_tools()
    async def list_tools() -> list[types.Tool]:
        return TOOLS

    @server.call_tool()
    async def call_tool(name: str, arguments: dict[str, Any]) -> Any:
        if name == "test_simple_text":
            return [_text("This is a simple text response for testing.")]
        if name == "test_image_content":
            return [_image()]
        if name == "test_audio_content":
            return [types.AudioContent(type="audio", data=WAV_B64, mimeType="audio/wav")]
        if name == "test_embedded_resource":
            resource = types.TextResourceContents(
                uri="test://embedded-resource",
                mimeType="text/plain",
                text="This is an embedded resource content.",
            )
            return [types.EmbeddedResource(type="resource", resource=resource)]
        if name == "test_multiple_content_types":
            resource = types.TextResourceContents(
                uri="test://mixed-content-resource",
                mimeType="application/json",
                text=json.dumps({"test": "data", "value": 123}, separators=(",", ":")),
            )
            embedded = types.EmbeddedResource(type="resource", resource=resource)
            return [_text("Multiple content types test:"), _image(), embedded]
        if name == "test_tool_with_logging":
            await send_log("info", "Tool execution started")
            await asyncio.sleep(0.05)
            await send_log("info", "Tool processing data")
            await asyncio.sleep(0.05)
            await send_log("info", "Tool execution completed")
            return [_text("Tool with logging executed successfully")]
        if name == "test_tool_with_progress":
            ctx, session, request_id = session_and_id()
            token = ctx.meta.progressToken if ctx.meta is not None else None
            for step, progress in enumerate((0, 50, 100)):
                if step:
                    await asyncio.sleep(0.05)
                if token is not None:
                    await session.send_progress_notification(
                        token,
                        progress,
                        total=100,
                        message=f"step {step + 1} of 3",
                        related_request_id=request_id,
                    )
            return [_text(f"Tool with progress executed successfully (progress token: {token!r})")]
        if name == "test_error_handling":
            # The SDK turns an exception raised by a tool into an isError result.
            raise RuntimeError("This tool intentionally returns an error for testing")
        if name == "test_sampling":
            if not client_can("sampling"):
                raise RuntimeError("test_sampling needs a client with the sampling capability")
            _, session, request_id = session_and_id()
            result = await session.create_message(
                [types.SamplingMessage(role="user", content=_text(arguments["prompt"]))],
                max_tokens=100,
                related_request_id=request_id,
            )
            content = result.content
            if isinstance(content, types.TextContent):
                reply = content.text
            else:
                reply = json.dumps(content.model_dump(mode="json"))
            return [_text(f"LLM response: {reply}")]
        if name in ELICITATIONS:
            if not client_can("elicitation"):
                raise RuntimeError(f"{name} needs a client with the elicitation capability")
            _, session, request_id = session_and_id()
            message, schema, label = ELICITATIONS[name]
            message = arguments.get("message", message)
            result = await session.elicit_form(message, schema, related_request_id=request_id)
            content = json.dumps(result.content, separators=(",", ":")) if result.content is not None else "{}"
            return [_text(f"{label}: action={result.action}, content={content}")]
        if name == "json_schema_2020_12_tool":
            return [_text(f"json_schema_2020_12_tool received: {json.dumps(arguments, sort_keys=True)}")]
        if name == "test_reconnection":
            ctx, _, _ = session_and_id()
            if ctx.close_sse_stream is not None:
                # Only an HTTP transport with an event store offers this; the client
                # is expected to reconnect with Last-Event-ID and get the result.
                await ctx.close_sse_stream()
                await asyncio.sleep(0.1)
            return [_text("Reconnection test completed successfully")]
        raise RuntimeError(f"Unknown tool: {name}")

    # -- resources --

    @server.list_resources()
    async def list_resources() -> list[types.Resource]:
        return RESOURCES

    @server.list_resource_templates()
    async def list_resource_templates() -> list[types.ResourceTemplate]:
        return TEMPLATES

    @server.read_resource()
    async def read_resource(uri: Any) -> list[ReadResourceContents]:
        uri = str(uri)
        if uri == "test://static-text":
            return [ReadResourceContents(content=STATIC_TEXT, mime_type="text/plain")]
        if uri == "test://static-binary":
            return [ReadResourceContents(content=PNG, mime_type="image/png")]
        if uri == "test://watched-resource":
            return [ReadResourceContents(content=WATCHED_TEXT, mime_type="text/plain")]
        if uri.startswith(TEMPLATE_PREFIX) and uri.endswith(TEMPLATE_SUFFIX):
            item = uri[len(TEMPLATE_PREFIX) : -len(TEMPLATE_SUFFIX)]
            if item and "/" not in item:
                data = {"id": item, "templateTest": True, "data": f"Data for ID: {item}"}
                text = json.dumps(data, separators=(",", ":"))
                return [ReadResourceContents(content=text, mime_type="application/json")]
        raise McpError(types.ErrorData(code=-32002, message=f"Resource not found: {uri}", data={"uri": uri}))

    def check_subscribable(uri: str) -> None:
        if uri not in {str(r.uri) for r in RESOURCES}:
            raise _not_found(f"Resource {uri}")

    @server.subscribe_resource()
    async def subscribe(uri: Any) -> None:
        check_subscribable(str(uri))
        state["subscriptions"].add(str(uri))
        log.info("subscribed to %s", uri)

    @server.unsubscribe_resource()
    async def unsubscribe(uri: Any) -> None:
        check_subscribable(str(uri))
        state["subscriptions"].discard(str(uri))
        log.info("unsubscribed from %s", uri)

    # -- prompts --

    @server.list_prompts()
    async def list_prompts() -> list[types.Prompt]:
        return PROMPTS

    @server.get_prompt()
    async def get_prompt(name: str, arguments: dict[str, str] | None) -> types.GetPromptResult:
        arguments = arguments or {}
        prompt = next((p for p in PROMPTS if p.name == name), None)
        if prompt is None:
            raise _not_found(f"Prompt {name}")
        missing = [a.name for a in prompt.arguments or [] if a.required and a.name not in arguments]
        if missing:
            raise McpError(types.ErrorData(code=types.INVALID_PARAMS, message=f"Missing arguments: {missing}"))

        def user(content: Any) -> types.PromptMessage:
            return types.PromptMessage(role="user", content=content)

        if name == "test_simple_prompt":
            messages = [user(_text("This is a simple prompt for testing."))]
        elif name == "test_prompt_with_arguments":
            arg1, arg2 = arguments["arg1"], arguments["arg2"]
            messages = [user(_text(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"))]
        elif name == "test_prompt_with_embedded_resource":
            resource = types.TextResourceContents(
                uri=arguments["resourceUri"], mimeType="text/plain", text="Embedded resource content for testing."
            )
            messages = [
                user(types.EmbeddedResource(type="resource", resource=resource)),
                user(_text("Please process the embedded resource above.")),
            ]
        else:  # test_prompt_with_image
            messages = [user(_image()), user(_text("Please analyze the image above."))]
        return types.GetPromptResult(description=prompt.description, messages=messages)

    # -- utilities --

    @server.set_logging_level()
    async def set_logging_level(level: str) -> None:
        state["log_level"] = level

    @server.completion()
    async def complete(ref: Any, argument: types.CompletionArgument, context: Any) -> types.Completion | None:
        if isinstance(ref, types.PromptReference) and ref.name == "test_prompt_with_arguments":
            values = [v for v in COMPLETIONS.get(argument.name, []) if v.startswith(argument.value)]
            return types.Completion(values=values, total=len(values), hasMore=False)
        return types.Completion(values=[], total=0, hasMore=False)

    return server


async def _main() -> None:
    server = build_server()
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options(NotificationOptions()))


if __name__ == "__main__":
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("FIXTURE_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(_main())
    except KeyboardInterrupt:
        pass
