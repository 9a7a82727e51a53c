// The operator console in a real headless Chromium against a real
// `silo serve` with a fresh data directory: an org with a files dataset of
// two tenants, a group whose grant filters by `{{user.tenant}}` and drops a
// column, and two embed users. Run by ../test (node --test).
//
// The server listens on a Unix socket in its data directory. The page is
// at http://localhost (a secure context, as a deployment's https origin
// is: Web Crypto is there); the browser's requests to it are handed, as
// they are, to the server over the socket and its answers back as they
// are. No network policy of the machine running the tests can redirect a
// local socket, and no other process reaches it.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { Agent, fetch as undiciFetch } from 'undici';

const TARGET = process.env.CARGO_TARGET_DIR || '/var/tmp/silo-ci-target';
const SILO = process.env.SILO_BIN || join(TARGET, 'debug', 'silo');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = process.env.SILO_ARTIFACTS || '/tmp/silo-artifacts';
const HERE = new URL('..', import.meta.url);

// A hostile cell: it must show as text, never become an element.
const HOSTILE = '<img id="xss" src="x"><b id="xss2">bold</b>';
const CSV = [
  'id,tenant,amount,note,secret_note',
  '1,acme,10.50,first,acme-secret-1',
  `2,acme,20.00,"${HOSTILE.replaceAll('"', '""')}",acme-secret-2`,
  '3,globex,30.25,third,globex-secret-3',
  '4,acme,5.00,fourth,acme-secret-4',
  '5,globex,7.75,fifth,globex-secret-5',
  '',
].join('\n');
const ROWS = { alice: 3, bob: 2 };

let server; // the silo serve child process
let serverLog = '';
let dataDir;
const base = 'http://localhost';
let agent; // undici over the server's socket
let operatorKey;
let orgKey;
let datasetId;
let browser;
let page;
const pageErrors = [];
const consoleErrors = [];
const sessionTokens = []; // every token the page was handed, seen from outside

/** A request to the server over its socket. */
function fetch(url, init = {}) {
  return undiciFetch(url, { ...init, dispatcher: agent });
}

/** Headers a proxy does not pass on (the socket's connection is its own). */
const HOP = new Set(['host', 'connection', 'keep-alive', 'transfer-encoding', 'content-length', 'te', 'upgrade',
  'proxy-connection', 'accept-encoding', 'content-encoding']);
const passOn = (headers) => Object.fromEntries(Object.entries(headers).filter(([k]) => !HOP.has(k.toLowerCase())));

/** Starts `silo serve` on a socket in `dir`; resolves when it serves. */
function serve(dir) {
  const socket = join(dir, 'api.sock');
  agent = new Agent({ connect: { socketPath: socket } });
  return new Promise((resolve, reject) => {
    server = spawn(SILO, ['serve', '--data-dir', dir, '--listen', `unix:${socket}`], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const timer = setTimeout(() => reject(new Error(`silo serve did not start:\n${serverLog}`)), 60_000);
    server.stderr.setEncoding('utf8');
    server.stderr.on('data', (chunk) => {
      serverLog = (serverLog + chunk).slice(-20_000);
      if (serverLog.includes(`silo serving on unix:${socket} `)) {
        clearTimeout(timer);
        resolve();
      }
    });
    server.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`silo serve exited (${code}):\n${serverLog}`));
    });
  });
}

/** One API call; fails the test unless the status is `expect`. */
async function api(key, method, path, body, { expect = 200, type = 'application/json' } = {}) {
  const headers = { authorization: `Bearer ${key}` };
  if (body !== undefined) headers['content-type'] = type;
  const r = await fetch(base + path, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await r.text();
  assert.equal(r.status, expect, `${method} ${path}: ${r.status} ${text}`);
  return text === '' ? undefined : JSON.parse(text);
}

const text = (sel) => page.locator(sel).innerText();
const items = (sel) => page.locator(`${sel} li`).allInnerTexts();

/** The fetch result table as {head, rows}. */
function rowsTable() {
  return page.evaluate(() => {
    const t = document.getElementById('rows');
    const head = [...t.querySelectorAll('thead th')].map((th) => th.textContent);
    const rows = [...t.querySelectorAll('tbody tr')].map((tr) => [...tr.cells].map((td) => td.textContent));
    return { head, rows };
  });
}

/** The key/value table of the fetch's audit record. */
function auditFacts() {
  return page.evaluate(() => Object.fromEntries(
    [...document.querySelectorAll('#fetch-audit tr')].map((tr) => [tr.cells[0].textContent, tr.cells[1].textContent]),
  ));
}

async function signIn(key) {
  await page.fill('#key', key);
  await page.click('#login-submit');
}

async function logOut() {
  await page.click('#logout');
  await page.waitForSelector('#login', { state: 'visible' });
}

async function fetchAs(user) {
  await page.selectOption('#fetch-user', user);
  await page.selectOption('#fetch-dataset', datasetId);
  await page.click('#fetch-run');
  await page.waitForFunction(
    (u) => document.getElementById('fetch-status').textContent.includes(`(user ${u}) revoked`),
    user,
  );
  await page.waitForFunction(() => document.body.dataset.busy === undefined);
  assert.equal(await page.locator('#fetch-error').isVisible(), false, await text('#fetch-error'));
  assert.ok(await page.locator('#fetch-result').isVisible());
}

describe('the operator console', () => {
  before(async () => {
    assert.ok(existsSync(SILO), `no silo binary at ${SILO}: build it (cargo build -p silo-host) or set SILO_BIN`);
    dataDir = mkdtempSync(join(tmpdir(), 'silo-console-'));
    operatorKey = execFileSync(SILO, ['api-keys', 'create', '--admin', '--data-dir', dataDir], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    }).trim();
    await serve(dataDir);

    await api(operatorKey, 'POST', '/v1/orgs', { name: 'console-org' }, { expect: 201 });
    orgKey = (await api(operatorKey, 'POST', '/v1/orgs/console-org/api-keys', { name: 'console' }, { expect: 201 })).token;
    await api(orgKey, 'POST', '/v1/datasources', { name: 'uploads', kind: 'files' }, { expect: 201 });
    datasetId = (await api(orgKey, 'POST', '/v1/datasets', { datasource: 'uploads', name: 'orders' }, { expect: 201 })).id;
    const stored = await api(orgKey, 'POST', `/v1/datasets/${datasetId}/upload?partition_by=tenant`, CSV, { type: 'text/csv' });
    assert.equal(stored.rows, 5);
    await api(orgKey, 'PUT', '/v1/groups/customers', {
      grants: [{
        dataset_id: datasetId,
        permission: 'read',
        row_filter: ['tenant = {{user.tenant}}'],
        columns: ['id', 'tenant', 'amount', 'note'],
      }],
    });
    await api(orgKey, 'PUT', '/v1/embed-users/alice', { attributes: { tenant: 'acme' }, groups: ['customers'] });
    await api(orgKey, 'PUT', '/v1/embed-users/bob', { attributes: { tenant: 'globex' }, groups: ['customers'] });

    browser = await chromium.launch({ executablePath: CHROMIUM, chromiumSandbox: false });
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    await context.route(`${base}/**`, async (route) => {
      const request = route.request();
      const r = await fetch(request.url(), {
        method: request.method(),
        headers: passOn(await request.allHeaders()),
        body: request.postDataBuffer() ?? undefined,
        redirect: 'manual',
      });
      await route.fulfill({
        status: r.status,
        headers: passOn(Object.fromEntries(r.headers)),
        body: Buffer.from(await r.arrayBuffer()),
      });
    });
    page = await context.newPage();
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(`${m.text()} (${m.location().url})`);
    });
    page.on('response', async (r) => {
      if (r.request().method() === 'POST' && new URL(r.url()).pathname === '/v1/sessions' && r.ok()) {
        sessionTokens.push((await r.json()).token);
      }
    });
  });

  after(async () => {
    await browser?.close();
    await agent?.close();
    if (server && server.exitCode === null) {
      const exited = new Promise((resolve) => server.once('exit', resolve));
      server.kill('SIGTERM');
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 10_000))]);
      if (server.exitCode === null) server.kill('SIGKILL');
    }
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it('is the console in this checkout (the binary embeds its files)', async () => {
    for (const [path, file] of [['/console', 'index.html'], ['/console/console.js', 'dist/console.js'],
      ['/console/console.css', 'console.css']]) {
      const served = await (await fetch(base + path)).text();
      assert.ok(served === readFileSync(new URL(file, HERE), 'utf8'),
        `${SILO} serves another ${file}: rebuild it (cargo build -p silo-host)`);
    }
  });

  it('is served with its Content-Security-Policy', async () => {
    const response = await page.goto(`${base}/console`);
    assert.equal(response.status(), 200);
    const csp = response.headers()['content-security-policy'] ?? '';
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'/);
    await page.waitForSelector('body[data-ready="true"]');
    assert.ok(await page.locator('#login').isVisible());
    assert.equal(await page.getAttribute('#key', 'type'), 'password');
  });

  it('refuses a key the API does not accept', async () => {
    await signIn('silo_key_not.a-real-key');
    await page.waitForSelector('#login-error', { state: 'visible' });
    assert.match(await text('#login-error'), /^Key not accepted \(unauthorized: [^:]+\)$/);
    assert.equal(await page.inputValue('#key'), '');
    assert.ok(await page.locator('#login').isVisible());
  });

  it('shows an operator key the organizations, and says org resources need an org key', async () => {
    await signIn(operatorKey);
    await page.waitForSelector('#operator', { state: 'visible' });
    assert.match(await text('#orgs'), /console-org/);
    assert.match(await text('#operator'), /need that organization's key/);
    assert.equal(await page.locator('#org').isVisible(), false);
    await page.waitForSelector('#audit-chain[data-state]');
    // The operator reads the whole log: every link is checkable.
    assert.match(await text('#audit-chain'), /^chain intact over \d+ records: \d+ links .*every hash recomputed/);
    await logOut();
  });

  it('lists the organization\'s datasources, datasets, groups and embed users', async () => {
    await signIn(orgKey);
    await page.waitForSelector('#org', { state: 'visible' });
    assert.equal(await page.inputValue('#key'), '');
    assert.equal(await text('#who'), 'organization key');
    const sources = await text('#datasources');
    assert.match(sources, /uploads/);
    assert.match(sources, /files/);
    const sets = await text('#datasets');
    assert.match(sets, /orders/);
    assert.ok(sets.includes(datasetId));
    const groups = await text('#groups');
    assert.match(groups, /customers/);
    assert.ok(groups.includes('tenant = {{user.tenant}}'), groups);
    assert.match(groups, /columns: id, tenant, amount, note/);
    const users = await text('#embed-users');
    assert.match(users, /alice/);
    assert.match(users, /bob/);
    assert.match(users, /tenant = acme/);
    assert.match(users, /tenant = globex/);
    assert.deepEqual(await page.locator('#fetch-user option').allInnerTexts(), ['alice', 'bob']);
  });

  it('fetches as alice: only acme rows, the filter, the removed column, the audit record, the metadata', async () => {
    await fetchAs('alice');
    const { head, rows } = await rowsTable();
    assert.deepEqual(head, ['id', 'tenant', 'amount', 'note']);
    const tenant = head.indexOf('tenant');
    assert.equal(rows.length, ROWS.alice);
    assert.ok(rows.every((r) => r[tenant] === 'acme'), JSON.stringify(rows));
    assert.equal(await page.getAttribute('#row-count', 'data-count'), String(ROWS.alice));
    assert.equal(await text('#row-count'), `${ROWS.alice} rows`);

    // Hostile cell text stays text.
    assert.ok(rows.some((r) => r.includes(HOSTILE)), JSON.stringify(rows));
    assert.equal(await page.evaluate(() => document.getElementById('xss') ?? document.getElementById('xss2')), null);

    const filter = await text('#enforced-filter');
    assert.match(filter, /acme/);
    assert.doesNotMatch(filter, /globex/);
    assert.deepEqual(await items('#enforced-removed'), ['secret_note']);
    assert.ok(!(await items('#enforced-columns')).includes('secret_note'));
    assert.match(await text('#enforced-limits'), /Rows per fetch/);

    const record = await auditFacts();
    assert.equal(record.Action, 'fetch');
    assert.equal(record.Outcome, 'ok');
    assert.equal(record.Rows, String(ROWS.alice));
    assert.match(record.Actor, /^session:ses_/);
    assert.match(record['Filter fingerprint'], /^[0-9a-f]{16,}$/);
    assert.match(record.Hash, /^[0-9a-f]{64}$/);

    const metadata = await text('#metadata');
    assert.ok(metadata.length > 2);
    JSON.parse(metadata);
    assert.doesNotMatch(metadata, /secret/);

    // The session the page minted is revoked.
    const id = record.Actor.slice('session:'.length);
    const sessions = await api(orgKey, 'GET', '/v1/sessions');
    assert.ok(sessions.find((s) => s.id === id)?.revoked_at, JSON.stringify(sessions));
    const revoked = await fetch(`${base}/v1/embed/datasets/${datasetId}/fetch`, {
      method: 'POST',
      headers: { authorization: `Bearer ${sessionTokens.at(-1)}`, 'content-type': 'application/json' },
      body: '{}',
    });
    assert.equal(revoked.status, 401);
  });

  it('fetches as bob: only globex rows', async () => {
    await fetchAs('bob');
    const { head, rows } = await rowsTable();
    const tenant = head.indexOf('tenant');
    assert.equal(rows.length, ROWS.bob);
    assert.ok(rows.every((r) => r[tenant] === 'globex'), JSON.stringify(rows));
    assert.match(await text('#enforced-filter'), /globex/);
    assert.equal((await auditFacts()).Rows, String(ROWS.bob));
  });

  it('shows the org\'s audit log, newest first, with its chain checked', async () => {
    const records = [];
    for (let after = 0; after !== null;) {
      const p = await api(orgKey, 'GET', `/v1/audit?limit=1000&after=${after}`);
      records.push(...p.records);
      after = p.next ?? null;
    }
    await page.waitForFunction(
      (n) => document.querySelectorAll('#audit-log tbody tr').length === n,
      records.length,
    );
    assert.equal(await page.getAttribute('#audit-chain', 'data-state'), 'intact');
    assert.match(await text('#audit-chain'), new RegExp(`^chain intact over ${records.length} records`));
    const seqs = await page.locator('#audit-log tbody tr td:first-child').allInnerTexts();
    assert.deepEqual(seqs, records.map((r) => String(r.seq)).reverse());
    assert.ok(records.filter((r) => r.action === 'fetch').length >= 2);

    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'console.png'), fullPage: true });
  });

  it('keeps the key and session tokens out of the page, storage and cookies', async () => {
    assert.equal(sessionTokens.length, 2);
    const html = await page.evaluate(() => document.documentElement.outerHTML);
    for (const secret of [orgKey, operatorKey, ...sessionTokens]) {
      assert.ok(!html.includes(secret), 'a credential is in the DOM');
      assert.ok(!page.url().includes(secret));
    }
    const stored = await page.evaluate(async () => ({
      local: localStorage.length,
      session: sessionStorage.length,
      cookie: document.cookie,
      idb: (await indexedDB.databases()).length,
    }));
    assert.deepEqual(stored, { local: 0, session: 0, cookie: '', idb: 0 });
    assert.deepEqual(await page.context().cookies(), []);
  });

  it('forgets everything on log out', async () => {
    await logOut();
    assert.equal(await page.inputValue('#key'), '');
    assert.equal(await page.locator('#org').isVisible(), false);
    assert.equal(await page.locator('#datasets tr').count(), 0);
    assert.equal(await page.locator('#rows tr').count(), 0);
  });

  it('ran without script errors or CSP violations', () => {
    assert.deepEqual(pageErrors, []);
    // Expected: the browser's notes on the 401s of telling the kind of a
    // key (an org's, an operator's, none), and on the favicon the server
    // does not have.
    const expected = /status of 401 .*\/v1\/(datasources|orgs)\)$|status of 404 .*\/favicon\.ico\)$/;
    const unexpected = consoleErrors.filter((m) => !expected.test(m));
    assert.deepEqual(unexpected, []);
  });
});
