// End-to-end driver: the official MCP TypeScript SDK client
// (@modelcontextprotocol/sdk, pinned by package-lock.json) against
// deputy-idp's /mcp, with the user's browser scripted (Node fetch with a
// cookie jar). integration/mcp_test.go starts the server and runs this; it
// exits 0 when every step held and prints one JSON line per step.
//
// Environment:
//   MCP_URL        the MCP server, e.g. http://127.0.0.1:8080/mcp
//   ISSUER         the authorization server's issuer
//   CLIENT_ID      a pre-registered client; empty: the SDK registers one,
//                  by its metadata document when CLIENT_METADATA_URL is
//                  set (an https URL serving it), else dynamically (RFC 7591)
//   CLIENT_METADATA_URL   see CLIENT_ID
//   REDIRECT_URI   the client's redirect URI (loopback; never listened on:
//                  the scripted browser reads the code from the redirect)
//   USERNAME, PASSWORD   the user who signs in and consents
//   WRITE_TOOL_ORG       the organization create_project writes in
//   OTHER_RESOURCE       another resource of the same authorization server
//                        (RFC 8707): a token for it must be refused by /mcp
//
// Two workarounds for @modelcontextprotocol/sdk 1.32.2, both as an
// application using the SDK would write them:
//   - SEP-2207: the SDK never asks for offline_access, so it never gets a
//     refresh token from a server that wants the scope. The provider adds
//     it to the authorization URL when the server advertises it in
//     scopes_supported and the client registered the refresh_token grant
//     (what newer SDKs do).
//   - typescript-sdk#2255: on 403 insufficient_scope the SDK refreshes when
//     it holds a refresh token (a refresh never widens scope) and then gives
//     up with "403 after trying upscoping" instead of authorizing again.
//     The application catches that and authorizes again itself, with the
//     union of the scopes it held and the ones challenged (SEP-2350).

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { auth, exchangeAuthorization, startAuthorization, UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';

const env = (name, def) => {
  const v = process.env[name] ?? def;
  if (v === undefined) throw new Error(`${name} is required`);
  return v;
};
const MCP_URL = new URL(env('MCP_URL'));
const ISSUER = env('ISSUER').replace(/\/$/, '');
const CLIENT_ID = env('CLIENT_ID', '');
const CLIENT_METADATA_URL = env('CLIENT_METADATA_URL', '');
const REGISTRATION = CLIENT_ID ? 'pre-registered' : CLIENT_METADATA_URL ? 'metadata document' : 'dynamic';
const REDIRECT_URI = env('REDIRECT_URI');
const USERNAME = env('USERNAME');
const PASSWORD = env('PASSWORD');
const ORG = env('WRITE_TOOL_ORG', 'acme');
const OTHER_RESOURCE = env('OTHER_RESOURCE');

function step(name, detail = {}) {
  console.log(JSON.stringify({ step: name, ...detail }));
}

class Failure extends Error {}
function check(cond, msg) {
  if (!cond) throw new Failure(msg);
}

const scopesOf = (s) => (s ?? '').split(/\s+/).filter(Boolean);
const union = (...lists) => [...new Set(lists.flat())].sort();

// The user's browser: a cookie jar over fetch, following nothing by itself.
class Browser {
  constructor() {
    this.cookies = new Map();
  }
  async fetch(url, init = {}) {
    const headers = new Headers(init.headers);
    if (this.cookies.size) {
      headers.set('Cookie', [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; '));
    }
    const resp = await fetch(url, { ...init, headers, redirect: 'manual' });
    for (const c of resp.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const i = pair.indexOf('=');
      this.cookies.set(pair.slice(0, i).trim(), pair.slice(i + 1).trim());
    }
    return resp;
  }
  // Signs in if asked to, shows the consent page, and answers it. Returns
  // the code and what the page said.
  async consent(authorizationUrl) {
    let resp = await this.fetch(authorizationUrl);
    if (resp.status === 303 && new URL(resp.headers.get('location'), ISSUER).pathname === '/login') {
      const login = new URL(resp.headers.get('location'), ISSUER);
      await resp.text();
      resp = await this.fetch(`${ISSUER}/login`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ username: USERNAME, password: PASSWORD, return_to: login.searchParams.get('return_to') }),
      });
      check(resp.status === 303, `login answered ${resp.status}`);
      const back = new URL(resp.headers.get('location'), ISSUER);
      check(back.pathname === new URL(authorizationUrl).pathname, `login sent the browser to ${back} instead of back to the authorization request`);
      await resp.text();
      resp = await this.fetch(back);
    }
    const page = await resp.text();
    check(resp.status === 200, `consent page answered ${resp.status} ${resp.headers.get("location") ?? ""}: ${page.slice(0, 300)}`);
    // The form posts back to the authorization request itself.
    resp = await this.fetch(authorizationUrl, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ decision: 'allow' }),
    });
    const location = resp.headers.get('location');
    await resp.text();
    check(resp.status === 303 || resp.status === 302, `allow answered ${resp.status}`);
    const cb = new URL(location);
    check(`${cb.origin}${cb.pathname}` === REDIRECT_URI, `redirected to ${location}, not the client's redirect URI`);
    check(!cb.searchParams.get('error'), `authorization error: ${cb.searchParams.get('error')} ${cb.searchParams.get('error_description')}`);
    // RFC 9207: the response names its issuer; a client checks it.
    check(cb.searchParams.get('iss') === ISSUER, `authorization response iss ${cb.searchParams.get('iss')}, want ${ISSUER}`);
    return { code: cb.searchParams.get('code'), state: cb.searchParams.get('state'), page };
  }
  async grants() {
    const resp = await this.fetch(`${ISSUER}/agent/grants`, { headers: { Accept: 'application/json' } });
    const body = await resp.json();
    check(resp.status === 200, `grants answered ${resp.status}`);
    return body.grants;
  }
}

// An in-memory OAuthClientProvider, as an MCP host application keeps one.
class Provider {
  constructor() {
    this.info = CLIENT_ID ? { client_id: CLIENT_ID } : undefined;
    this.stored = undefined;
    this.verifier = undefined;
    this.discovery = undefined;
    this.pendingAuthorization = undefined;
    this.hideRefreshToken = false;
    this.saved = [];
  }
  get redirectUrl() {
    return REDIRECT_URI;
  }
  get clientMetadataUrl() {
    return CLIENT_METADATA_URL || undefined;
  }
  get clientMetadata() {
    return {
      client_name: 'deputy MCP e2e (TypeScript SDK)',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }
  clientInformation() {
    return this.info;
  }
  saveClientInformation(info) {
    this.info = info;
  }
  tokens() {
    if (this.stored && this.hideRefreshToken) {
      const { refresh_token, ...rest } = this.stored;
      return rest;
    }
    return this.stored;
  }
  saveTokens(t) {
    this.stored = t;
    this.saved.push(t);
  }
  saveCodeVerifier(v) {
    this.verifier = v;
  }
  codeVerifier() {
    return this.verifier;
  }
  saveDiscoveryState(s) {
    this.discovery = s;
  }
  discoveryState() {
    return this.discovery;
  }
  invalidateCredentials(what) {
    if (what === 'all' || what === 'tokens') this.stored = undefined;
    if (what === 'all' || what === 'discovery') this.discovery = undefined;
  }
  redirectToAuthorization(url) {
    // SEP-2207 (see the top of this file).
    const supported = this.discovery?.authorizationServerMetadata?.scopes_supported ?? [];
    const requested = scopesOf(url.searchParams.get('scope'));
    if (supported.includes('offline_access') && this.clientMetadata.grant_types.includes('refresh_token') && !requested.includes('offline_access')) {
      url.searchParams.set('scope', [...requested, 'offline_access'].join(' '));
    }
    this.pendingAuthorization = url;
  }
}

const browser = new Browser();
const provider = new Provider();

// authorize completes an authorization the SDK started: the browser
// consents, and the SDK redeems the code.
async function authorize(transport, what) {
  const url = provider.pendingAuthorization;
  check(url, `${what}: the SDK did not send the user to the authorization endpoint`);
  provider.pendingAuthorization = undefined;
  check(!url.searchParams.has('state'), `${what}: this client sends no state`);
  // RFC 8707: the SDK names the MCP server (its RFC 9728 metadata's
  // resource) as the token's audience.
  check(url.searchParams.get('resource') === MCP_URL.href, `${what}: resource ${url.searchParams.get('resource')}, want ${MCP_URL.href}`);
  check(url.searchParams.get('code_challenge_method') === 'S256', `${what}: PKCE S256 expected`);
  const { code, state, page } = await browser.consent(url);
  check(!state, `${what}: a state came back although none was sent`);
  await transport.finishAuth(code);
  provider.hideRefreshToken = false;
  step('authorized', { what, scope: provider.stored?.scope, refresh_token: !!provider.stored?.refresh_token });
  return page;
}

async function connect() {
  const transport = new StreamableHTTPClientTransport(MCP_URL, { authProvider: provider });
  const client = new Client({ name: 'deputy-mcp-e2e', version: '1.0.0' });
  await client.connect(transport);
  return { client, transport };
}

async function listProjects(client) {
  const res = await client.callTool({ name: 'list_projects', arguments: { organization: ORG } });
  check(!res.isError, `list_projects failed: ${JSON.stringify(res.content)}`);
  return res.structuredContent.projects;
}

// createProject calls the write tool and reports the HTTP status of a
// refusal (0 when it succeeded).
async function createProject(client, name) {
  try {
    const res = await client.callTool({ name: 'create_project', arguments: { organization: ORG, name } });
    check(!res.isError, `create_project failed: ${JSON.stringify(res.content)}`);
    return { status: 0, project: res.structuredContent };
  } catch (e) {
    if (e instanceof StreamableHTTPError) return { status: e.code, error: e };
    if (e instanceof UnauthorizedError) return { status: 'redirect', error: e };
    throw e;
  }
}

async function main() {
  // 1. Connect: 401, discovery, the user signs in and consents.
  let session;
  {
    const transport = new StreamableHTTPClientTransport(MCP_URL, { authProvider: provider });
    const client = new Client({ name: 'deputy-mcp-e2e', version: '1.0.0' });
    try {
      await client.connect(transport);
      throw new Failure('connected without authorizing');
    } catch (e) {
      if (!(e instanceof UnauthorizedError)) throw e;
    }
    const asMeta = provider.discovery?.authorizationServerMetadata;
    check(asMeta?.issuer === ISSUER, `discovered issuer ${asMeta?.issuer}, want ${ISSUER}`);
    const id = provider.info?.client_id;
    switch (REGISTRATION) {
      case 'metadata document':
        check(id === CLIENT_METADATA_URL, `client id ${id}, want the metadata document URL ${CLIENT_METADATA_URL}`);
        break;
      case 'dynamic':
        check(id && provider.info.client_id_issued_at, `dynamic registration: ${JSON.stringify(provider.info)}`);
        break;
    }
    step('registered', { registration: REGISTRATION, client_id: id });
    await authorize(transport, 'connect');
    session = await connect();
  }
  let { client, transport } = session;
  const readScope = scopesOf(provider.stored.scope);
  check(readScope.includes('projects:read') && !readScope.includes('projects:write'), `first token scope ${provider.stored.scope}`);
  check(provider.stored.refresh_token, 'no refresh token: offline_access was not granted');

  // 2. Tools, and a read.
  const tools = (await client.listTools()).tools.map((t) => t.name).sort();
  check(tools.join(' ') === 'create_project list_projects', `tools: ${tools}`);
  const before = await listProjects(client);
  step('read', { tools, projects: before.length });

  // 3. A write with the read-only token: 403 insufficient_scope.
  let res = await createProject(client, 'e2e project');
  check(res.status === 403 || res.status === 'redirect', `create_project with a read-only token: ${res.status}`);
  step('insufficient_scope', { status: res.status, message: res.error.message });

  // 4. Authorize again with the union of scopes (SEP-2350), through the
  // consent page, which shows the write as a time-boxed approval.
  if (res.status === 403) {
    provider.hideRefreshToken = true; // typescript-sdk#2255
    const result = await auth(provider, { serverUrl: MCP_URL, scope: union(readScope, ['projects:read', 'projects:write']).join(' ') });
    check(result === 'REDIRECT', `re-authorization: ${result}`);
  }
  const page = await authorize(transport, 'step-up');
  check(/approval that lasts/.test(page), 'the consent page does not present the write as a time-boxed approval');
  check(scopesOf(provider.stored.scope).includes('projects:write'), `stepped-up token scope ${provider.stored.scope}`);
  const grants = await browser.grants();
  const approval = grants.find((g) => g.scopes.includes('projects:write'));
  check(approval, `no approval among the user's grants: ${JSON.stringify(grants)}`);
  step('approved', { grant: approval.id, clientId: approval.clientId, expiresAt: approval.expiresAt });

  // 5. The write goes through.
  ({ client, transport } = await connect());
  res = await createProject(client, 'e2e project');
  check(res.status === 0, `create_project after approval: ${res.status} ${res.error?.message}`);
  const after = await listProjects(client);
  check(after.some((p) => p.id === res.project.id), 'the new project is not listed');
  step('wrote', { project: res.project.id });

  // 6. After the approval's lifespan, a refresh is read-only and the next
  // write meets insufficient_scope again; reading still works.
  const wait = new Date(approval.expiresAt).getTime() - Date.now() + 1500;
  step('waiting for the approval to lapse', { ms: Math.max(wait, 0) });
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  const refreshed = await auth(provider, { serverUrl: MCP_URL });
  check(refreshed === 'AUTHORIZED', `refresh: ${refreshed}`);
  const lapsed = scopesOf(provider.stored.scope);
  check(lapsed.includes('projects:read') && !lapsed.includes('projects:write'), `refreshed after the approval lapsed: scope ${provider.stored.scope}`);
  ({ client, transport } = await connect());
  await listProjects(client);
  res = await createProject(client, 'too late');
  check(res.status === 403 || res.status === 'redirect', `create_project after the approval lapsed: ${res.status}`);
  step('read-only again', { scope: provider.stored.scope, status: res.status });
  await client.close();

  // 7. Audience: a token the same client got for another resource of the
  // same server (RFC 8707) is refused by /mcp, and works where it belongs.
  const metadata = provider.discovery.authorizationServerMetadata;
  const { authorizationUrl, codeVerifier } = await startAuthorization(ISSUER, {
    metadata, clientInformation: provider.info, redirectUrl: REDIRECT_URI, scope: 'projects:read', resource: OTHER_RESOURCE,
  });
  const { code } = await browser.consent(authorizationUrl);
  const other = await exchangeAuthorization(ISSUER, {
    metadata, clientInformation: provider.info, authorizationCode: code, codeVerifier, redirectUri: REDIRECT_URI, resource: OTHER_RESOURCE,
  });
  const probe = await fetch(MCP_URL, {
    method: 'POST',
    headers: { Authorization: `Bearer ${other.access_token}`, 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
  });
  await probe.text();
  check(probe.status === 401 && /invalid_token/.test(probe.headers.get('www-authenticate') ?? ''),
    `/mcp with a token for ${OTHER_RESOURCE}: ${probe.status} ${probe.headers.get('www-authenticate')}`);
  const home = await fetch(`${OTHER_RESOURCE}/orgs/${ORG}/projects`, { headers: { Authorization: `Bearer ${other.access_token}` } });
  await home.text();
  check(home.status === 200, `the other resource with its own token: ${home.status}`);
  step('audience', { mcp: probe.status, other: home.status });
}

main().then(
  () => {
    step('done');
    process.exit(0);
  },
  (e) => {
    console.error(e instanceof Failure ? `FAIL: ${e.message}` : e);
    process.exit(1);
  },
);
