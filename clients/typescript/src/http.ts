// The one place requests are made: a base URL, a bearer credential kept in
// a private field, and path/method/body/response types taken from the
// generated `paths`, so a call the served document does not have fails to
// compile.
import { errorFromResponse } from './errors.js';
import type { paths } from './schema.js';

/** The HTTP methods the API uses. */
export type Method = 'get' | 'put' | 'post' | 'delete';

/** The paths that have `M`. */
export type PathsWith<M extends Method> = {
  [P in keyof paths]: [NonNullable<paths[P][M]>] extends [never] ? never : P;
}[keyof paths];

/** The generated operation of `M` on `P`. */
export type Operation<P extends keyof paths, M extends Method> = NonNullable<paths[P][M]>;

/** The JSON request body of an operation (`never`: it takes none). */
export type JsonRequest<O> = O extends { requestBody?: infer R }
  ? [NonNullable<R>] extends [never]
    ? never
    : NonNullable<R> extends { content: { 'application/json': infer B } }
      ? B
      : never
  : never;

/** The JSON body of an operation's 200 or 201 response (`void`: none). */
export type JsonResponse<O> = O extends { responses: infer R }
  ? R extends { 200: { content: { 'application/json': infer T } } }
    ? T
    : R extends { 201: { content: { 'application/json': infer T } } }
      ? T
      : void
  : never;

/** The path parameters of an operation. */
export type PathParams<O> = O extends { parameters: { path?: infer P } }
  ? [NonNullable<P>] extends [never] ? Record<string, never> : NonNullable<P>
  : Record<string, never>;

/** The query parameters of an operation. */
export type QueryParams<O> = O extends { parameters: { query?: infer Q } }
  ? [NonNullable<Q>] extends [never] ? Record<string, never> : NonNullable<Q>
  : Record<string, never>;

/** What every call may take. */
export interface CallOptions {
  /** Aborts the request (and a stream's body). */
  signal?: AbortSignal;
}

/** The `fetch` this client uses (Node 20's global one by default). */
export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

/** A raw request, for bodies and responses that are not JSON. */
export interface RawRequest extends CallOptions {
  body?: RequestInit['body'];
  headers?: Record<string, string>;
  /** Needed by Node's fetch for a streamed body. */
  duplex?: 'half';
}

/** Requests with one bearer credential. Never prints it. */
export class Transport {
  readonly baseUrl: string;
  readonly #credential: string;
  readonly #fetch: FetchLike | undefined;

  constructor(baseUrl: string | URL, credential: string, fetchImpl?: FetchLike) {
    const base = String(baseUrl).replace(/\/+$/, '');
    if (!/^https?:\/\//i.test(base)) {
      throw new TypeError('baseUrl must be an http:// or https:// URL');
    }
    if (typeof credential !== 'string' || credential.trim() === '') {
      throw new TypeError('a credential (API key or session token) is required');
    }
    this.baseUrl = base;
    this.#credential = credential;
    this.#fetch = fetchImpl;
  }

  /** `path` with its `{params}` filled in (each URL-encoded) and `query` appended. */
  url(path: string, params: Record<string, unknown> = {}, query: Record<string, unknown> = {}): string {
    const filled = path.replace(/\{([^}]+)\}/g, (_, name: string) => {
      const value = params[name];
      if (value === undefined || value === null || String(value) === '') {
        throw new TypeError(`path parameter \`${name}\` is required`);
      }
      return encodeURIComponent(String(value));
    });
    const search = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== null) search.append(k, String(v));
    }
    const qs = search.toString();
    return `${this.baseUrl}${filled}${qs === '' ? '' : `?${qs}`}`;
  }

  /** Sends a request; a non-2xx answer is thrown as a SiloError. */
  async send(method: string, url: string, init: RawRequest = {}): Promise<Response> {
    const request: RequestInit & { duplex?: 'half' } = {
      method: method.toUpperCase(),
      headers: { ...init.headers, authorization: `Bearer ${this.#credential}` },
    };
    if (init.body !== undefined) request.body = init.body;
    if (init.signal !== undefined) request.signal = init.signal;
    if (init.duplex !== undefined) request.duplex = init.duplex;
    const f = this.#fetch ?? globalThis.fetch;
    const response = await f(url, request);
    if (!response.ok) throw await errorFromResponse(response);
    return response;
  }

  /** A JSON call, typed by the generated document. */
  async json<P extends PathsWith<M>, M extends Method>(
    method: M,
    path: P,
    init: {
      params?: PathParams<Operation<P, M>>;
      query?: QueryParams<Operation<P, M>>;
      body?: JsonRequest<Operation<P, M>>;
    } & CallOptions = {},
  ): Promise<JsonResponse<Operation<P, M>>> {
    const headers: Record<string, string> = { accept: 'application/json' };
    let body: string | undefined;
    if (init.body !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(init.body);
    }
    const response = await this.send(
      method,
      this.url(path, init.params as Record<string, unknown>, init.query as Record<string, unknown>),
      { headers, ...(body === undefined ? {} : { body }), ...(init.signal ? { signal: init.signal } : {}) },
    );
    if (response.status === 204) return undefined as JsonResponse<Operation<P, M>>;
    return (await response.json()) as JsonResponse<Operation<P, M>>;
  }

  toJSON(): { baseUrl: string } {
    return { baseUrl: this.baseUrl };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `Transport { baseUrl: ${JSON.stringify(this.baseUrl)} }`;
  }
}
