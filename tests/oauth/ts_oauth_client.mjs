// The TypeScript SDK's own OAuth flow against mcpgate, as Claude Code, VS
// Code and the Inspector run it: the 401 and its WWW-Authenticate, the
// protected resource metadata, the authorization server's metadata, dynamic
// client registration, authorization code with PKCE and a resource
// indicator, the token, and then MCP with that token.
//
// Usage: node ts_oauth_client.mjs URL   (TS_SDK_DIR: the SDK's package directory;
//        TS_CLIENT_TOOL_PREFIX: put before the tool name `echo`, for /mcp)
//
// The user's part of the login is played here: the authorization URL the
// SDK hands to `redirectToAuthorization` is followed with plain HTTP
// requests, oidc-provider's development login form is submitted as user
// `carol`, then its consent form, up to the redirect that carries the code.
// Prints one JSON line: {"requests" (method and path of every request the
// SDK made, in order, with its status), "tools", "echo", "scope"}; any failure
// prints the error on stderr and exits 1.

import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [url] = process.argv.slice(2);
const sdkDir = process.env.TS_SDK_DIR;
if (!url || !sdkDir) {
  console.error("usage: TS_SDK_DIR=... node ts_oauth_client.mjs URL");
  process.exit(2);
}
const load = (path) => import(pathToFileURL(join(sdkDir, "dist/esm", path)).href);
const { Client } = await load("client/index.js");
const { StreamableHTTPClientTransport } = await load("client/streamableHttp.js");
const { UnauthorizedError } = await load("client/auth.js");

const timer = setTimeout(() => {
  console.error("ts_oauth_client: timed out");
  process.exit(1);
}, Number(process.env.TS_CLIENT_TIMEOUT ?? "30") * 1000);

// Every request the SDK makes, as "METHOD /path STATUS".
const requests = [];
const plainFetch = globalThis.fetch;
const recordingFetch = async (input, init) => {
  const response = await plainFetch(input, init);
  const target = new URL(input instanceof Request ? input.url : String(input));
  const method = init?.method ?? (input instanceof Request ? input.method : "GET");
  requests.push(`${method} ${target.pathname} ${response.status}`);
  return response;
};

const REDIRECT = "http://127.0.0.1:9/callback";
let authorizationUrl;
const provider = {
  get redirectUrl() {
    return REDIRECT;
  },
  get clientMetadata() {
    return {
      client_name: "mcpgate oauth test",
      redirect_uris: [REDIRECT],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
      application_type: "native",
    };
  },
  clientInformation() {
    return this.client;
  },
  saveClientInformation(client) {
    this.client = client;
  },
  tokens() {
    return this.savedTokens;
  },
  saveTokens(tokens) {
    this.savedTokens = tokens;
  },
  redirectToAuthorization(url) {
    authorizationUrl = url;
  },
  saveCodeVerifier(verifier) {
    this.verifier = verifier;
  },
  codeVerifier() {
    return this.verifier;
  },
};

// The user at the browser: follows redirects, signs in, consents; returns the code.
async function logIn(start) {
  const cookies = new Map();
  const cookieHeader = () => [...cookies].map(([k, v]) => `${k}=${v}`).join("; ");
  let next = { url: String(start), method: "GET", body: undefined };
  for (let step = 0; step < 20; step += 1) {
    const response = await plainFetch(next.url, {
      method: next.method,
      redirect: "manual",
      headers: {
        cookie: cookieHeader(),
        ...(next.body ? { "content-type": "application/x-www-form-urlencoded" } : {}),
      },
      body: next.body,
    });
    for (const cookie of response.headers.getSetCookie()) {
      const [pair] = cookie.split(";");
      const eq = pair.indexOf("=");
      cookies.set(pair.slice(0, eq), pair.slice(eq + 1));
    }
    if (response.status >= 300 && response.status < 400) {
      const location = new URL(response.headers.get("location"), next.url);
      if (location.href.startsWith(REDIRECT)) {
        const code = location.searchParams.get("code");
        if (!code) throw new Error(`no code in the redirect: ${location.href}`);
        return code;
      }
      next = { url: location.href, method: "GET", body: undefined };
      continue;
    }
    const html = await response.text();
    if (response.status !== 200) throw new Error(`login step ${next.url}: ${response.status} ${html}`);
    const action = html.match(/<form[^>]*action="([^"]+)"/)?.[1];
    if (!action) throw new Error(`no form at ${next.url}: ${html.slice(0, 500)}`);
    const form = html.includes('name="login"')
      ? { prompt: "login", login: "carol", password: "any" }
      : { prompt: "consent" };
    next = {
      url: new URL(action.replaceAll("&amp;", "&"), next.url).href,
      method: "POST",
      body: new URLSearchParams(form).toString(),
    };
  }
  throw new Error("the login did not end in a redirect with a code");
}

try {
  const transport = () =>
    new StreamableHTTPClientTransport(new URL(url), { authProvider: provider, fetch: recordingFetch });
  const client = new Client({ name: "mcpgate-oauth-test", version: "1.0.0" });
  const first = transport();
  try {
    await client.connect(first);
    throw new Error("connected without logging in");
  } catch (error) {
    if (!(error instanceof UnauthorizedError)) throw error;
  }
  if (!authorizationUrl) throw new Error("the SDK did not ask for a login");
  const code = await logIn(authorizationUrl);
  await first.finishAuth(code);
  const connected = transport();
  await client.connect(connected);
  const tools = (await client.listTools()).tools.map((t) => t.name);
  const prefix = process.env.TS_CLIENT_TOOL_PREFIX ?? "";
  const echo = await client.callTool({
    name: `${prefix}echo`,
    arguments: { message: "through oauth" },
  });
  await connected.terminateSession();
  await client.close();
  clearTimeout(timer);
  console.log(
    JSON.stringify({
      requests,
      tools,
      echo: echo.content?.[0]?.text,
      scope: provider.savedTokens?.scope,
      resource: authorizationUrl.searchParams.get("resource"),
    }),
  );
} catch (error) {
  console.error("ts_oauth_client failed:", error);
  console.error("requests so far:", requests);
  process.exit(1);
}
