// Opens the byte stream the remote driver speaks over: a unix socket, TCP, or TLS; other
// transports (SSH) register an opener by name.

import { createHash } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { readFile } from 'node:fs/promises';
import type { Duplex } from 'node:stream';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  ErrorCode,
  ErrorDomain,
  VirError,
  uriParam,
  type ConnectAuth,
  type ConnectUri,
  type CredentialRequester,
  type TransportInfo,
} from '@virtauth/core';
import { connectWithLargeReads } from './large-reads.js';
import { sshTransports } from './ssh/transports.js';

export const DEFAULT_TCP_PORT = 16509;
export const DEFAULT_TLS_PORT = 16514;

export interface OpenedTransport {
  /** A socket, or the stream of an SSH channel or of a child process's stdio. */
  socket: Duplex;
  info: TransportInfo;
}

export interface TransportOptions {
  readOnly: boolean;
  signal?: AbortSignal;
  /** Connect timeout in ms. */
  timeoutMs?: number;
  /** Transports that log in themselves (SSH) ask here: auth.conf, then the callback or relay. */
  requestCredentials?: CredentialRequester;
  /** The caller's callback: opens made with the same one may share an SSH connection. */
  auth?: ConnectAuth | null;
  /** Credential types the relay's far end can take: a daemon's driver asks its client with these. */
  relayCredTypes?: readonly number[];
}

export type TransportOpener = (uri: ConnectUri, opts: TransportOptions) => Promise<OpenedTransport>;

/** Transports beyond unix, tcp and tls, by the name in the URI scheme (`qemu+ssh`). */
const registeredTransports = new Map<string, TransportOpener>(sshTransports);

export function registerTransport(name: string, opener: TransportOpener): void {
  registeredTransports.set(name, opener);
}

function systemError(detail: string, cause?: unknown): VirError {
  return new VirError({ code: ErrorCode.SYSTEM_ERROR, domain: ErrorDomain.RPC, detail, cause });
}

/** libvirt's default daemon socket for a URI path: `/system` (or none) vs `/session`. */
export function defaultUnixSocket(uri: ConnectUri, readOnly: boolean): string {
  if (uri.path === '/session' && process.getuid?.() !== 0) {
    const runtime = process.env.XDG_RUNTIME_DIR ?? join(homedir(), '.cache');
    return join(runtime, 'libvirt', 'libvirt-sock');
  }
  return readOnly ? '/run/libvirt/libvirt-sock-ro' : '/run/libvirt/libvirt-sock';
}

function connectWith(socket: net.Socket, event: 'connect' | 'secureConnect', what: string, opts: TransportOptions): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const timeout = setTimeout(
      () => fail(systemError(`unable to connect to ${what}: timed out after ${opts.timeoutMs} ms`)),
      opts.timeoutMs ?? 30000,
    );
    const onAbort = () => fail(opts.signal!.reason ?? systemError(`connecting to ${what} was aborted`));
    const cleanup = () => {
      clearTimeout(timeout);
      opts.signal?.removeEventListener('abort', onAbort);
      socket.off('error', onError);
    };
    const fail = (e: unknown) => {
      cleanup();
      socket.destroy();
      reject(e);
    };
    const onError = (e: NodeJS.ErrnoException) => fail(systemError(`unable to connect to ${what}: ${e.message}`, e));
    socket.once('error', onError);
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    socket.once(event, () => {
      cleanup();
      resolve(socket);
    });
  });
}

export async function openTransport(uri: ConnectUri, opts: TransportOptions): Promise<OpenedTransport> {
  const transport = uri.transport ?? (uri.host ? 'tls' : 'unix');
  switch (transport) {
    case 'unix': {
      const path = uriParam(uri, 'socket') ?? defaultUnixSocket(uri, opts.readOnly);
      const socket = await connectWith(connectWithLargeReads({ path }), 'connect', `socket '${path}'`, opts);
      socket.setNoDelay(true);
      // The socket the user named (or libvirt's default for the URI) is who we reached.
      return { socket, info: { kind: 'unix', secure: true, identity: { transport: 'unix', socket: resolve(path) } } };
    }
    case 'tcp': {
      const host = uri.host || 'localhost';
      const port = uri.port ?? DEFAULT_TCP_PORT;
      const socket = await connectWith(connectWithLargeReads({ host, port }), 'connect', `${host}:${port}`, opts);
      socket.setNoDelay(true);
      return {
        socket,
        info: {
          kind: 'tcp',
          secure: false,
          localAddress: `${socket.localAddress};${socket.localPort}`,
          remoteAddress: `${socket.remoteAddress};${socket.remotePort}`,
        },
      };
    }
    case 'tls':
      return openTls(uri, opts);
    default: {
      const opener = registeredTransports.get(transport);
      if (opener) return opener(uri, opts);
      const known = ['tls', 'unix', 'tcp', ...registeredTransports.keys()].join('|');
      throw new VirError({
        code: ErrorCode.INVALID_ARG,
        domain: ErrorDomain.REMOTE,
        detail: `transport in URL not recognised (should be ${known}): ${transport}`,
      });
    }
  }
}

/** libvirt's PKI locations: `pkipath=`, else ~/.pki/libvirt for non-root, else /etc/pki. */
async function loadClientPki(uri: ConnectUri): Promise<{ ca: Buffer; cert: Buffer; key: Buffer }> {
  const pkipath = uriParam(uri, 'pkipath');
  const candidates: { ca: string; cert: string; key: string }[] = [];
  if (pkipath) {
    candidates.push({ ca: join(pkipath, 'cacert.pem'), cert: join(pkipath, 'clientcert.pem'), key: join(pkipath, 'clientkey.pem') });
  } else {
    if (process.getuid?.() !== 0) {
      const dir = join(homedir(), '.pki', 'libvirt');
      candidates.push({ ca: join(dir, 'cacert.pem'), cert: join(dir, 'clientcert.pem'), key: join(dir, 'clientkey.pem') });
    }
    candidates.push({
      ca: '/etc/pki/CA/cacert.pem',
      cert: '/etc/pki/libvirt/clientcert.pem',
      key: '/etc/pki/libvirt/private/clientkey.pem',
    });
  }
  let lastError: unknown;
  for (const c of candidates) {
    try {
      const [ca, cert, key] = await Promise.all([readFile(c.ca), readFile(c.cert), readFile(c.key)]);
      return { ca, cert, key };
    } catch (e) {
      lastError = e;
    }
  }
  throw new VirError({
    code: ErrorCode.SYSTEM_ERROR,
    domain: ErrorDomain.RPC,
    detail: `Cannot read the client certificate, key and CA certificate (looked in ${candidates.map((c) => c.ca.replace(/\/[^/]*$/, '')).join(', ')}): ${(lastError as Error)?.message ?? 'not found'}`,
  });
}

/**
 * Client TLS contexts by the contents of the CA, certificate and key: parsing them costs more CPU
 * than the rest of a handshake's client side, and a client that reconnects uses the same files.
 */
const clientContexts = new Map<string, tls.SecureContext>();
const MAX_CLIENT_CONTEXTS = 16;

function clientSecureContext(pki: { ca: Buffer; cert: Buffer; key: Buffer }): { id: string; context: tls.SecureContext } {
  const digest = createHash('sha256');
  for (const part of [pki.ca, pki.cert, pki.key]) digest.update(`${part.length}:`).update(part);
  const id = digest.digest('base64');
  let context = clientContexts.get(id);
  if (!context) {
    context = tls.createSecureContext({ ca: pki.ca, cert: pki.cert, key: pki.key, minVersion: 'TLSv1.2' });
    clientContexts.set(id, context);
    if (clientContexts.size > MAX_CLIENT_CONTEXTS) clientContexts.delete(clientContexts.keys().next().value!);
  }
  return { id, context };
}

/**
 * The last TLS session each server gave us, per server and client identity: reconnecting resumes
 * it, which spares both ends the certificate signatures and checks of a full handshake. Servers
 * that issue no tickets (libvirtd) simply get full handshakes.
 */
const resumableSessions = new Map<string, Buffer>();
const MAX_RESUMABLE_SESSIONS = 64;

function rememberSession(key: string, session: Buffer): void {
  resumableSessions.delete(key);
  resumableSessions.set(key, session);
  if (resumableSessions.size > MAX_RESUMABLE_SESSIONS) resumableSessions.delete(resumableSessions.keys().next().value!);
}

/** `CN=hostA,O=Example`: the subject fields a person recognises, in a stable order. */
function certificateSubject(cert: tls.PeerCertificate): string {
  return Object.entries(cert.subject ?? {})
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join('+') : v}`)
    .join(',');
}

async function openTls(uri: ConnectUri, opts: TransportOptions): Promise<OpenedTransport> {
  const host = uri.host || 'localhost';
  const port = uri.port ?? DEFAULT_TLS_PORT;
  const noVerify = uriParam(uri, 'no_verify') === '1';
  const pki = await loadClientPki(uri);
  const { id, context } = clientSecureContext(pki);
  // A session from an unverified server is never reused.
  const sessionKey = noVerify ? null : `${id}|${host}|${port}`;
  const session = sessionKey === null ? undefined : resumableSessions.get(sessionKey);
  const socket = tls.connect({
    host,
    port,
    secureContext: context,
    servername: net.isIP(host) ? undefined : host,
    rejectUnauthorized: !noVerify,
    ...(session ? { session } : {}),
  });
  if (sessionKey !== null) socket.on('session', (next: Buffer) => rememberSession(sessionKey, next));
  await connectWith(socket, 'secureConnect', `${host}:${port}`, opts);
  // libvirt's server sends one byte (1) once it has checked our certificate; anything else, or
  // a close, means it refused us.
  const verdict = await new Promise<number>((resolve, reject) => {
    const onData = (b: Buffer) => {
      cleanup();
      if (b.length > 1) socket.unshift(b.subarray(1));
      resolve(b[0]!);
    };
    const onEnd = () => {
      cleanup();
      reject(systemError(`server ${host}:${port} closed the TLS connection: it did not accept our client certificate`));
    };
    const onErr = (e: Error) => {
      cleanup();
      reject(systemError(`TLS connection to ${host}:${port} failed: ${e.message}`, e));
    };
    const cleanup = () => {
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      socket.off('error', onErr);
      socket.pause();
    };
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('close', onEnd);
    socket.once('error', onErr);
  });
  if (verdict !== 1) {
    socket.destroy();
    throw systemError(`server ${host}:${port} refused our client certificate`);
  }
  socket.setNoDelay(true);
  // Only a certificate that verified (CA and host name) identifies the daemon.
  const cert = noVerify ? null : socket.getPeerCertificate();
  const identity = cert?.fingerprint256
    ? { identity: { transport: 'tls' as const, host, port, subject: certificateSubject(cert), fingerprint256: cert.fingerprint256 } }
    : {};
  return {
    socket,
    info: {
      kind: 'tls',
      secure: true,
      ...identity,
      tls: socket,
      localAddress: `${socket.localAddress};${socket.localPort}`,
      remoteAddress: `${socket.remoteAddress};${socket.remotePort}`,
    },
  };
}
