// A small typed XenAPI client: JSON-RPC 2.0 over HTTP(S) POST /jsonrpc, one session per client.

import * as http from 'node:http';
import * as https from 'node:https';
import { ErrorCode, ErrorDomain, VirError } from '@virtauth/core';
import { XenApiError, mapXenApiError } from './errors.js';

/** Any value the XenAPI JSON-RPC encoding carries. */
export type XenApiValue = string | number | boolean | null | XenApiValue[] | { [key: string]: XenApiValue };

export interface XenApiEndpoint {
  scheme: 'http' | 'https';
  host: string;
  port: number;
  /** Check the server's TLS certificate (https only). */
  verifyCertificate: boolean;
}

export interface XenApiCallOptions {
  /** Aborts the call (the open being abandoned, for example). */
  signal?: AbortSignal;
}

export interface XenApiLoginOptions extends XenApiCallOptions {
  endpoint: XenApiEndpoint;
  username: string;
  password: string;
  /** Per-call limit in milliseconds. */
  timeoutMs?: number;
  /** How many `HOST_IS_SLAVE` answers to follow to the pool master. */
  maxRedirects?: number;
  /** Reported to the server as the session's originator. */
  originator?: string;
}

export const DEFAULT_CALL_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_REDIRECTS = 3;
/** Above this a reply is refused rather than buffered: a whole-pool record map stays far below it. */
const MAX_REPLY_BYTES = 64 * 1024 * 1024;
/** The API version sent at login; servers accept any version at or below their own. */
const LOGIN_API_VERSION = '1.0';

export function formatAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * The endpoint a `HOST_IS_SLAVE` answer points to: the master's address replaces the host; the
 * scheme, the port (unless the address carries one) and the verification setting stay.
 */
export function masterEndpoint(current: XenApiEndpoint, masterAddress: string): XenApiEndpoint {
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(masterAddress);
  if (bracketed) return { ...current, host: bracketed[1]!, port: bracketed[2] ? Number(bracketed[2]) : current.port };
  const hostPort = /^([^:]+):(\d+)$/.exec(masterAddress);
  if (hostPort) return { ...current, host: hostPort[1]!, port: Number(hostPort[2]) };
  return { ...current, host: masterAddress };
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Replaces any parameter that contains one of the secrets, so a misbehaving server cannot echo one into an error. */
function redact(params: readonly unknown[], secrets: readonly string[]): string[] {
  return params.map((p) => {
    const text = typeof p === 'string' ? p : (JSON.stringify(p) ?? String(p));
    return secrets.some((s) => s !== '' && text.includes(s)) ? '<redacted>' : text;
  });
}

/**
 * Reads a JSON-RPC reply in either shape XenAPI servers use: v2 (`result`, or `error` as
 * `{code, message: CODE, data: [params]}`) and v1 (`error` as `[CODE, ...params]`, null on success).
 */
export function parseJsonRpcReply(body: string, secrets: readonly string[] = []): XenApiValue {
  let reply: unknown;
  try {
    reply = JSON.parse(body);
  } catch {
    throw new Error('the reply is not JSON');
  }
  if (!isPlainObject(reply)) throw new Error('the reply is not a JSON object');
  const error = reply['error'];
  if (error !== undefined && error !== null) {
    if (Array.isArray(error)) {
      const [code, ...params] = error;
      if (typeof code !== 'string') throw new Error('the v1 error has no code');
      throw new XenApiError(code, redact(params, secrets));
    }
    if (isPlainObject(error)) {
      const code = error['message'];
      const data = error['data'];
      if (typeof code !== 'string') throw new Error('the error has no message');
      throw new XenApiError(code, redact(Array.isArray(data) ? data : data === undefined || data === null ? [] : [data], secrets));
    }
    throw new Error('the error member has an unknown shape');
  }
  if (!('result' in reply)) throw new Error('the reply has neither result nor error');
  return reply['result'] as XenApiValue;
}

/** One HTTP(S) endpoint with its own keep-alive agent; knows nothing of sessions. */
export class XenApiTransport {
  readonly address: string;
  private readonly agent: http.Agent;
  private nextId = 1;

  constructor(
    readonly endpoint: XenApiEndpoint,
    private readonly timeoutMs: number = DEFAULT_CALL_TIMEOUT_MS,
  ) {
    this.address = formatAddress(endpoint.host, endpoint.port);
    this.agent =
      endpoint.scheme === 'https'
        ? new https.Agent({ keepAlive: true, rejectUnauthorized: endpoint.verifyCertificate })
        : new http.Agent({ keepAlive: true });
  }

  /**
   * One JSON-RPC call. Throws XenApiError for a failure the server reported, VirError for
   * anything else (connection, TLS, HTTP status, timeout, abort, malformed reply).
   */
  async call(
    method: string,
    params: readonly XenApiValue[],
    opts: XenApiCallOptions & { secrets?: readonly string[] } = {},
  ): Promise<XenApiValue> {
    const body = JSON.stringify({ jsonrpc: '2.0', method, params, id: this.nextId++ });
    const text = await this.post(method, body, opts.signal);
    try {
      return parseJsonRpcReply(text, opts.secrets ?? []);
    } catch (e) {
      if (e instanceof XenApiError) throw e;
      throw this.fail(
        ErrorCode.INTERNAL_ERROR,
        `XenAPI server ${this.address} sent an invalid JSON-RPC reply to ${method}: ${(e as Error).message}`,
        e,
      );
    }
  }

  close(): void {
    this.agent.destroy();
  }

  private fail(code: number, detail: string, cause?: unknown): VirError {
    return new VirError({ code, domain: ErrorDomain.XENAPI, detail, cause });
  }

  private post(method: string, body: string, signal: AbortSignal | undefined, mayRetry = true): Promise<string> {
    const { scheme, host, port } = this.endpoint;
    return new Promise<string>((resolve, reject) => {
      if (signal?.aborted) return reject(this.abandoned(method, signal));
      const request = (scheme === 'https' ? https.request : http.request)({
        host,
        port,
        path: '/jsonrpc',
        method: 'POST',
        agent: this.agent,
        headers: { 'Content-Type': 'application/json', Accept: 'application/json', 'Content-Length': Buffer.byteLength(body) },
      });
      let settled = false;
      const finish = (err: VirError | null, text?: string): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (err) {
          request.destroy();
          reject(err);
        } else resolve(text!);
      };
      const timer = setTimeout(
        () =>
          finish(
            this.fail(
              ErrorCode.OPERATION_TIMEOUT,
              `XenAPI server ${this.address} did not answer ${method} within ${this.timeoutMs / 1000}s`,
            ),
          ),
        this.timeoutMs,
      );
      const onAbort = (): void => finish(this.abandoned(method, signal!));
      signal?.addEventListener('abort', onAbort, { once: true });

      request.on('error', (e: NodeJS.ErrnoException) => {
        // A kept-alive socket the server closed while idle resets the next request before the
        // server read it: sent again once on a fresh socket, as Node's documentation advises.
        if (mayRetry && request.reusedSocket && e.code === 'ECONNRESET' && !settled) {
          settled = true;
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          resolve(this.post(method, body, signal, false));
          return;
        }
        finish(this.connectionError(e));
      });
      request.on('response', (response) => {
        const chunks: Buffer[] = [];
        let size = 0;
        response.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_REPLY_BYTES) {
            finish(
              this.fail(
                ErrorCode.INTERNAL_ERROR,
                `XenAPI server ${this.address} sent a reply to ${method} larger than ${MAX_REPLY_BYTES} bytes`,
              ),
            );
          } else chunks.push(chunk);
        });
        response.on('error', (e: NodeJS.ErrnoException) => finish(this.connectionError(e)));
        response.on('end', () => {
          const status = response.statusCode ?? 0;
          if (status < 200 || status > 299) {
            finish(
              this.fail(
                ErrorCode.HTTP_ERROR,
                `XenAPI server ${this.address} answered ${method} with HTTP ${status}${response.statusMessage ? ` (${response.statusMessage})` : ''}`,
              ),
            );
          } else finish(null, Buffer.concat(chunks).toString('utf8'));
        });
      });
      request.end(body);
    });
  }

  private abandoned(method: string, signal: AbortSignal): VirError {
    if (signal.reason instanceof VirError) return signal.reason;
    return this.fail(ErrorCode.OPERATION_FAILED, `XenAPI call ${method} to ${this.address} was abandoned`, signal.reason);
  }

  private connectionError(e: NodeJS.ErrnoException): VirError {
    const code = e.code ?? '';
    if (code === 'ECONNREFUSED') {
      return this.fail(ErrorCode.SYSTEM_ERROR, `unable to connect to XenAPI server at ${this.address}: connection refused`, e);
    }
    if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
      return this.fail(ErrorCode.SYSTEM_ERROR, `unable to resolve XenAPI server host '${this.endpoint.host}'`, e);
    }
    if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER/.test(code)) {
      return this.fail(
        ErrorCode.SYSTEM_ERROR,
        `the TLS certificate of XenAPI server ${this.address} could not be verified (${code}); trust its CA, or add no_verify=1 to the URI to skip the check`,
        e,
      );
    }
    return this.fail(ErrorCode.SYSTEM_ERROR, `connection to XenAPI server ${this.address} failed: ${e.message}`, e);
  }
}

/** A logged-in XenAPI session on the pool master. */
export class XenApiSession {
  private loggedOut = false;

  private constructor(
    private readonly transport: XenApiTransport,
    private readonly sessionRef: string,
    readonly username: string,
    /** The host name the user asked for (authentication messages name it). */
    readonly requestedHost: string,
  ) {}

  /** The endpoint the session lives on: the pool master, after any redirects. */
  get endpoint(): XenApiEndpoint {
    return this.transport.endpoint;
  }

  get address(): string {
    return this.transport.address;
  }

  /**
   * Logs in, following `HOST_IS_SLAVE` to the pool master at most `maxRedirects` times.
   * Failures are VirErrors; the password appears in none of them.
   */
  static async login(opts: XenApiLoginOptions): Promise<XenApiSession> {
    const maxRedirects = opts.maxRedirects ?? DEFAULT_MAX_REDIRECTS;
    const params = [opts.username, opts.password, LOGIN_API_VERSION, opts.originator ?? 'virtauth'];
    let endpoint = opts.endpoint;
    for (let redirects = 0; ; redirects++) {
      const transport = new XenApiTransport(endpoint, opts.timeoutMs);
      try {
        const ref = await transport.call('session.login_with_password', params, {
          secrets: [opts.password],
          ...(opts.signal ? { signal: opts.signal } : {}),
        });
        if (typeof ref !== 'string' || ref === '') {
          throw new VirError({
            code: ErrorCode.INTERNAL_ERROR,
            domain: ErrorDomain.XENAPI,
            detail: `XenAPI server ${transport.address} answered session.login_with_password without a session reference`,
          });
        }
        return new XenApiSession(transport, ref, opts.username, opts.endpoint.host);
      } catch (e) {
        transport.close();
        if (e instanceof XenApiError && e.code === 'HOST_IS_SLAVE' && e.params[0] && redirects < maxRedirects) {
          endpoint = masterEndpoint(endpoint, e.params[0]);
          continue;
        }
        if (e instanceof XenApiError) {
          throw mapXenApiError(e, {
            host: opts.endpoint.host,
            address: transport.address,
            method: 'session.login_with_password',
            username: opts.username,
          });
        }
        throw e;
      }
    }
  }

  /** Calls `method(session, ...args)`; server failures become VirErrors (the XenApiError is the cause). */
  async call(method: string, args: readonly XenApiValue[] = [], opts: XenApiCallOptions = {}): Promise<XenApiValue> {
    if (this.loggedOut) {
      throw new VirError({
        code: ErrorCode.INVALID_CONN,
        domain: ErrorDomain.XENAPI,
        detail: `XenAPI call ${method}: the connection is closed`,
      });
    }
    try {
      return await this.transport.call(method, [this.sessionRef, ...args], opts);
    } catch (e) {
      if (e instanceof XenApiError) {
        throw mapXenApiError(e, { host: this.requestedHost, address: this.address, method, username: this.username });
      }
      throw e;
    }
  }

  /** Ends the session on the server and releases the connection; safe to call twice. */
  async logout(): Promise<void> {
    if (this.loggedOut) return;
    this.loggedOut = true;
    try {
      await this.transport.call('session.logout', [this.sessionRef]);
    } catch (e) {
      if (e instanceof XenApiError) {
        throw mapXenApiError(e, { host: this.requestedHost, address: this.address, method: 'session.logout', username: this.username });
      }
      throw e;
    } finally {
      this.transport.close();
    }
  }
}
