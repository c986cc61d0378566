// The authorization server of mcpgate's OAuth tests: oidc-provider (a
// certified OpenID Connect / OAuth 2.1 server), configured as an MCP client
// meets one: JWT access tokens for a resource indicator (RFC 8707), dynamic
// client registration, authorization code with PKCE (logged in through the
// provider's development login and consent forms), and the client
// credentials grant for two static clients, `alice` and `bob`.
//
// Usage: node issuer.mjs   (OIDC_DIR: the npm prefix holding oidc-provider and jose)
//
// Listens on 127.0.0.1, a port of its own, and prints one JSON line on
// stdout: {"port", "issuer"}. Every resource indicator is accepted: the
// token's `aud` is the resource asked for, its scopes those of the request
// among `mcp`, `files:read` and `admin`.
//
// Test endpoints beside the provider's own (never in a real issuer):
//   POST /test/rotate?alg=ES256  a new signing key (RS256, ES256 or EdDSA),
//                                 which replaces the old one in the JWKS;
//                                 answers {"kid"}
//   POST /test/sign              {"claims", "header"?, "key"?: "current"|"stray"}:
//                                 a JWT of those claims signed with the
//                                 issuer's current key, or with a key it never
//                                 published; answers {"token"}
//   GET  /test/stats             {"jwks_fetches"}: how often the JWKS was read
//   GET  /test/jwk               {"jwk"}: the current public key (for crafting
//                                 a token "signed" with it as an HMAC secret)

import http from "node:http";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const dir = process.env.OIDC_DIR;
if (!dir) {
  console.error("usage: OIDC_DIR=... node issuer.mjs");
  process.exit(2);
}
const load = (path) => import(pathToFileURL(join(dir, "node_modules", path)).href);
const { default: Provider } = await load("oidc-provider/lib/index.js");
const jose = await load("jose/dist/webapi/index.js");

const SCOPES = ["mcp", "files:read", "admin"];

async function newKey(alg) {
  const { privateKey, publicKey } = await jose.generateKeyPair(alg, { extractable: true });
  const kid = `${alg.toLowerCase()}-${Math.random().toString(36).slice(2, 10)}`;
  const privateJwk = { ...(await jose.exportJWK(privateKey)), kid, alg, use: "sig" };
  const publicJwk = { ...(await jose.exportJWK(publicKey)), kid, alg, use: "sig" };
  return { alg, kid, privateKey, privateJwk, publicJwk };
}

let current = await newKey("RS256");
const stray = await newKey("RS256");
let jwksFetches = 0;

const server = http.createServer();
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const port = server.address().port;
const issuer = `http://127.0.0.1:${port}`;

function makeProvider() {
  const provider = new Provider(issuer, {
    jwks: { keys: [current.privateJwk] },
    clients: ["alice", "bob"].map((name) => ({
      client_id: name,
      client_secret: `${name}-secret-0123456789`,
      grant_types: ["client_credentials"],
      redirect_uris: [],
      response_types: [],
      scope: SCOPES.join(" "),
      id_token_signed_response_alg: current.alg,
    })),
    scopes: ["openid", "offline_access", ...SCOPES],
    pkce: { required: () => true },
    features: {
      clientCredentials: { enabled: true },
      registration: { enabled: true },
      devInteractions: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resource) => ({
          scope: SCOPES.join(" "),
          audience: resource,
          accessTokenFormat: "jwt",
          accessTokenTTL: 600,
          jwt: { sign: { alg: current.alg } },
        }),
      },
    },
    clientDefaults: {
      scope: ["openid", "offline_access", ...SCOPES].join(" "),
      id_token_signed_response_alg: current.alg,
    },
    ttl: { AccessToken: 600, ClientCredentials: 600, Interaction: 600, Session: 600, Grant: 600 },
  });
  provider.on("server_error", (_ctx, error) => console.error("issuer: server error:", error));
  return provider;
}

let provider = makeProvider();
let handler = provider.callback();

async function body(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString("utf8");
}

function json(res, status, value) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(value));
}

server.on("request", async (req, res) => {
  const url = new URL(req.url, issuer);
  try {
    if (url.pathname === "/test/rotate" && req.method === "POST") {
      current = await newKey(url.searchParams.get("alg") ?? "RS256");
      provider = makeProvider();
      handler = provider.callback();
      return json(res, 200, { kid: current.kid });
    }
    if (url.pathname === "/test/sign" && req.method === "POST") {
      const { claims, header = {}, key = "current" } = JSON.parse(await body(req));
      const signer = key === "stray" ? stray : current;
      const token = await new jose.SignJWT(claims)
        .setProtectedHeader({ alg: signer.alg, kid: signer.kid, ...header })
        .sign(signer.privateKey);
      return json(res, 200, { token });
    }
    if (url.pathname === "/test/stats") {
      return json(res, 200, { jwks_fetches: jwksFetches });
    }
    if (url.pathname === "/test/jwk") {
      return json(res, 200, { jwk: current.publicJwk });
    }
    if (url.pathname === "/jwks") jwksFetches += 1;
    handler(req, res);
  } catch (error) {
    console.error("issuer: test endpoint failed:", error);
    json(res, 500, { error: String(error) });
  }
});

console.log(JSON.stringify({ port, issuer }));
