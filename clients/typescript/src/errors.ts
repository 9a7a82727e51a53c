// Typed errors: every non-2xx answer (and an error line ending an NDJSON
// stream) becomes a SiloError whose `code` is the server's stable ErrorCode.
import type { components } from './schema.js';

/** Every `code` an error body can carry (generated from the OpenAPI document). */
export type ErrorCode = components['schemas']['ErrorCode'];

/** The JSON body of every error: `{"error": {"code", "message"}}`. */
export type ErrorBody = components['schemas']['ErrorBody'];

/** Options of a {@link SiloError}. */
export interface SiloErrorInit {
  /** HTTP status (for an error inside a 200 stream: the status its code stands for). */
  status: number;
  /** The stable code; branch on this, never on the message. */
  code: ErrorCode;
  /** What went wrong, safe to show. Never holds the API key or the token. */
  message: string;
  /** Seconds to wait before retrying (`Retry-After`, sent with 503 `busy`). */
  retryAfter?: number;
}

/**
 * A failed call. `code` is one of the {@link ErrorCode}s; each has a
 * subclass (`NotFoundError`, `UnauthorizedError`, …) for `instanceof`, and
 * {@link isSiloError} narrows by code.
 */
export class SiloError extends Error {
  readonly status: number;
  readonly code: ErrorCode;
  declare readonly retryAfter?: number;

  constructor(init: SiloErrorInit) {
    super(init.message);
    this.name = new.target.name;
    this.status = init.status;
    this.code = init.code;
    if (init.retryAfter !== undefined) this.retryAfter = init.retryAfter;
  }
}

/** 400 `invalid_request`: the request is malformed or names something invalid. */
export class InvalidRequestError extends SiloError { declare readonly code: 'invalid_request'; }
/** 401 `unauthorized`: no credential, or one unknown, revoked, expired or superseded. */
export class UnauthorizedError extends SiloError { declare readonly code: 'unauthorized'; }
/** 403 `forbidden`: the policy refused the operation. */
export class ForbiddenError extends SiloError { declare readonly code: 'forbidden'; }
/** 404 `not_found`: not there, or not visible to this caller. */
export class NotFoundError extends SiloError { declare readonly code: 'not_found'; }
/** 408 `request_timeout`: the request did not finish in time. */
export class RequestTimeoutError extends SiloError { declare readonly code: 'request_timeout'; }
/** 409 `conflict`: it conflicts with the current state (a name in use, an upload running). */
export class ConflictError extends SiloError { declare readonly code: 'conflict'; }
/** 413/422 `limit_exceeded`: a size, row, time or memory limit was reached. */
export class LimitExceededError extends SiloError { declare readonly code: 'limit_exceeded'; }
/** 503 `busy`: capacity in use; retry after `retryAfter` seconds. */
export class BusyError extends SiloError { declare readonly code: 'busy'; }
/** 502 `connector_failed`: the connector failed or misbehaved. */
export class ConnectorFailedError extends SiloError { declare readonly code: 'connector_failed'; }
/** 502 `datasource_failed`: the datasource was unreachable, timed out or failed a query. */
export class DatasourceFailedError extends SiloError { declare readonly code: 'datasource_failed'; }
/** 500 `internal`: a host bug; details are in the host's log only. */
export class InternalError extends SiloError { declare readonly code: 'internal'; }

// A Record over the generated union: a code added to the document fails to
// compile here until it has a class.
const CLASSES: Record<ErrorCode, new (init: SiloErrorInit) => SiloError> = {
  invalid_request: InvalidRequestError,
  unauthorized: UnauthorizedError,
  forbidden: ForbiddenError,
  not_found: NotFoundError,
  request_timeout: RequestTimeoutError,
  conflict: ConflictError,
  limit_exceeded: LimitExceededError,
  busy: BusyError,
  connector_failed: ConnectorFailedError,
  datasource_failed: DatasourceFailedError,
  internal: InternalError,
};

/** Every error code, in the document's order. */
export const ERROR_CODES = Object.freeze(Object.keys(CLASSES) as ErrorCode[]);

/** The status the server answers each code with. */
const STATUS: Record<ErrorCode, number> = {
  invalid_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  request_timeout: 408,
  conflict: 409,
  limit_exceeded: 422,
  busy: 503,
  connector_failed: 502,
  datasource_failed: 502,
  internal: 500,
};

/** Whether `e` is a SiloError (of `code`, when given). */
export function isSiloError(e: unknown): e is SiloError;
export function isSiloError<C extends ErrorCode>(e: unknown, code: C): e is SiloError & { readonly code: C };
export function isSiloError(e: unknown, code?: ErrorCode): boolean {
  return e instanceof SiloError && (code === undefined || e.code === code);
}

function isErrorCode(v: unknown): v is ErrorCode {
  return typeof v === 'string' && Object.hasOwn(CLASSES, v);
}

/** The subclass for `init.code`. */
export function siloError(init: SiloErrorInit): SiloError {
  return new CLASSES[init.code](init);
}

/** The code a status stands for, when the body carries none (a proxy's page). */
function codeOfStatus(status: number): ErrorCode {
  switch (status) {
    case 400: return 'invalid_request';
    case 401: return 'unauthorized';
    case 403: return 'forbidden';
    case 404: case 405: return 'not_found';
    case 408: return 'request_timeout';
    case 409: return 'conflict';
    case 413: case 422: return 'limit_exceeded';
    case 429: case 503: return 'busy';
    default: return status >= 500 ? 'internal' : 'invalid_request';
  }
}

/** `Retry-After` in seconds: delta-seconds or an HTTP date. */
function retryAfter(header: string | null): number | undefined {
  if (header === null) return undefined;
  const text = header.trim();
  if (/^\d+$/.test(text)) return Number(text);
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

/**
 * The code and message of an error body `{"error": {"code", "message"}}`,
 * or undefined if `value` is not one. `code` may be one this client does
 * not know (a newer server).
 */
export function parseErrorBody(value: unknown): { code: string; message: string } | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const keys = Object.keys(value);
  if (keys.length !== 1 || keys[0] !== 'error') return undefined;
  const detail = (value as { error: unknown }).error;
  if (typeof detail !== 'object' || detail === null || Array.isArray(detail)) return undefined;
  const { code, message } = detail as { code?: unknown; message?: unknown };
  if (typeof code !== 'string' || typeof message !== 'string') return undefined;
  return { code, message };
}

/**
 * The error an NDJSON stream's last line reports: `{"error": {"code",
 * "message"}}` with exactly those keys and a known code, else undefined
 * (a row).
 */
export function parseStreamError(value: unknown): { code: ErrorCode; message: string } | undefined {
  const detail = parseErrorBody(value);
  if (detail === undefined || !isErrorCode(detail.code)) return undefined;
  const keys = Object.keys((value as { error: object }).error);
  if (keys.length !== 2) return undefined;
  return { code: detail.code, message: detail.message };
}

/** A SiloError from an error line of an NDJSON stream (after status 200). */
export function streamError(detail: { code: ErrorCode; message: string }): SiloError {
  return siloError({ status: STATUS[detail.code], code: detail.code, message: detail.message });
}

const MAX_TEXT = 200;

/** The SiloError a non-2xx response stands for (reads its body). */
export async function errorFromResponse(response: Response): Promise<SiloError> {
  const status = response.status;
  const after = retryAfter(response.headers.get('retry-after'));
  let text = '';
  try {
    text = await response.text();
  } catch {
    // The body broke off: the status still says what happened.
  }
  let code = codeOfStatus(status);
  let message = `HTTP ${status}`;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const detail = parseErrorBody(parsed);
  if (detail !== undefined) {
    // A code this client does not know keeps the status's.
    if (isErrorCode(detail.code)) code = detail.code;
    message = detail.message;
  } else if (text.trim() !== '') {
    // Not Silo's JSON (a proxy, an unknown route): a bounded excerpt.
    const excerpt = text.trim().replace(/\s+/g, ' ');
    message = `HTTP ${status}: ${excerpt.length > MAX_TEXT ? `${excerpt.slice(0, MAX_TEXT)}…` : excerpt}`;
  }
  return siloError({ status, code, message, ...(after === undefined ? {} : { retryAfter: after }) });
}
