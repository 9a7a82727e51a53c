// @silo/client: what a customer's backend calls with its organization's API
// key (SiloClient), and what it calls on behalf of an embed user with a
// session token (SiloSession). Every type comes from the generated
// schema.d.ts; see README.md.
import { SiloError, parseStreamError, siloError, streamError } from './errors.js';
import { Transport } from './http.js';
import type { CallOptions, FetchLike } from './http.js';
import type { components } from './schema.js';

export * from './errors.js';
export type { CallOptions, FetchLike } from './http.js';
export type { components, operations, paths } from './schema.js';

type Schemas = components['schemas'];
/** An embed user (`eu_…`) with its attributes and group ids. */
export type EmbedUser = Schemas['EmbedUser'];
/** `PUT /v1/embed-users/{id}`: attributes row filters read, and groups (ids or names). */
export type EmbedUserInput = Schemas['EmbedUserInput'];
/** A session record (`ses_…`); its token is only in {@link SessionWithToken}. */
export type Session = Schemas['Session'];
/** A dataset (`dset_…`) of a datasource. */
export type Dataset = Schemas['Dataset'];
/** `POST /v1/datasets`. */
export type DatasetInput = Schemas['DatasetInput'];
/** A datasource (never its credential). */
export type Datasource = Schemas['Datasource'];
/** `POST /v1/datasources`. */
export type DatasourceInput = Schemas['DatasourceInput'];
/** A group and its grants. */
export type Group = Schemas['Group'];
/** `PUT /v1/groups/{name}`. */
export type GroupInput = Schemas['GroupInput'];
/** One dataset a group grants, with its row filter and columns. */
export type GroupGrant = Schemas['GroupGrant'];
/** What an upload stored. */
export type UploadSummary = Schemas['UploadSummary'];
/** A dataset as an embed session sees it. */
export type EmbedDataset = Schemas['EmbedDataset'];
/** A column as an embed session sees it. */
export type ColumnInfo = Schemas['ColumnInfo'];
/**
 * A whole fetch: column names and rows (arrays in column order). The
 * document types a cell as an object; a cell is any JSON value (numbers
 * stay numbers, decimals and dates are strings), so `rows` is retyped.
 */
export type FetchResult = Omit<Schemas['FetchResult'], 'rows'> & { rows: JsonValue[][] };
/** A dataset's `silo.metadata.v1` document: statistics, never rows. */
export type Metadata = Schemas['Payload'];
/** A plain-language summary of a dataset's metadata. */
export type Summary = Schemas['Summary'];

/** A JSON value, as a cell of a row. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
/** A streamed row: column name to cell, keys in column order. */
export type Row = Record<string, JsonValue>;

const NDJSON = 'application/x-ndjson';

// ---------------------------------------------------------------------------
// The backend client (an organization's API key)

/** Options of {@link SiloClient}. */
export interface SiloClientOptions {
  /** Where `silo serve` listens, e.g. `https://silo.internal:8080`. */
  baseUrl: string | URL;
  /** The organization's API key (`silo_key_…`). Kept private; never printed. */
  apiKey: string;
  /** A `fetch` to use instead of the global one. */
  fetch?: FetchLike;
}

/**
 * What a customer's backend calls with its organization's API key: embed
 * users, sessions, datasets and uploads, datasources, groups.
 */
export class SiloClient {
  readonly baseUrl: string;
  readonly embedUsers: EmbedUsers;
  readonly sessions: Sessions;
  readonly datasets: Datasets;
  readonly datasources: Datasources;
  readonly groups: Groups;
  readonly #fetch: FetchLike | undefined;

  constructor(options: SiloClientOptions) {
    const t = new Transport(options.baseUrl, options.apiKey, options.fetch);
    this.#fetch = options.fetch;
    this.baseUrl = t.baseUrl;
    this.embedUsers = new EmbedUsers(t);
    this.sessions = new Sessions(t);
    this.datasets = new Datasets(t);
    this.datasources = new Datasources(t);
    this.groups = new Groups(t);
  }

  /** The embed calls of a session token (from {@link Sessions.create}), on the same server. */
  asSession(token: string): SiloSession {
    return new SiloSession({ baseUrl: this.baseUrl, token, ...(this.#fetch ? { fetch: this.#fetch } : {}) });
  }

  toJSON(): { baseUrl: string } {
    return { baseUrl: this.baseUrl };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `SiloClient { baseUrl: ${JSON.stringify(this.baseUrl)} }`;
  }
}

/** Embed users: the customer's end users, by the customer's own id. */
export class EmbedUsers {
  readonly #t: Transport;
  constructor(t: Transport) {
    this.#t = t;
  }

  /** Creates or updates embed user `id` (the customer's id); `groups` replaces its memberships. */
  upsert(id: string, input: EmbedUserInput = {}, options: CallOptions = {}): Promise<EmbedUser> {
    return this.#t.json('put', '/v1/embed-users/{id}', { params: { id }, body: input, ...options });
  }

  /** An embed user, by external id or record id (`eu_…`). */
  get(id: string, options: CallOptions = {}): Promise<EmbedUser> {
    return this.#t.json('get', '/v1/embed-users/{id}', { params: { id }, ...options });
  }

  /** Every embed user of the organization. */
  list(options: CallOptions = {}): Promise<EmbedUser[]> {
    return this.#t.json('get', '/v1/embed-users', options);
  }

  /** Deletes an embed user and its sessions. */
  async delete(id: string, options: CallOptions = {}): Promise<void> {
    await this.#t.json('delete', '/v1/embed-users/{id}', { params: { id }, ...options });
  }
}

/** `sessions.create`. */
export interface SessionCreateOptions extends CallOptions {
  /** The embed user's external id (or record id). */
  embedUser: string;
  /** Lifetime in seconds: 1 to 86400 (server default 900). */
  ttlSeconds?: number;
  /** Dataset ids the session may use (default: all its groups grant). */
  datasets?: string[] | null;
  /** Values row filters read as `{{user.<name>}}`; may not shadow the user's attributes. */
  parameters?: Record<string, JsonValue>;
}

/** `sessions.renew`: each field left out keeps the session's current value (the TTL restarts). */
export interface SessionRenewOptions extends CallOptions {
  /** Lifetime from now, in seconds (server default 900). */
  ttlSeconds?: number;
  /** The session's embed user (external or record id); looked up when left out. */
  embedUser?: string;
  /** Replace the datasets; kept when left out (or `null`): a renewal never widens a session. */
  datasets?: string[] | null;
  /** Replace the parameters; kept when left out. */
  parameters?: Record<string, JsonValue>;
}

/** A session with its token: hand `token` to the embed user's browser. */
export interface SessionWithToken {
  /** `ses_…`. */
  id: string;
  /** The signed token: `Authorization: Bearer …` on the embed endpoints. Shown once. */
  token: string;
  /** When the token stops working. */
  expiresAt: Date;
  /** When the session was first created (kept across renewals). */
  createdAt: Date;
  /** Which token is current: a renewal increments it and the older tokens stop working. */
  generation: number;
  /** The embed user's record id (`eu_…`). */
  embedUserId: string;
  /** The datasets it is narrowed to; `null`: all the user's groups grant. */
  datasets: string[] | null;
  /** Its parameters. */
  parameters: Record<string, unknown>;
  /** The record as the server sent it. */
  session: Session;
}

function withToken(minted: Schemas['SessionToken']): SessionWithToken {
  const s = minted.session;
  return {
    id: s.id,
    token: minted.token,
    expiresAt: new Date(s.expires_at * 1000),
    createdAt: new Date(s.created_at * 1000),
    generation: s.generation,
    embedUserId: s.embed_user_id,
    datasets: s.datasets ?? null,
    parameters: s.parameters,
    session: s,
  };
}

/** Sessions: short-lived, revocable grants to one embed user, carried by a token. */
export class Sessions {
  readonly #t: Transport;
  constructor(t: Transport) {
    this.#t = t;
  }

  /** Mints a session for an embed user and its token. */
  async create(options: SessionCreateOptions): Promise<SessionWithToken> {
    const body: Schemas['SessionInput'] = { embed_user: options.embedUser };
    if (options.ttlSeconds !== undefined) body.ttl_seconds = options.ttlSeconds;
    if (options.datasets !== undefined) body.datasets = options.datasets;
    if (options.parameters !== undefined) body.parameters = options.parameters;
    return withToken(await this.#t.json('post', '/v1/sessions', { body, ...signal(options) }));
  }

  /**
   * Renews session `id`: a new token and expiry; every older token of the
   * session stops working at once. The server replaces the session's
   * datasets and parameters with what a renewal sends, so what is left out
   * here is read from the session first (one `GET /v1/sessions`) and sent
   * again unchanged.
   */
  async renew(id: string, options: SessionRenewOptions = {}): Promise<SessionWithToken> {
    let { embedUser } = options;
    if (embedUser === undefined) {
      const current = (await this.list(signal(options))).find((s) => s.id === id);
      if (current === undefined) {
        throw siloError({ status: 404, code: 'not_found', message: 'session' });
      }
      embedUser = current.embed_user_id;
    }
    // What is left out, the server keeps: a renewal never widens a session.
    const body: Schemas['SessionInput'] = { id, embed_user: embedUser };
    if (options.datasets !== undefined) body.datasets = options.datasets;
    if (options.parameters !== undefined) body.parameters = options.parameters;
    if (options.ttlSeconds !== undefined) body.ttl_seconds = options.ttlSeconds;
    return withToken(await this.#t.json('post', '/v1/sessions', { body, ...signal(options) }));
  }

  /** Revokes a session: its token fails from the next request. */
  async revoke(id: string, options: CallOptions = {}): Promise<void> {
    await this.#t.json('delete', '/v1/sessions/{id}', { params: { id }, ...options });
  }

  /** The organization's sessions (live, and expired ones for an hour). */
  list(options: CallOptions = {}): Promise<Session[]> {
    return this.#t.json('get', '/v1/sessions', options);
  }
}

/** What can be uploaded: text, bytes, a Blob, a web stream or a Node stream (`fs.createReadStream`). */
export type UploadData =
  | string
  | ArrayBuffer
  | ArrayBufferView
  | Blob
  | ReadableStream<Uint8Array>
  | AsyncIterable<Uint8Array | string>;

/** `datasets.upload`. */
export interface UploadOptions extends CallOptions {
  /** `text/csv` (default) or `application/x-ndjson`. */
  contentType?: string;
  /** Split into one partition per value of this column (e.g. the tenant). */
  partitionBy?: string;
  /**
   * Told `(bytes sent, total)` as each chunk is handed to the connection;
   * `total` is the data's size when known (text, bytes, a Blob, or `size`).
   */
  onProgress?: (sent: number, total: number | undefined) => void;
  /** The size of a stream's data, for `onProgress`. */
  size?: number;
  /** Bytes per chunk (default 64 KiB). */
  chunkSize?: number;
}

const encoder = new TextEncoder();

function sizeOf(data: UploadData): number | undefined {
  if (typeof data === 'string') return encoder.encode(data).byteLength;
  if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) return data.byteLength;
  if (data instanceof Blob) return data.size;
  return undefined;
}

function bytes(v: ArrayBuffer | ArrayBufferView): Uint8Array {
  return v instanceof ArrayBuffer ? new Uint8Array(v) : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

async function* chunksOf(data: UploadData, size: number): AsyncGenerator<Uint8Array> {
  function* split(b: Uint8Array): Generator<Uint8Array> {
    for (let i = 0; i < b.byteLength; i += size) yield b.subarray(i, Math.min(i + size, b.byteLength));
  }
  if (typeof data === 'string') {
    yield* split(encoder.encode(data));
  } else if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
    yield* split(bytes(data));
  } else {
    const source: AsyncIterable<Uint8Array | string> =
      data instanceof Blob ? (data.stream() as unknown as AsyncIterable<Uint8Array>) : data;
    for await (const chunk of source) yield* split(typeof chunk === 'string' ? encoder.encode(chunk) : chunk);
  }
}

/** Datasets: the governed tables of a datasource, and uploads into a `files` one. */
export class Datasets {
  readonly #t: Transport;
  constructor(t: Transport) {
    this.#t = t;
  }

  /** The organization's datasets. */
  list(options: CallOptions = {}): Promise<Dataset[]> {
    return this.#t.json('get', '/v1/datasets', options);
  }

  /** Adds a dataset (a table, collection or upload name) to a datasource. */
  create(input: DatasetInput, options: CallOptions = {}): Promise<Dataset> {
    return this.#t.json('post', '/v1/datasets', { body: input, ...options });
  }

  /** Deletes a dataset and its grants. */
  async delete(id: string, options: CallOptions = {}): Promise<void> {
    await this.#t.json('delete', '/v1/datasets/{id}', { params: { id }, ...options });
  }

  /**
   * Replaces an upload dataset's data with `data` (CSV or NDJSON), streamed
   * in chunks with `onProgress(sent, total)`. The server validates the file
   * whole: a bad one is refused (400, with its line) and the old data stays.
   */
  async upload(id: string, data: UploadData, options: UploadOptions = {}): Promise<UploadSummary> {
    const chunkSize = options.chunkSize ?? 64 * 1024;
    if (!Number.isInteger(chunkSize) || chunkSize < 1) throw new TypeError('chunkSize must be a positive integer');
    const total = options.size ?? sizeOf(data);
    const contentType =
      options.contentType ?? (data instanceof Blob && data.type !== '' ? data.type : 'text/csv');
    const report = options.onProgress;
    const source = chunksOf(data, chunkSize);
    let sent = 0;
    let reported = false;
    // Pulled by the connection one chunk at a time (high-water mark 0), so
    // a chunk counts as sent when the connection takes it.
    const body = new ReadableStream<Uint8Array>(
      {
        async pull(controller) {
          const next = await source.next();
          if (next.done) {
            if (!reported) report?.(sent, total ?? sent);
            controller.close();
            return;
          }
          controller.enqueue(next.value);
          sent += next.value.byteLength;
          reported = true;
          report?.(sent, total);
        },
        async cancel() {
          await source.return(undefined);
        },
      },
      { highWaterMark: 0 },
    );
    const t = this.#t;
    const url = t.url('/v1/datasets/{id}/upload', { id }, { partition_by: options.partitionBy });
    const response = await t.send('post', url, {
      body,
      duplex: 'half',
      headers: { 'content-type': contentType, accept: 'application/json' },
      ...signal(options),
    });
    return (await response.json()) as UploadSummary;
  }
}

/** Datasources: databases and upload areas, registered with a credential that is never returned. */
export class Datasources {
  readonly #t: Transport;
  constructor(t: Transport) {
    this.#t = t;
  }

  /**
   * Registers a datasource. Silo connects first and refuses a credential
   * that can write (403). `{ name, kind: 'files' }` is an upload area.
   */
  create(input: DatasourceInput, options: CallOptions = {}): Promise<Datasource> {
    return this.#t.json('post', '/v1/datasources', { body: input, ...options });
  }

  /** The organization's datasources. */
  list(options: CallOptions = {}): Promise<Datasource[]> {
    return this.#t.json('get', '/v1/datasources', options);
  }

  /** A datasource by id or name. */
  get(id: string, options: CallOptions = {}): Promise<Datasource> {
    return this.#t.json('get', '/v1/datasources/{id}', { params: { id }, ...options });
  }

  /** Deletes a datasource, its datasets and their grants. */
  async delete(id: string, options: CallOptions = {}): Promise<void> {
    await this.#t.json('delete', '/v1/datasources/{id}', { params: { id }, ...options });
  }
}

/** Groups: grants of datasets, with row filters and columns, to their members. */
export class Groups {
  readonly #t: Transport;
  constructor(t: Transport) {
    this.#t = t;
  }

  /** Creates or replaces group `name` and its grants. */
  put(name: string, input: GroupInput, options: CallOptions = {}): Promise<Group> {
    return this.#t.json('put', '/v1/groups/{name}', { params: { name }, body: input, ...options });
  }

  /** A group by name or id. */
  get(name: string, options: CallOptions = {}): Promise<Group> {
    return this.#t.json('get', '/v1/groups/{name}', { params: { name }, ...options });
  }

  /** The organization's groups. */
  list(options: CallOptions = {}): Promise<Group[]> {
    return this.#t.json('get', '/v1/groups', options);
  }

  /** Deletes a group. */
  async delete(name: string, options: CallOptions = {}): Promise<void> {
    await this.#t.json('delete', '/v1/groups/{name}', { params: { name }, ...options });
  }
}

// ---------------------------------------------------------------------------
// The embed calls (a session token)

/** Options of {@link SiloSession}. */
export interface SiloSessionOptions {
  /** Where `silo serve` listens. */
  baseUrl: string | URL;
  /** A session token from `sessions.create`. Kept private; never printed. */
  token: string;
  /** A `fetch` to use instead of the global one. */
  fetch?: FetchLike;
}

/** `fetch` and `stream`. */
export interface FetchOptions extends CallOptions {
  /** Columns, in order (default: all the session may read). */
  columns?: string[];
  /** Most rows wanted. */
  limit?: number;
}

function fetchInput(options: FetchOptions): Schemas['FetchInput'] {
  const input: Schemas['FetchInput'] = {};
  if (options.columns !== undefined) input.columns = options.columns;
  if (options.limit !== undefined) input.limit = options.limit;
  return input;
}

function signal(options: CallOptions): CallOptions {
  return options.signal === undefined ? {} : { signal: options.signal };
}

function broken(message: string): SiloError {
  return siloError({ status: 502, code: 'internal', message });
}

/**
 * What an embed user's session may do: list, describe and fetch its
 * datasets (only the rows its groups' filters admit), and their metadata.
 */
export class SiloSession {
  readonly baseUrl: string;
  readonly #t: Transport;

  constructor(options: SiloSessionOptions) {
    this.#t = new Transport(options.baseUrl, options.token, options.fetch);
    this.baseUrl = this.#t.baseUrl;
  }

  /** The datasets this session may use. */
  datasets(options: CallOptions = {}): Promise<EmbedDataset[]> {
    return this.#t.json('get', '/v1/embed/datasets', options);
  }

  /** The columns of a dataset this session may see. */
  describe(id: string, options: CallOptions = {}): Promise<ColumnInfo[]> {
    return this.#t.json('get', '/v1/embed/datasets/{id}/describe', { params: { id }, ...options });
  }

  /** The rows this session may see, as one document: `{ columns, rows }`. */
  async fetch(id: string, options: FetchOptions = {}): Promise<FetchResult> {
    // By hand: the document lists only the NDJSON answer of this operation.
    const response = await this.#t.send('post', this.#t.url('/v1/embed/datasets/{id}/fetch', { id }), {
      body: JSON.stringify(fetchInput(options)),
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      ...signal(options),
    });
    return (await response.json()) as FetchResult;
  }

  /**
   * The rows this session may see, streamed (NDJSON) as objects keyed by
   * column, in column order. The request is sent when iteration starts. A
   * failure before the first row throws that SiloError; one after it (the
   * stream's last line, `{"error": {...}}`) throws a SiloError once the
   * rows before it are consumed. Leaving the loop early closes the stream.
   */
  async *stream<T extends Record<string, unknown> = Row>(id: string, options: FetchOptions = {}): AsyncGenerator<T, void, undefined> {
    const response = await this.#t.send('post', this.#t.url('/v1/embed/datasets/{id}/fetch', { id }), {
      body: JSON.stringify(fetchInput(options)),
      headers: { 'content-type': 'application/json', accept: NDJSON },
      ...signal(options),
    });
    const type = response.headers.get('content-type') ?? '';
    if (!type.startsWith(NDJSON)) {
      // A server that answered with the whole document instead.
      const doc = (await response.json()) as FetchResult;
      for (const cells of doc.rows) {
        yield Object.fromEntries(doc.columns.map((c, i) => [c, cells[i]])) as T;
      }
      return;
    }
    if (response.body === null) return;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    // A line shaped like an error is one only if nothing follows it (a
    // one-column dataset named `error` could hold the same object).
    let held: { row: unknown; error: { code: Schemas['ErrorCode']; message: string } } | undefined;
    let rest = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const lines = (rest + value).split('\n');
        rest = lines.pop() ?? '';
        for (const line of lines) {
          if (line.trim() === '') continue;
          let parsed: unknown;
          try {
            parsed = JSON.parse(line);
          } catch {
            throw broken('the fetch stream sent a line that is not JSON');
          }
          if (held !== undefined) {
            yield held.row as T;
            held = undefined;
          }
          const error = parseStreamError(parsed);
          if (error !== undefined) held = { row: parsed, error };
          else yield parsed as T;
        }
      }
      if (rest.trim() !== '') throw broken('the fetch stream ended in the middle of a line');
      if (held !== undefined) throw streamError(held.error);
    } finally {
      await reader.cancel().catch(() => undefined);
    }
  }

  /** The dataset's metadata (`silo.metadata.v1`) as this session sees it: statistics, never rows. */
  metadata(id: string, options: CallOptions = {}): Promise<Metadata> {
    return this.#t.json('get', '/v1/embed/datasets/{id}/metadata', { params: { id }, ...options });
  }

  /** A plain-language summary of the dataset's metadata (the server's LLM or built-in summarizer). */
  summary(id: string, options: CallOptions = {}): Promise<Summary> {
    return this.#t.json('post', '/v1/embed/datasets/{id}/summary', { params: { id }, ...options });
  }

  toJSON(): { baseUrl: string } {
    return { baseUrl: this.baseUrl };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `SiloSession { baseUrl: ${JSON.stringify(this.baseUrl)} }`;
  }
}
