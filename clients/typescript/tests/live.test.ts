// Every SDK call against a real `silo serve` on loopback: two organizations,
// each with a files datasource, an uploaded CSV of two tenants' orders, a
// group whose row filter is `tenant = {{user.tenant}}`, and an embed user in
// each tenant.
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { inspect } from 'node:util';

import {
  ConflictError,
  InvalidRequestError,
  NotFoundError,
  SiloClient,
  SiloError,
  SiloSession,
  UnauthorizedError,
  isSiloError,
} from '../src/index.js';
import type { Dataset, EmbedUser, Group, Row, SessionWithToken, UploadSummary } from '../src/index.js';
import { createOrg, startSilo } from './silo-server.js';
import type { SiloServer } from './silo-server.js';

const ORDERS_CSV = [
  'id,tenant,amount,note',
  '1,acme,10.50,first',
  '2,globex,30.25,big',
  '3,acme,20.00,second',
  '4,globex,5.00,small',
  '5,acme,7.25,third',
  '',
].join('\n');

const ACME = [
  { id: 1, tenant: 'acme', amount: 10.5, note: 'first' },
  { id: 3, tenant: 'acme', amount: 20, note: 'second' },
  { id: 5, tenant: 'acme', amount: 7.25, note: 'third' },
];
const GLOBEX = [
  { id: 2, tenant: 'globex', amount: 30.25, note: 'big' },
  { id: 4, tenant: 'globex', amount: 5, note: 'small' },
];

/** An organization as the tests set it up. */
interface Org {
  key: string;
  client: SiloClient;
  orders: Dataset;
  events: Dataset;
  group: Group;
  alice: EmbedUser;
  bob: EmbedUser;
  upload: UploadSummary;
  progress: Array<[number, number | undefined]>;
}

let silo: SiloServer;
let a: Org;
let b: Org;

async function setUp(name: string): Promise<Org> {
  const key = await createOrg(silo, name);
  const client = new SiloClient({ baseUrl: silo.baseUrl, apiKey: key, fetch: silo.fetch });
  const source = await client.datasources.create({ name: 'uploads', kind: 'files' });
  assert.equal(source.kind, 'files');
  const orders = await client.datasets.create({ datasource: 'uploads', name: 'orders' });
  const events = await client.datasets.create({ datasource: source.id, name: 'events' });
  const progress: Array<[number, number | undefined]> = [];
  const upload = await client.datasets.upload(orders.id, ORDERS_CSV, {
    partitionBy: 'tenant',
    chunkSize: 16,
    onProgress: (sent, total) => progress.push([sent, total]),
  });
  const group = await client.groups.put('customers', {
    grants: [
      { dataset_id: orders.id, permission: 'read', row_filter: ['tenant = {{user.tenant}}'] },
      { dataset_id: events.id, permission: 'read', row_filter: ['tenant = {{user.tenant}}'] },
    ],
  });
  const alice = await client.embedUsers.upsert('alice', { attributes: { tenant: 'acme' }, groups: ['customers'] });
  const bob = await client.embedUsers.upsert('bob', { attributes: { tenant: 'globex' }, groups: [group.id] });
  return { key, client, orders, events, group, alice, bob, upload, progress };
}

async function rowsOf(it: AsyncIterable<Row>): Promise<Row[]> {
  const out: Row[] = [];
  for await (const row of it) out.push(row);
  return out;
}

/** The error `p` rejects with (fails if it resolves). */
async function failure(p: Promise<unknown>): Promise<SiloError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof SiloError, `not a SiloError: ${inspect(e)}`);
    return e;
  }
  assert.fail('expected the call to fail');
}

/** A session for `user` of `org`, and its embed client. */
async function sessionFor(org: Org, user: string, ttlSeconds = 600): Promise<[SessionWithToken, SiloSession]> {
  const minted = await org.client.sessions.create({ embedUser: user, ttlSeconds });
  return [minted, org.client.asSession(minted.token)];
}

before(async () => {
  silo = await startSilo();
  a = await setUp('org-a');
  b = await setUp('org-b');
});

after(async () => {
  await silo?.stop();
});

describe('backend calls (API key)', () => {
  it('datasources.create and datasets.create/list', async () => {
    const list = await a.client.datasets.list();
    assert.deepEqual(list.map((d) => d.name).sort(), ['events', 'orders']);
    assert.ok(list.every((d) => d.org_id === a.orders.org_id));
    assert.deepEqual(
      (await a.client.datasources.list()).map((d) => [d.name, d.kind]),
      [['uploads', 'files']],
    );
    assert.equal((await a.client.datasources.get('uploads')).id, a.orders.datasource_id);
  });

  it('datasets.upload streams in chunks and reports bytes sent, monotonic, ending at the total', () => {
    const total = new TextEncoder().encode(ORDERS_CSV).byteLength;
    assert.ok(a.progress.length >= Math.ceil(total / 16), `only ${a.progress.length} progress calls`);
    let last = 0;
    for (const [sent, of] of a.progress) {
      assert.equal(of, total);
      assert.ok(sent > last && sent <= total, `progress went from ${last} to ${sent}`);
      last = sent;
    }
    assert.deepEqual(a.progress.at(-1), [total, total]);
    assert.equal(a.upload.rows, 5);
    assert.deepEqual(a.upload.partitions, ['acme', 'globex']);
    assert.deepEqual(
      a.upload.columns.map((c) => c.name),
      ['id', 'tenant', 'amount', 'note'],
    );
  });

  it('datasets.upload takes a Node stream of NDJSON with a given size', async () => {
    const lines = ['{"tenant":"acme","kind":"login"}\n', '{"tenant":"globex","kind":"logout"}\n', '{"tenant":"acme","kind":"view"}\n'];
    const size = lines.join('').length;
    const progress: Array<[number, number | undefined]> = [];
    const summary = await a.client.datasets.upload(a.events.id, Readable.from(lines.map((l) => Buffer.from(l))), {
      contentType: 'application/x-ndjson',
      size,
      onProgress: (sent, total) => progress.push([sent, total]),
    });
    assert.equal(summary.rows, 3);
    assert.deepEqual(progress.at(-1), [size, size]);
    await b.client.datasets.upload(b.events.id, '{"tenant":"acme","kind":"b-only"}\n', {
      contentType: 'application/x-ndjson',
    });
  });

  it('embedUsers.upsert/get/list/delete', async () => {
    assert.equal(a.alice.external_id, 'alice');
    assert.deepEqual(a.alice.attributes, { tenant: 'acme' });
    assert.deepEqual(a.alice.groups, [a.group.id]);
    assert.deepEqual(a.bob.groups, [a.group.id]);
    assert.deepEqual(await a.client.embedUsers.get('alice'), a.alice);
    assert.deepEqual(await a.client.embedUsers.get(a.alice.id), a.alice);
    const updated = await a.client.embedUsers.upsert('carol', { attributes: { tenant: 'acme', level: 2 } });
    assert.deepEqual(updated.groups, []);
    assert.deepEqual(
      (await a.client.embedUsers.list()).map((u) => u.external_id).sort(),
      ['alice', 'bob', 'carol'],
    );
    await a.client.embedUsers.delete('carol');
    assert.ok((await failure(a.client.embedUsers.get('carol'))) instanceof NotFoundError);
  });

  it('groups.put/get/list', async () => {
    assert.equal(a.group.name, 'customers');
    assert.deepEqual(a.group.grants.find((g) => g.dataset_id === a.orders.id), {
      dataset_id: a.orders.id,
      permission: 'read',
      row_filter: ['tenant = {{user.tenant}}'],
      all_rows: false,
      columns: null,
    });
    // The server stores grants in its own order (GET may list them in
    // another order than the PUT that set them): compared as sets.
    const byDataset = (g: Group): Group => ({
      ...g,
      grants: [...g.grants].sort((x, y) => x.dataset_id.localeCompare(y.dataset_id)),
    });
    assert.deepEqual(byDataset(await a.client.groups.get('customers')), byDataset(a.group));
    assert.deepEqual((await a.client.groups.list()).map((g) => g.id), [a.group.id]);
  });
});

describe('embed calls (session token)', () => {
  it('datasets() lists what the session may use; describe() its columns', async () => {
    const [, alice] = await sessionFor(a, 'alice');
    const listed = await alice.datasets();
    assert.deepEqual(
      listed.map((d) => [d.name, d.permission]).sort(),
      [
        ['events', 'read'],
        ['orders', 'read'],
      ],
    );
    const columns = await alice.describe(a.orders.id);
    assert.deepEqual(
      columns.map((c) => c.name),
      ['id', 'tenant', 'amount', 'note'],
    );
    assert.equal(columns[0]?.kind, 'int');
  });

  it('fetch() returns only the rows of the user’s tenant, as { columns, rows }', async () => {
    const [, alice] = await sessionFor(a, 'alice');
    const [, bob] = await sessionFor(a, 'bob');
    const aliceRows = await alice.fetch(a.orders.id);
    assert.deepEqual(aliceRows.columns, ['id', 'tenant', 'amount', 'note']);
    assert.deepEqual(aliceRows.rows, ACME.map((r) => Object.values(r)));
    const bobRows = await bob.fetch(a.orders.id);
    assert.deepEqual(bobRows.rows, GLOBEX.map((r) => Object.values(r)));
    const narrow = await alice.fetch(a.orders.id, { columns: ['note', 'id'], limit: 2 });
    assert.deepEqual(narrow, {
      columns: ['note', 'id'],
      rows: [
        ['first', 1],
        ['second', 3],
      ],
    });
  });

  it('stream() yields the user’s rows from NDJSON, and stops the stream when left early', async () => {
    const [, alice] = await sessionFor(a, 'alice');
    const [, bob] = await sessionFor(a, 'bob');
    assert.deepEqual(await rowsOf(alice.stream(a.orders.id)), ACME);
    assert.deepEqual(await rowsOf(bob.stream(a.orders.id)), GLOBEX);
    assert.deepEqual(await rowsOf(bob.stream(a.orders.id, { columns: ['amount'], limit: 1 })), [{ amount: 30.25 }]);
    const first: Row[] = [];
    for await (const row of alice.stream(a.orders.id)) {
      first.push(row);
      break;
    }
    assert.deepEqual(first, [ACME[0]]);
    // Another org's data with the same names stays its own.
    const [, bAlice] = await sessionFor(b, 'alice');
    assert.deepEqual(await rowsOf(bAlice.stream(b.events.id)), [{ tenant: 'acme', kind: 'b-only' }]);
  });

  it('metadata() and summary() describe the user’s rows only', async () => {
    const [, alice] = await sessionFor(a, 'alice');
    const meta = await alice.metadata(a.orders.id);
    assert.equal(meta.rows, ACME.length);
    assert.equal(meta.schema, 'silo.metadata.v1');
    const summary = await alice.summary(a.orders.id);
    assert.equal(typeof summary.summary, 'string');
    assert.ok(summary.summary.length > 0);
    assert.equal(typeof summary.source, 'string');
  });
});

describe('sessions', () => {
  it('create() returns id, token and expiresAt as a Date; list() has it', async () => {
    const before = Date.now();
    const [minted] = await sessionFor(a, 'alice', 300);
    assert.match(minted.id, /^ses_/);
    assert.ok(minted.token.length > 20);
    assert.ok(minted.expiresAt instanceof Date);
    const lifetime = minted.expiresAt.getTime() - before;
    assert.ok(lifetime > 298_000 && lifetime <= 301_000, `expires in ${lifetime} ms`);
    assert.equal(minted.embedUserId, a.alice.id);
    assert.equal(minted.generation, 0);
    assert.equal(minted.datasets, null);
    const listed = (await a.client.sessions.list()).find((s) => s.id === minted.id);
    assert.deepEqual(listed, minted.session);
  });

  it('renew() mints a new token for the same session; the old token is refused (401)', async () => {
    const minted = await a.client.sessions.create({
      embedUser: 'alice',
      datasets: [a.orders.id],
      parameters: { region: 'eu' },
      ttlSeconds: 60,
    });
    const old = a.client.asSession(minted.token);
    assert.equal((await old.datasets()).length, 1);
    const renewed = await a.client.sessions.renew(minted.id, { ttlSeconds: 600 });
    assert.equal(renewed.id, minted.id);
    assert.notEqual(renewed.token, minted.token);
    assert.equal(renewed.generation, minted.generation + 1);
    assert.ok(renewed.expiresAt > minted.expiresAt);
    // What the renewal left out was kept, not widened.
    assert.deepEqual(renewed.datasets, [a.orders.id]);
    assert.deepEqual(renewed.parameters, { region: 'eu' });
    const current = a.client.asSession(renewed.token);
    assert.deepEqual((await current.datasets()).map((d) => d.name), ['orders']);
    assert.deepEqual(await rowsOf(current.stream(a.orders.id, { columns: ['id'] })), [{ id: 1 }, { id: 3 }, { id: 5 }]);
    const e = await failure(old.datasets());
    assert.ok(e instanceof UnauthorizedError);
    assert.equal(e.status, 401);
    assert.ok(isSiloError(await failure(old.fetch(a.orders.id)), 'unauthorized'));
    // The server never widens a session on renewal: `datasets: null` keeps them too.
    const same = await a.client.sessions.renew(minted.id, { embedUser: 'alice', datasets: null });
    assert.deepEqual(same.datasets, [a.orders.id]);
    assert.equal((await a.client.asSession(same.token).datasets()).length, 1);
    assert.ok((await failure(current.datasets())) instanceof UnauthorizedError);
  });

  it('revoke() makes the token fail on its next call (401), and a revoked session cannot be renewed', async () => {
    const [minted, alice] = await sessionFor(a, 'alice');
    assert.equal((await alice.fetch(a.orders.id)).rows.length, ACME.length);
    await a.client.sessions.revoke(minted.id);
    assert.ok((await failure(alice.fetch(a.orders.id))) instanceof UnauthorizedError);
    assert.ok((await failure(rowsOf(alice.stream(a.orders.id)))) instanceof UnauthorizedError);
    const listed = (await a.client.sessions.list()).find((s) => s.id === minted.id);
    assert.equal(typeof listed?.revoked_at, 'number');
    assert.ok((await failure(a.client.sessions.renew(minted.id))) instanceof ConflictError);
  });
});

describe('typed errors', () => {
  it('404 NotFoundError when org B names org A’s dataset, session or embed user', async () => {
    const [minted] = await sessionFor(a, 'alice');
    const [, bAlice] = await sessionFor(b, 'alice');
    const calls: Array<[string, () => Promise<unknown>]> = [
      ['embedUsers.get', () => b.client.embedUsers.get(a.alice.id)],
      ['embedUsers.delete', () => b.client.embedUsers.delete(a.alice.id)],
      ['sessions.revoke', () => b.client.sessions.revoke(minted.id)],
      ['sessions.renew', () => b.client.sessions.renew(minted.id)],
      ['sessions.renew (explicit)', () => b.client.sessions.renew(minted.id, { embedUser: 'alice', datasets: null, parameters: {} })],
      ['sessions.create (datasets)', () => b.client.sessions.create({ embedUser: 'alice', datasets: [a.orders.id] })],
      ['datasets.upload', () => b.client.datasets.upload(a.orders.id, 'id,tenant\n9,acme\n')],
      ['datasets.delete', () => b.client.datasets.delete(a.orders.id)],
      ['datasources.get', () => b.client.datasources.get(a.orders.datasource_id)],
      ['embed describe', () => bAlice.describe(a.orders.id)],
      ['embed fetch', () => bAlice.fetch(a.orders.id)],
      ['embed stream', () => rowsOf(bAlice.stream(a.orders.id))],
      ['embed metadata', () => bAlice.metadata(a.orders.id)],
    ];
    for (const [what, call] of calls) {
      const e = await failure(call());
      assert.ok(e instanceof NotFoundError, `${what}: ${inspect(e)}`);
      assert.equal(e.status, 404, what);
      assert.equal(e.code, 'not_found', what);
    }
    // Nothing of A's was touched.
    assert.equal((await a.client.embedUsers.get('alice')).id, a.alice.id);
    assert.ok((await a.client.datasets.list()).some((d) => d.id === a.orders.id));
    const [, aAlice] = await sessionFor(a, 'alice');
    assert.deepEqual(await rowsOf(aAlice.stream(a.orders.id)), ACME);
  });

  it('404 NotFoundError for a group granting another org’s dataset id', async () => {
    for (const grant of [
      { dataset_id: a.orders.id, permission: 'read' as const, all_rows: true },
      { dataset_id: a.orders.id, permission: 'read' as const, all_rows: true, columns: ['id'] },
    ]) {
      const e = await failure(b.client.groups.put('poach', { grants: [grant] }));
      assert.ok(e instanceof NotFoundError, inspect(e));
    }
    assert.ok((await failure(b.client.groups.get('poach'))) instanceof NotFoundError);
  });

  it('400 InvalidRequestError for a bad request', async () => {
    const cases: Array<[string, () => Promise<unknown>]> = [
      ['ttl 0', () => a.client.sessions.create({ embedUser: 'alice', ttlSeconds: 0 })],
      ['shadowing parameter', () => a.client.sessions.create({ embedUser: 'alice', parameters: { tenant: 'globex' } })],
      ['eu_ id', () => a.client.embedUsers.upsert('eu_forged', {})],
      ['files settings', () => a.client.datasources.create({ name: 'x', kind: 'files', settings: { data_dir: '/' } })],
      ['upload type', () => a.client.datasets.upload(a.orders.id, 'id\n1\n', { contentType: 'text/plain' })],
      ['ragged csv', () => a.client.datasets.upload(a.orders.id, 'id,tenant\n1,acme\n2\n')],
      ['bad row filter', () => a.client.groups.put('broken', { grants: [{ dataset_id: a.orders.id, permission: 'read', row_filter: ['tenant ==='] }] })],
    ];
    for (const [what, call] of cases) {
      const e = await failure(call());
      assert.ok(e instanceof InvalidRequestError, `${what}: ${inspect(e)}`);
      assert.equal(e.status, 400, what);
      assert.ok(e.message.length > 0, what);
    }
    // The refused uploads left the data as it was.
    const [, alice] = await sessionFor(a, 'alice');
    assert.deepEqual(await rowsOf(alice.stream(a.orders.id)), ACME);
    // An unknown embed user is 404, not 400.
    assert.ok((await failure(a.client.sessions.create({ embedUser: 'nobody' }))) instanceof NotFoundError);
  });

  it('the API key and the token never appear in an error or in the client’s printout', async () => {
    const bogus = 'silo_key_bogus.c2VjcmV0LXNob3VsZC1uZXZlci1sZWFr';
    const stranger = new SiloClient({ baseUrl: silo.baseUrl, apiKey: bogus, fetch: silo.fetch });
    const unauthorized = await failure(stranger.datasets.list());
    assert.ok(unauthorized instanceof UnauthorizedError);
    const notFound = await failure(b.client.embedUsers.get(a.alice.id));
    const [minted] = await sessionFor(a, 'alice');
    const embed = a.client.asSession(minted.token);
    const embedError = await failure(embed.describe('dset_nope'));
    assert.ok(embedError instanceof NotFoundError);
    const standalone = new SiloSession({ baseUrl: silo.baseUrl, token: minted.token, fetch: silo.fetch });
    const texts = [unauthorized, notFound, embedError].flatMap((e) => [
      String(e),
      e.message,
      e.stack ?? '',
      inspect(e, { depth: 10, showHidden: true }),
      JSON.stringify(e),
    ]);
    texts.push(
      inspect(stranger, { depth: 10, showHidden: true }),
      inspect(a.client, { depth: 10, showHidden: true }),
      inspect(embed, { depth: 10, showHidden: true }),
      inspect(standalone, { depth: 10, showHidden: true }),
      JSON.stringify(stranger),
      JSON.stringify(a.client),
      JSON.stringify(embed),
      String(a.client),
    );
    for (const secret of [bogus, a.key, b.key, minted.token]) {
      for (const text of texts) assert.ok(!text.includes(secret), `a secret leaked into: ${text}`);
    }
  });
});
