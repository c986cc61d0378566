#!/usr/bin/env python3
"""MCP client driver for mcpgate's integration tests.

Usage: python py_client.py URL SCENARIO

Runs one scenario against a Streamable HTTP MCP endpoint with the official
Python SDK installed in the running interpreter (mcp 1.x or 2.x) and prints
exactly one JSON line on stdout. Any failure prints a traceback on stderr and
exits 1. See tests/clients/README.md.

Scenarios:
  basic  connect, tools/list, call `pid` twice, call `echo` {"message": "héllo"};
         prints {"sdk_version", "protocol_version", "server_name", "tools",
                 "pids", "echo", "elapsed_ms"}
  list   connect, tools/list; prints {"tools": [...]}
  everything
         against @modelcontextprotocol/server-everything, with sampling,
         elicitation and logging callbacks: logging/setLevel debug, then the
         tools trigger-sampling-request, trigger-elicitation-request,
         trigger-long-running-operation (with a progress callback) and
         toggle-simulated-logging (twice: on, wait for a log message, off);
         prints {"sdk_version", "sampling_result", "sampling_requests", "elicitation_result",
                 "elicitation_requests", "progress", "log_messages", "tools"}
  modern-basic   (2.x only) the 2026-07-28 era, forced: server/discover, tools/list,
         call `echo` {"message": "hi"} and `pid`; prints {"sdk_version", "mode",
         "protocol_version", "supported_versions", "server_name", "capabilities",
         "tools", "echo", "echo_structured", "pid", "elapsed_ms"}
  modern-elicit  (2.x only) the 2026-07-28 era, forced, with an elicitation callback
         that accepts with {"name": "octocat"}: server/discover, call `ask_client`
         with an elicitation/create form request (answered through
         InputRequiredResult / inputResponses); prints {"sdk_version",
         "protocol_version", "structured_content", "text", "elicitation_requests"}
  fresh-callers  (2.x only) PY_CLIENT_RUNS (default 50) clients in a row, each a
         default mcp.Client in mode="auto" whose HTTP client sends the header
         `x-caller: py-<run>` (so a gateway with caller_header = "x-caller" opens
         a fresh process for each): tools/list, then call `echo` {"message": "hi"};
         prints {"sdk_version", "runs", "listed", "echoed", "protocol_versions",
                 "failures"} (the first three failures, as text)

SDK usage:
  1.x  mcp.client.streamable_http.streamablehttp_client + mcp.ClientSession,
       explicit initialize().
  2.x  the high-level mcp.Client(URL) in its default mode="auto": it first POSTs
       `server/discover` without a session and falls back to `initialize` when
       that is rejected (see README).
       modern-*: mcp.Client(URL, mode="2026-07-28"), which never sends
       `initialize`; the driver then sends `server/discover` itself and adopts
       the result, so a rejected discover fails the scenario instead of falling
       back (PY_CLIENT_MODERN_DISCOVER=0 skips the discover).
Leaving the `async with` blocks closes the session, which makes the SDK send
DELETE for the Mcp-Session-Id it got (2026-07-28 connections have none, so no
DELETE and no GET stream).

Env: PY_CLIENT_TIMEOUT  overall timeout in seconds (default 30).
     PY_CLIENT_TOOL_PREFIX  prepended to the tool names basic and modern-* call.
     PY_CLIENT_MODERN_DISCOVER  "0": modern-* send no server/discover.
     PY_CLIENT_MODE  2.x Client mode for basic/list/everything: auto (default),
                     legacy or 2026-07-28.
     PY_CLIENT_RUNS  how many clients fresh-callers runs (default 50).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import sys
import threading
import time
import traceback
import warnings
from typing import Any

TIMEOUT_S = float(os.environ.get("PY_CLIENT_TIMEOUT", "30"))
# If cancelling a hung scenario itself hangs (e.g. a close that never returns),
# give up hard this long after the overall timeout.
HARD_EXIT_GRACE_S = 5.0

SCENARIOS = ("basic", "list", "everything", "modern-basic", "modern-elicit", "fresh-callers")
# Scenarios that force the stateless 2026-07-28 era; they need mcp 2.x.
MODERN_SCENARIOS = ("modern-basic", "modern-elicit")
# Scenarios that need mcp 2.x.
V2_SCENARIOS = (*MODERN_SCENARIOS, "fresh-callers")
MODERN_VERSION = "2026-07-28"
# mcp 2.x Client mode for basic, list and everything: "auto" (default), "legacy"
# (initialize only, no discover probe) or "2026-07-28" (that era, no probe).
V2_MODE = os.environ.get("PY_CLIENT_MODE", "auto")
# "0": the modern scenarios skip server/discover and go straight to their requests.
MODERN_DISCOVER = os.environ.get("PY_CLIENT_MODERN_DISCOVER", "1") != "0"
SDK_VERSION = importlib.metadata.version("mcp")
SDK_MAJOR = int(SDK_VERSION.split(".")[0])
CLIENT_NAME = "mcpgate-py-client"

# Import the SDK up front so elapsed_ms measures the protocol exchange, not imports.
from mcp import types  # noqa: E402

if SDK_MAJOR < 2:
    from mcp import ClientSession  # noqa: E402
    from mcp.client.streamable_http import streamablehttp_client  # noqa: E402
else:
    from mcp import Client  # noqa: E402
    from mcp.client.streamable_http import streamable_http_client  # noqa: E402
    from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402


class ScenarioError(Exception):
    pass


def _field(obj: Any, *names: str) -> Any:
    """First present attribute: 1.x models use camelCase, 2.x snake_case."""
    for name in names:
        if hasattr(obj, name):
            return getattr(obj, name)
    return None


def _first_text(result: Any, tool: str) -> str:
    if _field(result, "isError", "is_error"):
        raise ScenarioError(f"tool {tool!r} returned isError: {result!r}")
    content = list(result.content or [])
    if not content or getattr(content[0], "type", None) != "text":
        raise ScenarioError(f"tool {tool!r}: first content item is not text: {result!r}")
    return content[0].text


class Conn:
    """The few operations the scenarios need, over either SDK major."""

    def __init__(self, list_page, call_tool, protocol_version, server_name, set_logging_level=None):
        self._list_page = list_page
        self._call_tool = call_tool
        self.protocol_version = protocol_version
        self.server_name = server_name
        self.set_logging_level = set_logging_level
        self.discover = None  # modern-*: the adopted DiscoverResult, if one was fetched

    async def tool_names(self) -> list[str]:
        names: list[str] = []
        cursor = None
        for _ in range(100):  # bounded: a cursor that never ends fails instead of hanging
            page = await self._list_page(cursor)
            names.extend(t.name for t in page.tools)
            cursor = _field(page, "nextCursor", "next_cursor")
            if not cursor:
                return names
        raise ScenarioError("tools/list did not finish within 100 pages")

    async def call_text(self, name: str, arguments: dict[str, Any], progress_callback=None) -> str:
        return _first_text(await self.call(name, arguments, progress_callback), name)

    async def call(self, name: str, arguments: dict[str, Any], progress_callback=None) -> Any:
        """The whole tool result (no isError check)."""
        if progress_callback is None:
            return await self._call_tool(name, arguments)
        return await self._call_tool(name, arguments, progress_callback=progress_callback)

    async def all_texts(self, name: str, arguments: dict[str, Any]) -> str:
        """The text items of a tool's result, joined with newlines."""
        result = await self.call(name, arguments)
        if _field(result, "isError", "is_error"):
            raise ScenarioError(f"tool {name!r} returned isError: {result!r}")
        return "\n".join(c.text for c in (result.content or []) if getattr(c, "type", None) == "text")


async def run_v1(url: str, body, callbacks: dict[str, Any]):
    info = types.Implementation(name=CLIENT_NAME, version=SDK_VERSION)
    with warnings.catch_warnings():
        # Recent 1.x releases deprecate streamablehttp_client for streamable_http_client;
        # the old name is the one every 1.x release with Streamable HTTP (1.8+) has.
        warnings.simplefilter("ignore", DeprecationWarning)
        transport = streamablehttp_client(url)
    async with transport as (read, write, _get_session_id):
        async with ClientSession(read, write, client_info=info, **callbacks) as session:
            init = await session.initialize()

            async def list_page(cursor):
                return await (session.list_tools(cursor) if cursor else session.list_tools())

            conn = Conn(
                list_page,
                session.call_tool,
                protocol_version=init.protocolVersion,
                server_name=init.serverInfo.name if init.serverInfo else None,
                set_logging_level=session.set_logging_level,
            )
            return await body(conn)


async def run_v2(url: str, body, callbacks: dict[str, Any]):
    info = types.Implementation(name=CLIENT_NAME, version=SDK_VERSION)
    # mode="auto" is the default; spelled out because the discover->initialize
    # fallback is what these tests exercise. PY_CLIENT_MODE overrides it.
    async with Client(url, mode=V2_MODE, client_info=info, **callbacks) as client:
        server_info = client.server_info

        async def list_page(cursor):
            return await client.list_tools(cursor=cursor)

        conn = Conn(
            list_page,
            client.call_tool,
            protocol_version=client.protocol_version,
            server_name=server_info.name if server_info else None,
            set_logging_level=client.set_logging_level,
        )
        return await body(conn)


async def run_v2_modern(url: str, body, callbacks: dict[str, Any]):
    """The 2026-07-28 era, forced: no initialize, no fallback.

    mode=MODERN_VERSION makes the client adopt that version without a probe (it
    would otherwise stamp a synthesized, empty DiscoverResult). The driver then
    sends `server/discover` itself and adopts the server's answer, so the
    capabilities, supported versions and serverInfo are the gateway's, and a
    gateway that rejects discover fails the scenario instead of being talked to
    in the handshake era, as mode="auto" would do.
    """
    info = types.Implementation(name=CLIENT_NAME, version=SDK_VERSION)
    async with Client(url, mode=MODERN_VERSION, client_info=info, **callbacks) as client:
        session = client.session
        discover = None
        if MODERN_DISCOVER:
            discover = types.DiscoverResult.model_validate(await session.send_discover(MODERN_VERSION))
            session.adopt(discover)  # raises if supportedVersions lacks every modern version
        server_info = client.server_info

        async def list_page(cursor):
            return await client.list_tools(cursor=cursor)

        conn = Conn(
            list_page,
            client.call_tool,
            protocol_version=client.protocol_version,
            server_name=server_info.name if server_info else None,
        )
        conn.discover = discover
        return await body(conn)


# Prepended to the names of the tools `basic` calls: e.g. "t___" on the unified
# endpoint, where the test server's tools are named <serverID>___<name>.
TOOL_PREFIX = os.environ.get("PY_CLIENT_TOOL_PREFIX", "")


async def scenario_basic(conn: Conn) -> dict[str, Any]:
    tools = await conn.tool_names()
    pids = []
    for _ in range(2):
        text = await conn.call_text(TOOL_PREFIX + "pid", {})
        try:
            pids.append(int(text.strip()))
        except ValueError:
            raise ScenarioError(f"tool 'pid' returned non-integer text {text!r}") from None
    echo = await conn.call_text(TOOL_PREFIX + "echo", {"message": "héllo"})
    return {
        "sdk_version": SDK_VERSION,
        "protocol_version": conn.protocol_version,
        "server_name": conn.server_name,
        "tools": tools,
        "pids": pids,
        "echo": echo,
    }


async def scenario_list(conn: Conn) -> dict[str, Any]:
    return {"tools": await conn.tool_names()}


# ---- modern-*: the stateless 2026-07-28 era ----


def _structured(result: Any, tool: str) -> Any:
    if _field(result, "isError", "is_error"):
        raise ScenarioError(f"tool {tool!r} returned isError: {result!r}")
    return _field(result, "structuredContent", "structured_content")


async def scenario_modern_basic(conn: Conn) -> dict[str, Any]:
    if conn.protocol_version != MODERN_VERSION:
        raise ScenarioError(f"negotiated {conn.protocol_version!r}, not {MODERN_VERSION!r}")
    tools = await conn.tool_names()
    echo_result = await conn.call(TOOL_PREFIX + "echo", {"message": "hi"})
    echo = _first_text(echo_result, "echo")
    pid_result = await conn.call(TOOL_PREFIX + "pid", {})
    pid_structured = _structured(pid_result, "pid")
    if not isinstance(pid_structured, dict) or not isinstance(pid_structured.get("pid"), int):
        raise ScenarioError(f"tool 'pid' returned no integer structuredContent.pid: {pid_result!r}")
    discover = conn.discover
    return {
        "sdk_version": SDK_VERSION,
        "mode": MODERN_VERSION,
        "protocol_version": conn.protocol_version,
        "supported_versions": list(discover.supported_versions) if discover else None,
        "server_name": conn.server_name,
        "capabilities": (
            discover.capabilities.model_dump(by_alias=True, mode="json", exclude_none=True) if discover else None
        ),
        "tools": tools,
        "echo": echo,
        "echo_structured": _field(echo_result, "structuredContent", "structured_content"),
        "pid": pid_structured["pid"],
    }


# What modern-elicit asks for through the test server's ask_client tool, and
# what its elicitation callback accepts with.
MODERN_ELICIT_REQUEST = {
    "method": "elicitation/create",
    "params": {
        "mode": "form",
        "message": "Name?",
        "requestedSchema": {
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "required": ["name"],
        },
    },
}
MODERN_ELICITED_CONTENT = {"name": "octocat"}


class ModernElicitRecorder:
    def __init__(self) -> None:
        self.requests: list[Any] = []

    async def elicitation(self, context, params):
        self.requests.append(params)
        return types.ElicitResult(action="accept", content=dict(MODERN_ELICITED_CONTENT))


def scenario_modern_elicit(recorder: ModernElicitRecorder):
    async def body(conn: Conn) -> dict[str, Any]:
        if conn.protocol_version != MODERN_VERSION:
            raise ScenarioError(f"negotiated {conn.protocol_version!r}, not {MODERN_VERSION!r}")
        # Client.call_tool runs the InputRequiredResult loop: it hands each
        # inputRequests entry to the callback and retries tools/call with
        # inputResponses and the echoed requestState.
        result = await conn.call(TOOL_PREFIX + "ask_client", json.loads(json.dumps(MODERN_ELICIT_REQUEST)))
        structured = _structured(result, "ask_client")
        texts = [c.text for c in (result.content or []) if getattr(c, "type", None) == "text"]
        return {
            "sdk_version": SDK_VERSION,
            "protocol_version": conn.protocol_version,
            "structured_content": structured,
            "text": texts[0] if texts else None,
            "elicitation_requests": [
                p.model_dump(by_alias=True, mode="json", exclude_none=True) for p in recorder.requests
            ],
        }

    return body


# ---- everything: server-to-client requests, progress and logging ----

# What the sampling callback answers; server-everything's trigger-sampling-request
# tool returns the whole sampling result as JSON text, so this text appears in it.
SAMPLED_TEXT = "sampled-by-mcpgate-test"
# What the elicitation callback accepts with. server-everything's
# trigger-elicitation-request asks for a form whose only required field is
# `name`; its tool result lists the fields it got ("- Name: <name>", ...).
ELICITED_CONTENT = {
    "name": "mcpgate-test-user",
    "check": True,
    "email": "mcpgate-test@example.com",
    "integer": 42,
}
# trigger-long-running-operation: `duration` seconds in `steps` equal steps, one
# progress notification per step (progress = step number, total = steps).
LONG_RUNNING_ARGS = {"duration": 0.5, "steps": 5}
# How long to wait for the first log message after turning simulated logging on
# (server-everything sends one at once, then one every 5 s).
LOG_WAIT_S = 8.0


class Recorder:
    """The callbacks the `everything` scenario installs, and what they saw."""

    def __init__(self) -> None:
        self.sampling_requests: list[Any] = []
        self.elicitation_requests: list[Any] = []
        self.log_messages: list[Any] = []
        self.progress: list[list[float | None]] = []
        self._logged = asyncio.Event()

    async def sampling(self, context, params):
        self.sampling_requests.append(params)
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=SAMPLED_TEXT),
            model="mcpgate-test-model",
        )

    async def elicitation(self, context, params):
        self.elicitation_requests.append(params)
        return types.ElicitResult(action="accept", content=dict(ELICITED_CONTENT))

    async def logging(self, params) -> None:
        self.log_messages.append(params)
        self._logged.set()

    async def on_progress(self, progress, total, message) -> None:
        self.progress.append([progress, total])

    async def wait_for_log(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._logged.wait(), timeout)
        except asyncio.TimeoutError:
            raise ScenarioError(f"no notifications/message arrived within {timeout}s") from None

    def callbacks(self) -> dict[str, Any]:
        return {
            "sampling_callback": self.sampling,
            "elicitation_callback": self.elicitation,
            "logging_callback": self.logging,
        }


def scenario_everything(recorder: Recorder):
    async def body(conn: Conn) -> dict[str, Any]:
        tools = await conn.tool_names()
        with warnings.catch_warnings():
            # 2.x deprecates logging (for 2026-07-28); on handshake-era sessions
            # logging/setLevel is still what turns log messages on.
            warnings.simplefilter("ignore")
            await conn.set_logging_level("debug")
        sampling = await conn.all_texts(
            "trigger-sampling-request", {"prompt": "say something", "maxTokens": 16}
        )
        elicitation = await conn.all_texts("trigger-elicitation-request", {})
        await conn.call_text(
            "trigger-long-running-operation", dict(LONG_RUNNING_ARGS), progress_callback=recorder.on_progress
        )
        await conn.call_text("toggle-simulated-logging", {})  # on
        await recorder.wait_for_log(LOG_WAIT_S)
        await conn.call_text("toggle-simulated-logging", {})  # off
        return {
            "sdk_version": SDK_VERSION,
            "sampling_result": sampling,
            "sampling_requests": len(recorder.sampling_requests),
            "elicitation_result": elicitation,
            "elicitation_requests": len(recorder.elicitation_requests),
            "progress": list(recorder.progress),
            "log_messages": len(recorder.log_messages),
            "tools": tools,
        }

    return body


async def run_fresh_callers(url: str) -> dict[str, Any]:
    """PY_CLIENT_RUNS default clients in a row, each named a caller of its own."""
    runs = int(os.environ.get("PY_CLIENT_RUNS", "50"))
    info = types.Implementation(name=CLIENT_NAME, version=SDK_VERSION)
    listed = echoed = 0
    versions: set[str] = set()
    failures: list[str] = []
    for run_no in range(runs):
        http = create_mcp_http_client(headers={"x-caller": f"py-{run_no}"})
        try:
            async with http, Client(streamable_http_client(url, http_client=http), client_info=info) as client:
                versions.add(str(client.protocol_version))
                tools = await client.list_tools()
                if any(t.name == "echo" for t in tools.tools):
                    listed += 1
                if _first_text(await client.call_tool("echo", {"message": "hi"}), "echo") == "hi":
                    echoed += 1
        except Exception as e:  # noqa: BLE001 - counted, and the first few reported
            if len(failures) < 3:
                failures.append(f"run {run_no}: {e!r}")
    return {
        "sdk_version": SDK_VERSION,
        "runs": runs,
        "listed": listed,
        "echoed": echoed,
        "protocol_versions": sorted(versions),
        "failures": failures,
    }


async def run(url: str, scenario: str) -> dict[str, Any]:
    if scenario == "fresh-callers":
        return await run_fresh_callers(url)
    callbacks: dict[str, Any] = {}
    runner = run_v1 if SDK_MAJOR < 2 else run_v2
    if scenario == "everything":
        recorder = Recorder()
        body = scenario_everything(recorder)
        callbacks = recorder.callbacks()
    elif scenario == "modern-elicit":
        modern_recorder = ModernElicitRecorder()
        body = scenario_modern_elicit(modern_recorder)
        callbacks = {"elicitation_callback": modern_recorder.elicitation}
    else:
        body = {"basic": scenario_basic, "list": scenario_list, "modern-basic": scenario_modern_basic}[scenario]
    if scenario in MODERN_SCENARIOS:
        runner = run_v2_modern
    start = time.monotonic()
    out = await runner(url, body, callbacks)  # returns only after the session is closed
    if scenario in ("basic", "modern-basic"):
        out["elapsed_ms"] = round((time.monotonic() - start) * 1000)
    return out


def _hard_exit() -> None:
    sys.stderr.write(f"py_client: still not finished {HARD_EXIT_GRACE_S}s after the {TIMEOUT_S}s timeout; exiting\n")
    sys.stderr.flush()
    os._exit(1)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[2] not in SCENARIOS:
        sys.stderr.write(f"usage: {argv[0]} URL {{{'|'.join(SCENARIOS)}}}\n")
        return 2
    url, scenario = argv[1], argv[2]
    if scenario in V2_SCENARIOS and SDK_MAJOR < 2:
        sys.stderr.write(f"{argv[0]}: scenario {scenario!r} needs mcp 2.x (this interpreter has mcp {SDK_VERSION})\n")
        return 2
    watchdog = threading.Timer(TIMEOUT_S + HARD_EXIT_GRACE_S, _hard_exit)
    watchdog.daemon = True
    watchdog.start()
    try:
        out = asyncio.run(asyncio.wait_for(run(url, scenario), TIMEOUT_S))
    except asyncio.TimeoutError:
        traceback.print_exc()
        sys.stderr.write(f"py_client: scenario {scenario!r} timed out after {TIMEOUT_S}s (mcp {SDK_VERSION})\n")
        return 1
    except BaseException:  # noqa: BLE001 - anything, incl. ExceptionGroup from task groups
        traceback.print_exc()
        sys.stderr.write(f"py_client: scenario {scenario!r} failed (mcp {SDK_VERSION})\n")
        return 1
    finally:
        watchdog.cancel()
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
