// The Silo operator console: a page that calls the REST API from the
// browser with a key the operator types in. Built by host/api/console/build
// into dist/console.js, which `silo serve` embeds and serves at /console.
//
// Two rules hold throughout:
// - The API key lives in the module variable `apiKey` and a session token
//   in a local variable of `fetchAsUser`; neither is ever written to storage,
//   a cookie, the URL or the DOM.
// - Everything the API returns is hostile text (names, filters, row values):
//   it reaches the page through textContent and createElement only.

type Cell = string | Node;

interface Datasource {
  id: string;
  name: string;
  kind: string;
  connector: string;
  settings: unknown;
  has_credential: boolean;
  warnings?: string[];
}
interface Dataset {
  id: string;
  name: string;
  datasource_id: string;
  privacy: unknown;
}
interface Grant {
  dataset_id: string;
  permission: string;
  row_filter: string[];
  all_rows: boolean;
  columns: string[] | null;
}
interface Group {
  id: string;
  name: string;
  grants: Grant[];
}
interface EmbedUser {
  id: string;
  external_id: string;
  attributes: Record<string, unknown>;
  groups: string[];
}
interface Org {
  id: string;
  name: string;
  created_at: number;
}
interface SessionToken {
  session: { id: string; expires_at: number };
  token: string;
}
interface FetchResult {
  columns: string[];
  rows: unknown[][];
}
interface Enforced {
  dataset: string;
  filter: string;
  columns: string[];
  removed: string[];
  limits: Record<string, number>;
}
interface AuditRecord {
  seq: number;
  at: number;
  org_id: string | null;
  actor: string;
  action: string;
  target: string | null;
  filter_fingerprint: string | null;
  rows: number | null;
  bytes: number | null;
  outcome: string;
  duration_ms: number | null;
  detail: string | null;
  prev_hash: string;
  hash: string;
}
interface AuditPage {
  records: AuditRecord[];
  next?: number | null;
}

/** An error answer of the API, shown as `code: message`. */
class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The API key: here and nowhere else. */
let apiKey: string | null = null;
/** Bumped on every sign-in and log out: answers for an older one are dropped. */
let epoch = 0;
/** The signed-in org's lists, for names in place of ids. */
let datasets: Dataset[] = [];
let groups: Group[] = [];

// ---------------------------------------------------------------- the API

async function call<T>(method: string, path: string, bearer: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {
    authorization: `Bearer ${bearer}`,
    accept: 'application/json',
  };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    credentials: 'omit',
    referrerPolicy: 'no-referrer',
  });
  const text = await r.text();
  let parsed: unknown = undefined;
  try {
    parsed = text === '' ? undefined : JSON.parse(text);
  } catch {
    // Not JSON: only the status says what happened.
  }
  if (!r.ok) {
    const e = (parsed as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
    throw new ApiError(
      r.status,
      typeof e?.code === 'string' ? e.code : `http_${r.status}`,
      typeof e?.message === 'string' ? e.message : r.statusText,
    );
  }
  return parsed as T;
}

/** A call with the signed-in key. */
function withKey<T>(method: string, path: string, body?: unknown): Promise<T> {
  if (apiKey === null) return Promise.reject(new ApiError(401, 'unauthorized', 'signed out'));
  return call<T>(method, path, apiKey, body);
}

/** An error as `code: message` (the server's messages may already start with the code). */
function describe(e: unknown): string {
  if (e instanceof ApiError) {
    const prefix = `${e.code.replaceAll('_', ' ')}: `;
    return `${e.code}: ${e.message.startsWith(prefix) ? e.message.slice(prefix.length) : e.message}`;
  }
  return `error: ${e instanceof Error ? e.message : String(e)}`;
}

/** Every audit record the key may read, oldest first. */
async function auditAll(key: string): Promise<AuditRecord[]> {
  const all: AuditRecord[] = [];
  let after: number | null = 0;
  while (after !== null) {
    const page: AuditPage = await call<AuditPage>('GET', `/v1/audit?limit=1000&after=${after}`, key);
    all.push(...page.records);
    after = typeof page.next === 'number' && page.records.length > 0 ? page.next : null;
  }
  return all;
}

// ---------------------------------------------------------------- the DOM

function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (e === null) throw new Error(`#${id} is missing from the page`);
  return e as T;
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  text?: string,
  cls?: string,
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls !== undefined) e.className = cls;
  return e;
}

function fill(parent: HTMLElement, children: Cell[]): void {
  parent.replaceChildren(...children.map((c) => (typeof c === 'string' ? document.createTextNode(c) : c)));
}

/** Replaces a table's contents: a header row and body rows. */
function table(t: HTMLTableElement, head: string[], rows: Cell[][], empty = 'none'): void {
  const thead = el('thead');
  const hr = el('tr');
  for (const h of head) hr.append(el('th', h));
  thead.append(hr);
  const tbody = el('tbody');
  for (const row of rows) {
    const tr = el('tr');
    for (const c of row) {
      const td = el('td');
      fill(td, [c]);
      tr.append(td);
    }
    tbody.append(tr);
  }
  if (rows.length === 0) {
    const td = el('td', empty, 'empty');
    td.colSpan = head.length;
    const tr = el('tr');
    tr.append(td);
    tbody.append(tr);
  }
  t.replaceChildren(thead, tbody);
}

/** Key/value rows. */
function facts(t: HTMLTableElement, pairs: [string, Cell][]): void {
  const tbody = el('tbody');
  for (const [k, v] of pairs) {
    const tr = el('tr');
    tr.append(el('th', k));
    const td = el('td');
    fill(td, [v]);
    tr.append(td);
    tbody.append(tr);
  }
  t.replaceChildren(tbody);
  t.classList.add('facts');
}

function code(text: string): HTMLElement {
  return el('code', text);
}

/** A list of short items, into `ul` (a new one when not given). */
function chips(items: string[], ul: HTMLElement = el('ul', undefined, 'chips')): HTMLElement {
  ul.replaceChildren(...items.map((i) => el('li', i)));
  if (items.length === 0) ul.append(el('li', 'none', 'empty'));
  return ul;
}

function show(id: string, on: boolean): void {
  byId(id).hidden = !on;
}

/** A cell value as text: strings as they are, everything else as JSON. */
function cellText(v: unknown): string {
  return typeof v === 'string' ? v : JSON.stringify(v) ?? 'null';
}

const SECRET = /pass(word)?|secret|token|credential|private|api_?key/i;

/** A copy without the fields whose names say they hold a credential. */
function redact(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(redact);
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) if (!SECRET.test(k)) out[k] = redact(x);
    return out;
  }
  return v;
}

function when(unix: number): string {
  return new Date(unix * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

function datasetName(id: string): string {
  return datasets.find((d) => d.id === id)?.name ?? id;
}

// ---------------------------------------------------------------- sign in

async function signIn(key: string): Promise<void> {
  const mine = ++epoch;
  apiKey = key;
  show('login-error', false);
  try {
    const sources = await withKey<Datasource[]>('GET', '/v1/datasources');
    if (mine !== epoch) return;
    await showOrg(sources, mine);
  } catch (first) {
    if (mine !== epoch) return;
    if (!(first instanceof ApiError && first.status === 401)) return refuse(describe(first));
    // Not an organization's key: an operator's, or none at all.
    try {
      const orgs = await withKey<Org[]>('GET', '/v1/orgs');
      if (mine !== epoch) return;
      showOperator(orgs);
    } catch (second) {
      if (mine !== epoch) return;
      const e = second instanceof ApiError && second.status === 401 ? first : second;
      refuse(`Key not accepted (${describe(e)})`);
      return;
    }
  }
  await loadAudit();
}

function refuse(message: string): void {
  forget();
  const p = byId('login-error');
  p.textContent = message;
  p.hidden = false;
}

/** Drops the key and everything shown with it. */
function forget(): void {
  apiKey = null;
  epoch++;
  datasets = [];
  groups = [];
  for (const id of ['orgs', 'datasources', 'datasets', 'groups', 'embed-users', 'fetch-user',
    'fetch-dataset', 'rows', 'enforced-filter', 'enforced-columns', 'enforced-removed',
    'enforced-limits', 'fetch-audit', 'metadata', 'row-count', 'fetch-status', 'fetch-error',
    'audit-chain', 'audit-log', 'who']) {
    const e = byId(id);
    e.replaceChildren();
    for (const k of Object.keys(e.dataset)) delete e.dataset[k];
  }
  for (const id of ['operator', 'org', 'audit', 'logout', 'fetch-result', 'fetch-error']) show(id, false);
  show('login', true);
}

function signedIn(who: string): void {
  byId('who').textContent = who;
  show('login', false);
  show('logout', true);
  show('audit', true);
}

function showOperator(orgs: Org[]): void {
  signedIn('operator key');
  table(byId('orgs'), ['Name', 'Id', 'Created'],
    orgs.map((o) => [o.name, code(o.id), when(o.created_at)]), 'no organizations yet');
  show('operator', true);
}

async function showOrg(sources: Datasource[], mine: number): Promise<void> {
  const [ds, gs, users] = await Promise.all([
    withKey<Dataset[]>('GET', '/v1/datasets'),
    withKey<Group[]>('GET', '/v1/groups'),
    withKey<EmbedUser[]>('GET', '/v1/embed-users'),
  ]);
  if (mine !== epoch) return;
  datasets = ds;
  groups = gs;
  signedIn('organization key');

  table(byId('datasources'), ['Name', 'Id', 'Kind', 'Connector', 'Settings', 'Credential'],
    sources.map((s) => {
      const settings = redact(s.settings);
      const notes = el('div');
      notes.append(settings !== null && typeof settings === 'object' && Object.keys(settings).length > 0
        ? chips(Object.entries(settings).map(([k, v]) => `${k} = ${cellText(v)}`)) : '—');
      for (const w of s.warnings ?? []) notes.append(el('div', `warning: ${w}`, 'warning'));
      return [s.name, code(s.id), s.kind, s.connector, notes, s.has_credential ? 'sealed' : 'none'];
    }), 'no datasources');

  table(byId('datasets'), ['Name', 'Id', 'Datasource', 'Privacy policy'],
    ds.map((d) => [
      d.name,
      code(d.id),
      sources.find((s) => s.id === d.datasource_id)?.name ?? d.datasource_id,
      d.privacy == null ? 'default' : code(JSON.stringify(redact(d.privacy))),
    ]), 'no datasets');

  table(byId('groups'), ['Name', 'Id', 'Grants'], gs.map((g) => {
    const list = el('ul', undefined, 'grants');
    for (const grant of g.grants) {
      const li = el('li');
      li.append(el('strong', datasetName(grant.dataset_id)), ` (${grant.permission}) rows: `);
      if (grant.all_rows) li.append('all');
      else if (grant.row_filter.length === 0) li.append('none');
      grant.row_filter.forEach((f, i) => {
        if (i > 0) li.append(' or ');
        li.append(code(f));
      });
      li.append('; columns: ', grant.columns === null ? 'all' : grant.columns.join(', ') || 'none');
      list.append(li);
    }
    if (g.grants.length === 0) list.append(el('li', 'no grants', 'empty'));
    return [g.name, code(g.id), list];
  }), 'no groups');

  table(byId('embed-users'), ['User', 'Id', 'Attributes', 'Groups'], users.map((u) => [
    u.external_id,
    code(u.id),
    chips(Object.entries(redact(u.attributes) as Record<string, unknown>)
      .map(([k, v]) => `${k} = ${cellText(v)}`)),
    chips(u.groups.map((id) => groups.find((g) => g.id === id)?.name ?? id)),
  ]), 'no embed users');

  const userSelect = byId<HTMLSelectElement>('fetch-user');
  userSelect.replaceChildren(...users.map((u) => new Option(u.external_id, u.external_id)));
  const dsSelect = byId<HTMLSelectElement>('fetch-dataset');
  dsSelect.replaceChildren(...ds.map((d) => new Option(d.name, d.id)));
  byId<HTMLButtonElement>('fetch-run').disabled = users.length === 0 || ds.length === 0;
  show('org', true);
}

// ---------------------------------------------------------------- fetch as a user

async function fetchAsUser(user: string, dataset: string): Promise<void> {
  const mine = epoch;
  // The key this run started with: the session it mints is revoked with it
  // even if the operator logs out meanwhile.
  const key = apiKey;
  if (key === null) return;
  const current = () => mine === epoch;
  const status = byId('fetch-status');
  const step = (s: string) => {
    if (current()) status.textContent = s;
  };
  show('fetch-error', false);
  show('fetch-result', false);
  let sessionId: string | null = null;
  // The session token: in this variable only, dropped when the session is revoked.
  let token: string | null = null;
  try {
    step('minting a session…');
    const minted = await call<SessionToken>('POST', '/v1/sessions', key,
      { embed_user: user, datasets: [dataset], ttl_seconds: 120 });
    sessionId = minted.session.id;
    token = minted.token;

    step('fetching as the user…');
    const path = `/v1/embed/datasets/${encodeURIComponent(dataset)}`;
    const result = await call<FetchResult>('POST', `${path}/fetch`, token, { limit: 100 });
    step('reading what the host enforced…');
    const enforced = await call<Enforced>('GET',
      `/v1/sessions/${encodeURIComponent(sessionId)}/enforced/${encodeURIComponent(dataset)}`, key);
    step('reading the metadata…');
    const metadata = await call<unknown>('GET', `${path}/metadata`, token);
    step('finding the audit record…');
    const actor = `session:${sessionId}`;
    const record = (await auditAll(key)).reverse().find((r) => r.actor === actor && r.action === 'fetch');
    if (!current()) return;

    showRows(result);
    showEnforced(enforced);
    showAuditRecord(record, sessionId);
    byId('metadata').textContent = JSON.stringify(metadata, null, 2);
    show('fetch-result', true);
  } catch (e) {
    if (!current()) return;
    const p = byId('fetch-error');
    p.textContent = describe(e);
    p.hidden = false;
  } finally {
    token = null;
    if (sessionId !== null) {
      try {
        await call<void>('DELETE', `/v1/sessions/${encodeURIComponent(sessionId)}`, key);
        step(`session ${sessionId} (user ${user}) revoked`);
      } catch (e) {
        step(`session ${sessionId} not revoked: ${describe(e)}; it expires within two minutes`);
      }
      if (current()) await loadAudit();
    } else {
      step('');
    }
  }
}

function showRows(r: FetchResult): void {
  const n = r.rows.length;
  const count = byId('row-count');
  count.textContent = `${n} ${n === 1 ? 'row' : 'rows'}${n === 100 ? ' (the limit asked for)' : ''}`;
  count.dataset.count = String(n);
  table(byId('rows'), r.columns, r.rows.map((row) => row.map(cellText)), 'no rows');
}

function showEnforced(e: Enforced): void {
  byId('enforced-filter').textContent = e.filter;
  chips(e.columns, byId('enforced-columns'));
  chips(e.removed, byId('enforced-removed'));
  const l = e.limits;
  const bytes = (b: number) => `${b.toLocaleString('en')} bytes`;
  const ms = (m: number) => `${m.toLocaleString('en')} ms`;
  facts(byId('enforced-limits'), [
    ['Rows per fetch', l.max_rows.toLocaleString('en')],
    ['Bytes per fetch', bytes(l.max_bytes)],
    ['Largest row', bytes(l.max_row_bytes)],
    ['Connector call', ms(l.timeout_ms)],
    ['Statement timeout', ms(l.statement_timeout_ms)],
    ['Whole fetch', ms(l.fetch_timeout_ms)],
    ['Connector memory', bytes(l.memory_bytes)],
  ]);
}

function showAuditRecord(r: AuditRecord | undefined, session: string): void {
  const t = byId<HTMLTableElement>('fetch-audit');
  if (r === undefined) {
    facts(t, [['Record', `no fetch record of session ${session} found`]]);
    return;
  }
  const opt = (v: number | string | null) => (v === null ? '—' : String(v));
  facts(t, [
    ['Seq', String(r.seq)],
    ['At', when(r.at)],
    ['Actor', r.actor],
    ['Action', r.action],
    ['Target', opt(r.target)],
    ['Outcome', r.outcome],
    ['Rows', opt(r.rows)],
    ['Bytes', opt(r.bytes)],
    ['Duration', r.duration_ms === null ? '—' : `${r.duration_ms} ms`],
    ['Filter fingerprint', code(opt(r.filter_fingerprint))],
    ['Hash', code(r.hash)],
  ]);
  t.dataset.seq = String(r.seq);
}

// ---------------------------------------------------------------- the audit log

const GENESIS = '0'.repeat(64);
/** Most records the log table shows (the chain is checked over all). */
const SHOWN = 1000;

/**
 * The hash `host/control/src/audit.rs` chains: SHA-256 of the previous
 * hash, a newline and the fields as a JSON array (JSON.stringify escapes as
 * serde_json does). Null where the page is not a secure context.
 */
async function recordHash(r: AuditRecord): Promise<string | null> {
  if (globalThis.crypto?.subtle === undefined) return null;
  const fields = JSON.stringify([r.seq, r.at, r.org_id ?? null, r.actor, r.action, r.target ?? null,
    r.filter_fingerprint ?? null, r.rows ?? null, r.bytes ?? null, r.outcome,
    r.duration_ms ?? null, r.detail ?? null]);
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(`${r.prev_hash}\n${fields}`));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

type Link = 'linked' | 'gap' | 'broken';

async function loadAudit(): Promise<void> {
  const mine = epoch;
  const status = byId('audit-chain');
  if (apiKey === null) return;
  try {
    const records = await auditAll(apiKey);
    if (mine !== epoch) return;
    const links: Link[] = [];
    let checked = 0;
    let gaps = 0;
    let recomputed = true;
    let broken: string | null = null;
    for (let i = 0; i < records.length; i++) {
      const r = records[i];
      const before = i > 0 ? records[i - 1] : null;
      // Only consecutive records can be compared: another organization's
      // records sit in the gaps, and an org key cannot read them.
      let link: Link = 'gap';
      if (r.seq === 1 || (before !== null && r.seq === before.seq + 1)) {
        link = r.prev_hash === (r.seq === 1 ? GENESIS : before!.hash) ? 'linked' : 'broken';
        checked++;
      } else {
        gaps++;
      }
      if (link === 'broken' && broken === null) {
        broken = `chain broken at seq ${r.seq}: its prev_hash is not seq ${r.seq - 1}'s hash`;
      }
      const h = await recordHash(r);
      if (h === null) recomputed = false;
      else if (h !== r.hash) {
        link = 'broken';
        broken ??= `chain broken at seq ${r.seq}: its contents do not match its hash`;
      }
      links.push(link);
    }
    if (mine !== epoch) return;
    const n = records.length;
    status.dataset.state = broken === null ? 'intact' : 'broken';
    status.className = broken === null ? 'ok' : 'error';
    status.textContent = broken ?? [
      `chain intact over ${n} ${n === 1 ? 'record' : 'records'}`,
      `: ${checked} ${checked === 1 ? 'link' : 'links'} to the previous record checked`,
      gaps > 0 ? `, ${gaps} not comparable (the record before is another organization's or the operator's,`
        + ' which this key cannot read)' : '',
      recomputed ? ', every hash recomputed' : ' (hashes not recomputed: no Web Crypto here)',
      '.',
    ].join('');

    const rows: Cell[][] = [];
    for (let i = n - 1; i >= 0 && rows.length < SHOWN; i--) {
      const r = records[i];
      const mark = { linked: '✓ linked', gap: '· gap', broken: '✗ broken' }[links[i]];
      rows.push([String(r.seq), when(r.at), r.actor, r.action, r.target ?? '—', r.outcome,
        r.rows === null ? '—' : String(r.rows), r.bytes === null ? '—' : String(r.bytes),
        el('span', mark, links[i]), code(r.hash.slice(0, 12))]);
    }
    table(byId('audit-log'), ['Seq', 'At (UTC)', 'Actor', 'Action', 'Target', 'Outcome', 'Rows',
      'Bytes', 'Chain', 'Hash'], rows, 'no records');
    if (n > SHOWN) status.append(` Showing the newest ${SHOWN}.`);
  } catch (e) {
    if (mine !== epoch) return;
    status.className = 'error';
    status.textContent = describe(e);
  }
}

// ---------------------------------------------------------------- wiring

function start(): void {
  forget();
  const input = byId<HTMLInputElement>('key');
  byId('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const key = input.value.trim();
    input.value = '';
    if (key !== '') void signIn(key);
  });
  byId('logout').addEventListener('click', () => {
    forget();
    input.value = '';
    input.focus();
  });
  byId('fetch-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const button = byId<HTMLButtonElement>('fetch-run');
    const user = byId<HTMLSelectElement>('fetch-user').value;
    const dataset = byId<HTMLSelectElement>('fetch-dataset').value;
    if (user === '' || dataset === '' || button.disabled) return;
    button.disabled = true;
    document.body.dataset.busy = 'fetch';
    void fetchAsUser(user, dataset).finally(() => {
      button.disabled = false;
      delete document.body.dataset.busy;
    });
  });
  byId('audit-refresh').addEventListener('click', () => void loadAudit());
  input.focus();
  document.body.dataset.ready = 'true';
}

start();

// An ES module (loaded with type="module"), with nothing to export.
export {};
