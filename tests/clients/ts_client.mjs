// MCP client driver for mcpgate's integration tests: the official TypeScript
// SDK (@modelcontextprotocol/sdk), as Claude Code, VS Code and the Inspector
// use it.
//
// Usage: node ts_client.mjs URL SCENARIO
//
// Runs one scenario against a Streamable HTTP MCP endpoint and prints exactly
// one JSON line on stdout; any failure prints the error on stderr and exits 1.
// The SDK is loaded from TS_SDK_DIR (the package's directory; the tests pass
// .testdeps/npm/node_modules/@modelcontextprotocol/sdk), since this file does
// not live under that node_modules.
//
// Scenarios (against mcpgate's test server; TS_CLIENT_TOOL_PREFIX is put
// before every tool name, for the unified endpoint):
//   basic  connect with sampling, elicitation and roots handlers; tools/list;
//          call `echo` {"message": "héllo"}; call `ask_client` three times so
//          that the backend asks this client elicitation/create, roots/list and
//          sampling/createMessage (each answered by the handlers below);
//          terminate the session (DELETE); prints {"sdk_version",
//          "protocol_version", "session_id", "server_name", "tools", "echo",
//          "elicitation", "roots", "sampling", "asked"}
//   roots-at-start
//          connect with a roots handler only; wait (at most 5 s) until the
//          backend has asked roots/list and the answer has been POSTed; list
//          tools; terminate the session; prints {"sdk_version", "session_id",
//          "roots_asked", "tools"}
//   filesystem-roots
//          against @modelcontextprotocol/server-filesystem started with no
//          directory: like roots-at-start with TS_CLIENT_ROOT (a file:// URI)
//          as the one root, then call list_allowed_directories (again, for at
//          most 5 s, until it names the root) and list_directory on the root; prints {"roots_asked", "allowed",
//          "listing"}
//
// Env: TS_CLIENT_TIMEOUT  overall timeout in seconds (default 30).
//      TS_CLIENT_ROOT     the root filesystem-roots declares.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [url, scenario] = process.argv.slice(2);
const sdkDir = process.env.TS_SDK_DIR;
if (!url || !scenario || !sdkDir) {
  console.error("usage: TS_SDK_DIR=... node ts_client.mjs URL SCENARIO");
  process.exit(2);
}
const timeoutSeconds = Number(process.env.TS_CLIENT_TIMEOUT ?? "30");
const prefix = process.env.TS_CLIENT_TOOL_PREFIX ?? "";
const load = (path) => import(pathToFileURL(join(sdkDir, "dist/esm", path)).href);

const { Client } = await load("client/index.js");
const { StreamableHTTPClientTransport } = await load("client/streamableHttp.js");
const { CreateMessageRequestSchema, ElicitRequestSchema, ListRootsRequestSchema } =
  await load("types.js");
const sdkVersion = JSON.parse(readFileSync(join(sdkDir, "package.json"), "utf8")).version;

// The root this client declares.
const ROOT = { uri: "file:///tmp/mcpgate-ts-client-root", name: "test root" };

async function basic() {
  const asked = [];
  const client = new Client(
    { name: "mcpgate-ts-test", version: "1.0.0" },
    { capabilities: { sampling: {}, elicitation: { form: {} }, roots: { listChanged: true } } },
  );
  client.setRequestHandler(ElicitRequestSchema, async (request) => {
    asked.push(request.method);
    return { action: "accept", content: { name: "octocat" } };
  });
  client.setRequestHandler(ListRootsRequestSchema, async (request) => {
    asked.push(request.method);
    return { roots: [ROOT] };
  });
  client.setRequestHandler(CreateMessageRequestSchema, async (request) => {
    asked.push(request.method);
    return {
      role: "assistant",
      content: { type: "text", text: "sampled by the ts client" },
      model: "mcpgate-test-model",
    };
  });
  const transport = new StreamableHTTPClientTransport(new URL(url));
  await client.connect(transport);
  const sessionId = transport.sessionId;
  const protocolVersion = transport.protocolVersion;
  const tools = (await client.listTools()).tools.map((t) => t.name);
  const call = (name, args) => client.callTool({ name: prefix + name, arguments: args });
  const text = (result) => result.content?.[0]?.text;
  const echo = text(await call("echo", { message: "héllo" }));
  const response = (result) => result.structuredContent?.response;
  const elicitation = response(
    await call("ask_client", {
      method: "elicitation/create",
      params: {
        mode: "form",
        message: "Name?",
        requestedSchema: {
          type: "object",
          properties: { name: { type: "string" } },
          required: ["name"],
        },
      },
    }),
  );
  const roots = response(await call("ask_client", { method: "roots/list" }));
  const sampling = response(
    await call("ask_client", {
      method: "sampling/createMessage",
      params: { messages: [{ role: "user", content: { type: "text", text: "hi" } }], maxTokens: 10 },
    }),
  );
  const serverName = client.getServerVersion()?.name;
  await transport.terminateSession();
  await client.close();
  return {
    sdk_version: sdkVersion,
    protocol_version: protocolVersion,
    session_id: sessionId,
    server_name: serverName,
    tools,
    echo,
    elicitation,
    roots,
    sampling,
    asked,
  };
}

// Connects a client whose one capability is roots (`roots`), and waits (at
// most 5 s) until the backend has asked them and the answer has been POSTed.
async function connectAndGiveRoots(roots) {
  const asked = { count: 0 };
  const client = new Client(
    { name: "mcpgate-ts-test", version: "1.0.0" },
    { capabilities: { roots: { listChanged: true } } },
  );
  client.setRequestHandler(ListRootsRequestSchema, async () => {
    asked.count += 1;
    return { roots };
  });
  const transport = new StreamableHTTPClientTransport(new URL(url));
  // Count the POSTs in flight, so that the session ends only after the
  // answer to roots/list has reached the gateway.
  let posting = 0;
  const send = transport.send.bind(transport);
  transport.send = async (message, options) => {
    posting += 1;
    try {
      return await send(message, options);
    } finally {
      posting -= 1;
    }
  };
  await client.connect(transport);
  const deadline = Date.now() + 5000;
  while ((asked.count === 0 || posting > 0) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return { client, transport, asked };
}

async function rootsAtStart() {
  const { client, transport, asked } = await connectAndGiveRoots([ROOT]);
  const sessionId = transport.sessionId;
  const tools = (await client.listTools()).tools.length;
  await transport.terminateSession();
  await client.close();
  return { sdk_version: sdkVersion, session_id: sessionId, roots_asked: asked.count, tools };
}

async function filesystemRoots() {
  const root = process.env.TS_CLIENT_ROOT;
  const { client, transport, asked } = await connectAndGiveRoots([{ uri: root, name: "root" }]);
  const text = (result) => result.content?.map((c) => c.text).join("\n");
  const path = new URL(root).pathname;
  // The server takes the roots in after it got them (it checks each one):
  // ask, bounded, until it says so.
  let allowed = "";
  const deadline = Date.now() + 5000;
  while (!allowed.includes(path) && Date.now() < deadline) {
    allowed = text(await client.callTool({ name: "list_allowed_directories", arguments: {} }));
    if (!allowed.includes(path)) await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const listing = text(await client.callTool({ name: "list_directory", arguments: { path } }));
  await transport.terminateSession();
  await client.close();
  return { roots_asked: asked.count, allowed, listing };
}

const scenarios = {
  basic,
  "roots-at-start": rootsAtStart,
  "filesystem-roots": filesystemRoots,
};
const run = scenarios[scenario];
if (!run) {
  console.error(`unknown scenario ${scenario}`);
  process.exit(2);
}
const timer = setTimeout(() => {
  console.error(`scenario ${scenario} timed out after ${timeoutSeconds} s`);
  process.exit(1);
}, timeoutSeconds * 1000);
try {
  const result = await run();
  clearTimeout(timer);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
} catch (error) {
  clearTimeout(timer);
  console.error(error?.stack ?? String(error));
  process.exit(1);
}
