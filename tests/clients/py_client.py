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

SDK usage:
  1.x  mcp.client.streamable_http.streamablehttp_client + mcp.ClientSession,
       explicit initialize().
  2.x  the high-level mcp.Client(URL) in its default mode="auto": it first POSTs
       `server/discover` without a session and falls back to `initialize` when
       that is rejected (see README).
Leaving the `async with` blocks closes the session, which makes the SDK send
DELETE for the Mcp-Session-Id it got.

Env: PY_CLIENT_TIMEOUT  overall timeout in seconds (default 30).
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

SCENARIOS = ("basic", "list")
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

    def __init__(self, list_page, call_tool, protocol_version, server_name):
        self._list_page = list_page
        self._call_tool = call_tool
        self.protocol_version = protocol_version
        self.server_name = server_name

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

    async def call_text(self, name: str, arguments: dict[str, Any]) -> str:
        return _first_text(await self._call_tool(name, arguments), name)


async def run_v1(url: str, body):
    info = types.Implementation(name=CLIENT_NAME, version=SDK_VERSION)
    with warnings.catch_warnings():
        # Recent 1.x releases deprecate streamablehttp_client for streamable_http_client;
        # the old name is the one every 1.x release with Streamable HTTP (1.8+) has.
        warnings.simplefilter("ignore", DeprecationWarning)
        transport = streamablehttp_client(url)
    async with transport as (read, write, _get_session_id):
        async with ClientSession(read, write, client_info=info) as session:
            init = await session.initialize()

            async def list_page(cursor):
                return await (session.list_tools(cursor) if cursor else session.list_tools())

            conn = Conn(
                list_page,
                session.call_tool,
                protocol_version=init.protocolVersion,
                server_name=init.serverInfo.name if init.serverInfo else None,
            )
            return await body(conn)


async def run_v2(url: str, body):
    info = types.Implementation(name=CLIENT_NAME, version=SDK_VERSION)
    # mode="auto" is the default; spelled out because the discover->initialize
    # fallback is what these tests exercise.
    async with Client(url, mode="auto", client_info=info) as client:
        server_info = client.server_info

        async def list_page(cursor):
            return await client.list_tools(cursor=cursor)

        conn = Conn(
            list_page,
            client.call_tool,
            protocol_version=client.protocol_version,
            server_name=server_info.name if server_info else None,
        )
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


async def run(url: str, scenario: str) -> dict[str, Any]:
    body = {"basic": scenario_basic, "list": scenario_list}[scenario]
    runner = run_v1 if SDK_MAJOR < 2 else run_v2
    start = time.monotonic()
    out = await runner(url, body)  # returns only after the session is closed
    if scenario == "basic":
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
