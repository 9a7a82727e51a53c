// Starts a real `silo serve` in a fresh data directory, for the live tests;
// stops it (and removes the directory) when done. It listens on a Unix
// socket in that directory and the clients under test reach it through
// `fetch` (undici over the socket): a local socket no network policy of the
// machine running the tests can redirect, and no other process can reach.
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { Agent, fetch as undiciFetch } from 'undici';

import type { FetchLike } from '../src/index.js';

const run = promisify(execFile);

/** The silo binary: `SILO_BIN`, else `${CARGO_TARGET_DIR:-/var/tmp/silo-ci-target}/debug/silo`. */
export function siloBin(): string {
  const bin = process.env.SILO_BIN ?? join(process.env.CARGO_TARGET_DIR || '/var/tmp/silo-ci-target', 'debug', 'silo');
  if (!existsSync(bin)) {
    throw new Error(`no silo binary at ${bin}: build it (cargo build -p silo-host) or set SILO_BIN`);
  }
  return bin;
}

/** A running server. */
export interface SiloServer {
  /** The URL clients are given; the host part names no machine (the socket is used). */
  baseUrl: string;
  /** The `fetch` that reaches this server (pass it to every client). */
  fetch: FetchLike;
  /** The operator (admin) key. */
  adminKey: string;
  dataDir: string;
  /** What the server wrote to stderr so far (its log). */
  log(): string;
  stop(): Promise<void>;
}

const STARTUP_MS = 120_000;
const STOP_MS = 15_000;

function environment(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  // The data dir's own generated key, not one from the caller's shell.
  delete env.SILO_MASTER_KEY;
  env.RUST_LOG ??= 'warn';
  return env;
}

function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
}

/** What clients are given as the base URL: `.invalid` never resolves, so a
 * request that bypassed the socket would fail instead of reaching anything. */
const BASE_URL = 'http://silo.invalid';

/** Starts `silo serve --listen unix:<data dir>/api.sock` with a new operator key. */
export async function startSilo(): Promise<SiloServer> {
  const bin = siloBin();
  const dataDir = await mkdtemp(join(tmpdir(), 'silo-ts-client-'));
  const env = environment();
  const minted = await run(bin, ['api-keys', 'create', '--admin', '--data-dir', dataDir], { env });
  const adminKey = minted.stdout.trim();
  if (adminKey === '') throw new Error('silo api-keys create printed no key');

  const socket = join(dataDir, 'api.sock');
  const child = spawn(bin, ['serve', '--data-dir', dataDir, '--listen', `unix:${socket}`], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  // Never outlive the test process, also when it is stopped by a signal.
  const kill = (): void => {
    child.kill('SIGKILL');
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    kill();
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.once('exit', kill);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const unhook = (): void => {
    process.removeListener('exit', kill);
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  };

  let stderr = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`silo serve did not start within ${STARTUP_MS} ms:\n${stderr}`));
    }, STARTUP_MS);
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      if (stderr.length < 1 << 20) stderr += chunk;
      if (stderr.includes(`silo serving on unix:${socket} `)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`silo serve exited (${code ?? signal}) before serving:\n${stderr}`));
    });
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  }).catch(async (e: unknown) => {
    kill();
    await exited(child);
    unhook();
    await rm(dataDir, { recursive: true, force: true });
    throw e;
  });

  const agent = new Agent({ connect: { socketPath: socket } });
  const fetchOverSocket: FetchLike = (input, init) =>
    undiciFetch(input, { ...(init as unknown as Parameters<typeof undiciFetch>[1]), dispatcher: agent }) as unknown as Promise<Response>;
  return {
    baseUrl: BASE_URL,
    fetch: fetchOverSocket,
    adminKey,
    dataDir,
    log: () => stderr,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(kill, STOP_MS);
        await exited(child);
        clearTimeout(timer);
      }
      unhook();
      await agent.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** An operator call (the SDK covers an organization's key; orgs are the operator's). */
export async function operator<T>(server: SiloServer, method: string, path: string, body?: unknown): Promise<T> {
  const response = await server.fetch(`${server.baseUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${server.adminKey}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return (text === '' ? undefined : JSON.parse(text)) as T;
}

/** Creates an organization and mints its API key; returns the key. */
export async function createOrg(server: SiloServer, name: string): Promise<string> {
  await operator(server, 'POST', '/v1/orgs', { name });
  const minted = await operator<{ token: string }>(server, 'POST', `/v1/orgs/${name}/api-keys`, { name: 'backend' });
  return minted.token;
}
