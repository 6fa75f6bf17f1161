// Helpers for the credential relay tests and benchmark: in-process virtauthd daemons whose every
// hop authenticates with SASL SCRAM-SHA-256, their logs captured as JSON lines, a probe driver
// that asks for credentials in controlled ways, recording callbacks, and (for the multi-host
// test) network namespaces joined by a veth pair. Free of ava, so bench/relay.mjs can use it.

import { spawn, type ChildProcess } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import {
  AuthType,
  CREDENTIAL_SOURCE,
  CredentialType,
  DRIVER,
  ErrorCode,
  ErrorDomain,
  VirError,
  credential,
  parseUri,
  uriParam,
  type ConfValue,
  type ConnectAuth,
  type ConnectUri,
  type Credential,
  type CredentialRequestInfo,
  type CredentialSource,
  type CredentialType as CredentialTypeValue,
  type Driver,
  type DriverConnection,
  type DriverOpenContext,
} from '@virtauth/core';
import { container as rootContainer } from 'tsyringe';

import { buildConfig, createDaemon, createLogger, flushAuditRecords, type DaemonHandle } from '@virtauth/daemon';
import { TestDriver } from '@virtauth/drivers';
import { FileUserDatabase, loadAuthConfSource } from '@virtauth/providers';

import { runProcess } from './peers/process.js';
import { untilClientCount } from './peers/util.js';

/** The SCRAM iteration count the tests use: the smallest the daemon accepts, to keep 200 logins quick. */
export const TEST_SCRAM_ITERATIONS = 4096;

export { JsonLines, type LogRecord } from './log-capture.js';
import { JsonLines, type LogRecord } from './log-capture.js';

export interface DaemonAuditRecord extends LogRecord {
  id: number;
  connectionId: number;
  origin: { daemon: string; driver: string; uri: string }[];
  service: string;
  host: string;
  credentialTypes: string[];
  outcome: string;
  durationMs: number;
  message?: string;
}

/** Writes an auth.conf and returns its path. */
export async function writeAuthConf(dir: string, name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text, { mode: 0o600 });
  return path;
}

/** `[credentials-NAME]` plus `[auth-SERVICE-HOST]` sections, in libvirt's auth.conf syntax. */
export function authConfText(entries: readonly { service: string; host: string; username: string; password: string }[]): string {
  return entries
    .map(
      (e, i) =>
        `[credentials-set${i}]\nusername=${e.username}\nauthname=${e.username}\npassword=${e.password}\n\n[auth-${e.service}-${e.host}]\ncredentials=set${i}\n`,
    )
    .join('\n');
}

/** The auth.conf at `path` as a credential source, read exactly as LIBVIRT_AUTH_FILE would be. */
export async function authConfSource(path: string): Promise<CredentialSource> {
  const source = await loadAuthConfSource(undefined, { env: { LIBVIRT_AUTH_FILE: path } });
  if (!source) throw new Error(`auth.conf ${path} could not be loaded`);
  return source;
}

export interface RelayDaemonOptions {
  /** daemon_name: the daemon appears in origin chains as `NAME@hostname`. */
  name: string;
  dir: string;
  /** SASL users of this daemon, {name: password}. */
  users: Record<string, string>;
  /** More virtauthd.conf settings (relay_max_timeout, relay_max_requests_per_open, ...). */
  settings?: Record<string, ConfValue>;
  /** The daemon's own auth.conf (used when it opens a further hop), registered as a credential source. */
  authConfPath?: string;
  /** Serve the admin program on this socket (default: no admin socket). */
  adminSocket?: string;
  /** uri_allowed_list entries beyond the test hypervisor and the probe driver (XenAPI servers, further hops). */
  allowedUris?: string[];
}

/** The probe driver's URIs, as a uri_allowed_list entry: every probe and its options. */
export const RELAY_PROBE_ALLOWED = 'relayprobe:///?probe=*&count=*&deadline_ms=*';

/** virtauthd in this process: one unix socket with auth sasl (SCRAM-SHA-256), its log captured. */
export class RelayDaemon {
  private stopped = false;

  private constructor(
    readonly name: string,
    readonly socket: string,
    readonly handle: DaemonHandle,
    readonly log: JsonLines,
  ) {}

  static async start(opts: RelayDaemonOptions): Promise<RelayDaemon> {
    const userDb = join(opts.dir, `${opts.name}-users.json`);
    const users = new FileUserDatabase({ path: userDb, iterations: TEST_SCRAM_ITERATIONS });
    for (const [user, password] of Object.entries(opts.users)) await users.setPassword(user, password);
    const settings = new Map<string, ConfValue>(
      Object.entries({
        daemon_name: opts.name,
        sasl_user_db: userDb,
        sasl_mech_list: ['SCRAM-SHA-256'],
        scram_iteration_count: TEST_SCRAM_ITERATIONS,
        sasl_failure_delay_ms: 0,
        max_anonymous_clients: 1000,
        max_client_requests: 50,
        uri_allowed_list: ['test:///default', RELAY_PROBE_ALLOWED, ...(opts.allowedUris ?? [])],
        // Debug: the secret checks see everything the daemon could leak.
        log_level: 1,
        ...(opts.settings ?? {}),
      }),
    );
    const config = buildConfig(settings, `${opts.name}.conf`);
    const log = new JsonLines();
    const socket = join(opts.dir, `${opts.name}.sock`);
    // A container of its own per daemon: daemons in one process must not see each other's plugins.
    const container = rootContainer.createChildContainer();
    if (opts.authConfPath) {
      // The daemon's own auth.conf, as LIBVIRT_AUTH_FILE would give it to a daemon of its own process.
      container.register(CREDENTIAL_SOURCE, { useValue: await authConfSource(opts.authConfPath) });
    }
    const handle = await createDaemon({
      config,
      container,
      logger: createLogger(config.logLevel, log),
      listeners: [{ kind: 'unix', path: socket, auth: AuthType.SASL, readOnly: false }],
      ...(opts.adminSocket ? { adminSocket: opts.adminSocket } : {}),
    });
    return new RelayDaemon(opts.name, socket, handle, log);
  }

  /** `NAME@hostname`, as it appears in origin chains. */
  get processName(): string {
    return this.handle.server.processName;
  }

  get clientCount(): number {
    return this.handle.server.clientCount;
  }

  onClientCountChange(listener: (count: number) => void): () => void {
    return this.handle.server.onClientCountChange(listener);
  }

  registerDriver(driver: Driver): void {
    this.handle.container.register(DRIVER, { useValue: driver });
  }

  /** The daemon's audit records so far, those it still holds for its next batch included. */
  audits(): DaemonAuditRecord[] {
    flushAuditRecords();
    return this.log.events('relay.audit') as DaemonAuditRecord[];
  }

  /** A URI reaching `inner` (a driver URI without transport) through this daemon's socket. */
  uriFor(scheme: string, query: string): string {
    return `${scheme}+unix:///?socket=${this.socket}${query ? `&${query}` : ''}`;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.handle.stop();
  }
}

/** Waits until no client is connected to any of the daemons (connections torn down everywhere). */
export async function waitForNoClients(daemons: readonly RelayDaemon[], timeoutMs = 30_000): Promise<void> {
  await untilClientCount(daemons, 0, timeoutMs, `no clients left on ${daemons.map((d) => d.name).join(', ')}`);
}

/** What a daemon opens for `xenapiUriVia`: its uri_allowed_list entry. */
export function xenapiDriverUri(xenPort: number, xenHost = '127.0.0.1'): string {
  return `xenapi:///?server=${xenHost}:${xenPort}&scheme=http`;
}

/** `xenapi+unix` through one daemon to a XenAPI server at 127.0.0.1:port over http. */
export function xenapiUriVia(daemonSocket: string, xenPort: number, xenHost = '127.0.0.1'): string {
  return `xenapi+unix:///?socket=${daemonSocket}&server=${xenHost}:${xenPort}&scheme=http`;
}

/** A URI that makes the daemon at `outerSocket` open `innerUri` (a further hop) with its remote driver. */
export function chainUri(outerSocket: string, innerUri: string): string {
  const scheme = parseUri(innerUri).driver;
  return `${scheme}+unix:///?socket=${outerSocket}&name=${encodeURIComponent(innerUri)}`;
}

export interface RecordedCall {
  credentials: Pick<Credential, 'type' | 'prompt' | 'challenge' | 'defresult'>[];
  service: string;
  host: string;
  origin: { daemon: string; driver: string; uri: string }[];
  deadline: number | undefined;
  receivedAt: number;
  signal: AbortSignal | undefined;
}

export type Responder = (creds: Credential[], info: CredentialRequestInfo) => void | boolean | Promise<void | boolean>;

/** A ConnectAuth whose callback records each call (prompts, origin, deadline) before answering. */
export class RecordingAuth implements ConnectAuth {
  readonly calls: RecordedCall[] = [];
  /** Promises of callbacks still running: a test checks they all settle. */
  readonly running = new Set<Promise<unknown>>();

  constructor(
    readonly credTypes: readonly CredentialTypeValue[],
    private readonly respond: Responder,
  ) {}

  readonly callback = (creds: Credential[], info: CredentialRequestInfo): Promise<void | boolean> => {
    this.calls.push({
      credentials: creds.map(({ type, prompt, challenge, defresult }) => ({ type, prompt, challenge, defresult })),
      service: info.service,
      host: info.host,
      origin: info.origin.map((h) => ({ ...h })),
      deadline: info.deadline,
      receivedAt: Date.now(),
      signal: info.signal,
    });
    const run = Promise.resolve().then(() => this.respond(creds, info));
    const tracked = run.finally(() => this.running.delete(tracked));
    tracked.catch(() => {});
    this.running.add(tracked);
    return run;
  };
}

/** Answers every XenAPI-style request: AUTHNAME with `user`, PASSPHRASE with `password`. */
export function answerWith(user: string, password: string): Responder {
  return (creds) => {
    for (const c of creds) c.result = c.type === CredentialType.PASSPHRASE ? password : user;
  };
}

/** Resolves `false` once the request's signal aborts: a person who never answers. */
export function neverAnswer(): Responder {
  return (_creds, info) =>
    new Promise<boolean>((resolve) => {
      if (!info.signal) throw new Error('a relayed request always carries a signal');
      if (info.signal.aborted) resolve(false);
      else info.signal.addEventListener('abort', () => resolve(false), { once: true });
    });
}

/** The rejection of `promise` as a VirError (fails when it resolves or rejects with something else). */
export async function virErrorOf(promise: Promise<unknown>): Promise<VirError> {
  try {
    await promise;
  } catch (e) {
    if (e instanceof VirError) return e;
    throw new Error(`expected a VirError, got ${e instanceof Error ? e.stack : String(e)}`, { cause: e });
  }
  throw new Error('expected a rejection, the promise resolved');
}

/** What a probe open observed, for assertions. */
export interface ProbeObservation {
  mode: string;
  /** The deadline the probe put on its request (absolute ms), when it set one. */
  deadline?: number;
  answers: (string | null)[];
  error?: VirError;
}

/**
 * A driver for relay tests and the benchmark, URI `relayprobe:///?probe=...` (not `mode`, which
 * the remote driver keeps for itself):
 *  - ask: one AUTHNAME request (service `relayprobe`, host `probe.invalid`), then the test hypervisor;
 *    `deadline_ms=N` puts the driver's own deadline on it.
 *  - flood: up to `count` requests in a row (default 50), stopping at the first refusal.
 *  - later: nothing during the open; the connection's connectGetHostname asks for a credential afterwards.
 */
export class RelayProbeDriver implements Driver {
  readonly name = 'relayprobe';
  readonly observations: ProbeObservation[] = [];
  private readonly test = new TestDriver();

  accepts(uri: ConnectUri): boolean {
    return uri.driver === 'relayprobe' && uri.transport === null && !uri.host;
  }

  async open(uri: ConnectUri, ctx: DriverOpenContext): Promise<DriverConnection> {
    const mode = uriParam(uri, 'probe') ?? 'ask';
    const obs: ProbeObservation = { mode, answers: [] };
    this.observations.push(obs);
    const ask = async (info: { deadline?: number } = {}) => {
      const c = credential(CredentialType.AUTHNAME, 'probe user', null, null);
      await ctx.requestCredentials([c], {
        service: 'relayprobe',
        host: 'probe.invalid',
        ...info,
        ...(ctx.signal ? { signal: ctx.signal } : {}),
      });
      obs.answers.push(c.result);
      return c.result;
    };
    try {
      if (mode === 'ask') {
        const deadlineMs = uriParam(uri, 'deadline_ms');
        if (deadlineMs !== null) obs.deadline = Date.now() + Number(deadlineMs);
        await ask(obs.deadline !== undefined ? { deadline: obs.deadline } : {});
      } else if (mode === 'flood') {
        const count = Number(uriParam(uri, 'count') ?? 50);
        for (let i = 0; i < count; i++) await ask();
      } else if (mode !== 'later') {
        throw new VirError({ code: ErrorCode.INVALID_ARG, domain: ErrorDomain.TEST, detail: `relayprobe: unknown probe '${mode}'` });
      }
    } catch (e) {
      if (e instanceof VirError) obs.error = e;
      throw e;
    }
    const inner = await this.test.open(parseUri('test:///default'), ctx);
    if (mode !== 'later') return inner;
    // Asking after the open has finished: the daemon must refuse to relay it.
    return new Proxy(inner, {
      get: (target, prop) =>
        prop === 'connectGetHostname' ? async () => ({ hostname: (await ask()) ?? '' }) : Reflect.get(target, prop, target),
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Network namespaces: two test hosts joined by a veth pair, addresses only inside them.

async function ip(args: string[]): Promise<void> {
  const r = await runProcess('ip', args, { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`ip ${args.join(' ')} failed (exit ${r.code}): ${r.stderr.trim()}`);
}

/** Two namespaces, `${prefix}1` at 10.213.0.1 and `${prefix}2` at 10.213.0.2, with loopback up. */
export class NetnsPair {
  static readonly SUBNET_PREFIX = '10.213.0';
  readonly hostA = `${NetnsPair.SUBNET_PREFIX}.1`;
  readonly hostB = `${NetnsPair.SUBNET_PREFIX}.2`;
  private removed = false;

  private constructor(
    readonly nsA: string,
    readonly nsB: string,
  ) {}

  /** Creates the pair, or throws when namespaces cannot be made here (not root, no CAP_NET_ADMIN). */
  static async create(prefix: string): Promise<NetnsPair> {
    const pair = new NetnsPair(`${prefix}1`, `${prefix}2`);
    try {
      await ip(['netns', 'add', pair.nsA]);
      await ip(['netns', 'add', pair.nsB]);
      const vethA = `${prefix}a`;
      const vethB = `${prefix}b`;
      // Created inside A so nothing of it ever exists in the host's namespace.
      await ip(['-n', pair.nsA, 'link', 'add', vethA, 'type', 'veth', 'peer', 'name', vethB, 'netns', pair.nsB]);
      await ip(['-n', pair.nsA, 'addr', 'add', `${pair.hostA}/24`, 'dev', vethA]);
      await ip(['-n', pair.nsB, 'addr', 'add', `${pair.hostB}/24`, 'dev', vethB]);
      for (const [ns, dev] of [
        [pair.nsA, vethA],
        [pair.nsB, vethB],
      ] as const) {
        await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
        await ip(['-n', ns, 'link', 'set', dev, 'up']);
      }
    } catch (e) {
      await pair.remove();
      throw e;
    }
    return pair;
  }

  /** Deleting the namespaces deletes the veth pair with them. */
  async remove(): Promise<void> {
    if (this.removed) return;
    this.removed = true;
    for (const ns of [this.nsA, this.nsB]) await runProcess('ip', ['netns', 'del', ns], { timeoutMs: 10_000 });
  }
}

/** A child process with its stdout lines and stderr captured; `kill` ends it by its own pid. */
export class ChildRun {
  readonly stdout: string[] = [];
  readonly stderr = new JsonLines();
  readonly exited: Promise<number | null>;
  private partial = '';
  private readonly lineWaiters: { match: (line: string) => boolean; resolve: (line: string) => void }[] = [];

  constructor(readonly child: ChildProcess) {
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      const parts = (this.partial + chunk).split('\n');
      this.partial = parts.pop() ?? '';
      for (const line of parts) {
        this.stdout.push(line);
        for (const w of [...this.lineWaiters]) {
          if (w.match(line)) {
            this.lineWaiters.splice(this.lineWaiters.indexOf(w), 1);
            w.resolve(line);
          }
        }
      }
    });
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => this.stderr.feed(chunk));
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }

  static spawn(command: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): ChildRun {
    return new ChildRun(spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], env }));
  }

  /** The first stdout line (past or future) that `match` accepts. */
  line(match: (line: string) => boolean, timeoutMs: number, what: string): Promise<string> {
    const seen = this.stdout.find(match);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; stderr: ${this.stderr.text().slice(-2000)}`)),
        timeoutMs,
      );
      this.lineWaiters.push({
        match,
        resolve: (l) => {
          clearTimeout(timer);
          resolve(l);
        },
      });
      void this.exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`process exited (${code}) before ${what}; stderr: ${this.stderr.text().slice(-2000)}`));
      });
    });
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill(signal);
    await this.exited;
  }
}

/** Removes a directory tree, ignoring one that is already gone. */
export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}
