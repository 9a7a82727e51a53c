// The NDJSON stream and error decoding against a loopback HTTP server that
// answers with the exact bytes `silo serve` sends (host/api/src/embed.rs):
// one object per row and line, and, when a fetch fails after its first row,
// a last line `{"error": {"code", "message"}}` on a 200 response. A live
// server cannot be made to fail mid-stream on demand, so this one does.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { inspect } from 'node:util';

import {
  BusyError,
  DatasourceFailedError,
  InternalError,
  NotFoundError,
  SiloClient,
  SiloError,
  SiloSession,
  isSiloError,
} from '../src/index.js';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

const TOKEN = 'eyJ.stub-session-token.sig';
let server: Server;
let base = '';
let handler: Handler = (_req, res) => res.end();
let seen: IncomingMessage | undefined;

before(async () => {
  server = createServer((req, res) => {
    seen = req;
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

/** Answers 200 NDJSON with `lines`, written one by one. */
function ndjson(lines: string[]): Handler {
  return (req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/x-ndjson' });
    for (const line of lines) res.write(line);
    res.end();
  };
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe('NDJSON stream (stub server)', () => {
  it('yields each row as an object in column order, and sends Accept: application/x-ndjson', async () => {
    handler = ndjson(['{"id":1,"tenant":"acme"}\n{"id":2,', '"tenant":"acme"}\n']);
    const session = new SiloSession({ baseUrl: base, token: TOKEN });
    const rows = await collect(session.stream('dset_1', { columns: ['id', 'tenant'], limit: 5 }));
    assert.deepEqual(rows, [
      { id: 1, tenant: 'acme' },
      { id: 2, tenant: 'acme' },
    ]);
    assert.equal(seen?.headers.accept, 'application/x-ndjson');
    assert.equal(seen?.headers.authorization, `Bearer ${TOKEN}`);
    assert.equal(seen?.url, '/v1/embed/datasets/dset_1/fetch');
  });

  it('throws the error of a last line {"error": …} after the rows before it', async () => {
    handler = ndjson([
      '{"id":1}\n',
      '{"error":{"code":"datasource_failed","message":"the datasource failed: canceling statement"}}\n',
    ]);
    const session = new SiloSession({ baseUrl: base, token: TOKEN });
    const rows: unknown[] = [];
    await assert.rejects(
      async () => {
        for await (const row of session.stream('dset_1')) rows.push(row);
      },
      (e: unknown) => {
        assert.ok(e instanceof DatasourceFailedError);
        assert.ok(isSiloError(e, 'datasource_failed'));
        assert.equal(e.status, 502);
        assert.equal(e.message, 'the datasource failed: canceling statement');
        return true;
      },
    );
    assert.deepEqual(rows, [{ id: 1 }]);
  });

  it('treats an error-shaped line that is followed by more rows as a row', async () => {
    const lookalike = '{"error":{"code":"internal","message":"x"}}';
    handler = ndjson([`${lookalike}\n`, '{"error":null}\n']);
    const session = new SiloSession({ baseUrl: base, token: TOKEN });
    assert.deepEqual(await collect(session.stream('d')), [JSON.parse(lookalike), { error: null }]);
  });

  it('throws when the stream ends in the middle of a line', async () => {
    handler = ndjson(['{"id":1}\n{"id":']);
    const session = new SiloSession({ baseUrl: base, token: TOKEN });
    await assert.rejects(collect(session.stream('d')), (e: unknown) => e instanceof InternalError);
  });

  it('reads a whole JSON document when the server answers with one', async () => {
    handler = (req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ columns: ['id', 'tenant'], rows: [[3, 'globex']] }));
    };
    const session = new SiloSession({ baseUrl: base, token: TOKEN });
    assert.deepEqual(await collect(session.stream('d')), [{ id: 3, tenant: 'globex' }]);
  });
});

describe('errors (stub server)', () => {
  it('maps the body code and Retry-After, and keeps the token out of every rendering', async () => {
    handler = (req, res) => {
      req.resume();
      res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' });
      res.end('{"error":{"code":"busy","message":"every connector instance is in use"}}');
    };
    const session = new SiloSession({ baseUrl: base, token: TOKEN });
    const e = await session.datasets().then(
      () => assert.fail('expected an error'),
      (err: unknown) => err,
    );
    assert.ok(e instanceof BusyError && e instanceof SiloError);
    assert.equal(e.code, 'busy');
    assert.equal(e.status, 503);
    assert.equal(e.retryAfter, 1);
    for (const text of [String(e), e.message, e.stack ?? '', inspect(e), JSON.stringify(e), inspect(session), JSON.stringify(session)]) {
      assert.ok(!text.includes(TOKEN), `the token leaked into: ${text}`);
      assert.ok(!text.includes('stub-session-token'), `the token leaked into: ${text}`);
    }
  });

  it('derives the code from the status when the body is not Silo JSON', async () => {
    handler = (req, res) => {
      req.resume();
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('no route');
    };
    const client = new SiloClient({ baseUrl: `${base}/`, apiKey: 'silo_key_stub.secret' });
    await assert.rejects(client.datasets.list(), (e: unknown) => {
      assert.ok(e instanceof NotFoundError);
      assert.equal(e.message, 'HTTP 404: no route');
      assert.equal(seen?.url, '/v1/datasets');
      return true;
    });
  });

  it('keeps the status-derived code for a code this client does not know', async () => {
    handler = (req, res) => {
      req.resume();
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end('{"error":{"code":"some_new_code","message":"m"}}');
    };
    const client = new SiloClient({ baseUrl: base, apiKey: 'silo_key_stub.secret' });
    await assert.rejects(client.sessions.list(), (e: unknown) => isSiloError(e, 'busy') && e.message === 'm');
  });

  it('refuses a client without a key or with a base URL that is not http(s)', () => {
    assert.throws(() => new SiloClient({ baseUrl: base, apiKey: '' }), TypeError);
    assert.throws(() => new SiloClient({ baseUrl: 'ftp://x', apiKey: 'k' }), TypeError);
  });
});

describe('upload body (stub server)', () => {
  /** Echoes the request: its content type, query and body size. */
  const echo: Handler = (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const body = Buffer.concat(chunks);
      res.end(JSON.stringify({ rows: body.length, columns: [], partitions: [req.headers['content-type'], req.url, body.toString('utf8')] }));
    });
  };

  it('sends text, a Blob and a web stream whole, with progress in bytes', async () => {
    handler = echo;
    const client = new SiloClient({ baseUrl: base, apiKey: 'silo_key_stub.secret' });
    const text = 'id,name\n1,Zoë\n2,Ülrich\n';
    const size = Buffer.byteLength(text);
    const inputs: Array<[string, () => Parameters<typeof client.datasets.upload>[1], number | undefined]> = [
      ['text', () => text, size],
      ['bytes', () => new TextEncoder().encode(text), size],
      ['blob', () => new Blob([text], { type: 'application/x-ndjson' }), size],
      ['web stream', () => new Blob([text]).stream(), undefined],
    ];
    for (const [what, data, total] of inputs) {
      const progress: Array<[number, number | undefined]> = [];
      const summary = await client.datasets.upload('dset_x', data(), {
        chunkSize: 5,
        partitionBy: 'tenant',
        onProgress: (sent, of) => progress.push([sent, of]),
      });
      assert.equal(summary.rows, size, what);
      assert.equal(summary.partitions[2], text, what);
      assert.equal(summary.partitions[1], '/v1/datasets/dset_x/upload?partition_by=tenant', what);
      assert.equal(summary.partitions[0], what === 'blob' ? 'application/x-ndjson' : 'text/csv', what);
      assert.equal(progress.length, Math.ceil(size / 5), what);
      assert.deepEqual(progress.at(-1), [size, total], what);
      assert.ok(progress.every(([sent], i) => i === 0 || sent > (progress[i - 1]?.[0] ?? 0)), what);
    }
    const empty: Array<[number, number | undefined]> = [];
    await client.datasets.upload('dset_x', '', { onProgress: (sent, of) => empty.push([sent, of]) });
    assert.deepEqual(empty, [[0, 0]]);
  });
});
