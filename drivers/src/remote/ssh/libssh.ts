// `+libssh`: SSH in process (npm ssh2), following libvirt's libssh transport. Every question —
// the host key, the password, each keyboard-interactive prompt, a key's passphrase — goes
// through the credential pipeline (auth.conf, then the callback, or the relay in a daemon).
// Opens made with the same callback share one SSH connection to a host: one login, many channels.

import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import ssh2 from 'ssh2';
import type { AnyAuthMethod, AuthenticationType, Client as SshClient, ClientChannel, ConnectConfig, ParsedKey, Prompt } from 'ssh2';
import {
  CredentialType,
  ErrorCode,
  ErrorDomain,
  VirError,
  credential,
  uriParam,
  type ConnectAuth,
  type ConnectUri,
  type Credential,
  type DaemonIdentity,
} from '@virtauth/core';
import type { OpenedTransport, TransportOptions } from '../transport.js';
import { ExitAwareStream, StderrTail } from './exit-aware-stream.js';
import {
  addKnownHost,
  checkHostKey,
  hostKeyFingerprint,
  hostKeyHash,
  knownHostName,
  knownKeyTypes,
  loadKnownHosts,
} from './known-hosts.js';
import { remoteProxyCommand, sshParamError } from './remote-command.js';

const { Client, utils } = ssh2;

export type SshAuthMethod = 'agent' | 'privkey' | 'password' | 'keyboard-interactive';
export type HostKeyVerify = 'normal' | 'auto' | 'ignore';

const AUTH_METHODS: readonly SshAuthMethod[] = ['agent', 'privkey', 'password', 'keyboard-interactive'];
/** Keys libvirt looks for when `privkey` is in the default list and no `keyfile=` is given. */
const DEFAULT_KEY_FILES = ['id_ed25519', 'id_ecdsa', 'id_rsa'];
/** Password prompts per login (OpenSSH's NumberOfPasswordPrompts), and keyboard-interactive rounds. */
const MAX_PASSWORD_TRIES = 3;
const MAX_KEYBOARD_ROUNDS = 3;
/** A server that asks more than this in one login is refused: against prompt floods. */
const MAX_PROMPTS_PER_LOGIN = 16;
const MAX_PROMPT_TEXT = 1024;
/** The host-key algorithms ssh2 speaks, for each key type a known_hosts line can hold. */
const ALGORITHMS_FOR_KEY_TYPE: Record<string, string[]> = {
  'ssh-ed25519': ['ssh-ed25519'],
  'ecdsa-sha2-nistp256': ['ecdsa-sha2-nistp256'],
  'ecdsa-sha2-nistp384': ['ecdsa-sha2-nistp384'],
  'ecdsa-sha2-nistp521': ['ecdsa-sha2-nistp521'],
  'ssh-rsa': ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'],
};

export interface LibsshSettings {
  host: string;
  port: number;
  user: string;
  auth: SshAuthMethod[];
  keyfile: string | null;
  knownHosts: string;
  verify: HostKeyVerify;
}

function libsshError(detail: string, code: number = ErrorCode.LIBSSH, cause?: unknown): VirError {
  return new VirError({ code, domain: ErrorDomain.LIBSSH, detail, ...(cause !== undefined ? { cause } : {}) });
}

function defaultKnownHosts(): string {
  return join(process.env.XDG_CONFIG_HOME || join(homedir(), '.config'), 'libvirt', 'known_hosts');
}

async function defaultKeyFile(): Promise<string | null> {
  for (const name of DEFAULT_KEY_FILES) {
    const path = join(homedir(), '.ssh', name);
    try {
      await readFile(path);
      return path;
    } catch {
      // Not there or not readable: try the next.
    }
  }
  return null;
}

/** The URI's libssh parameters, checked; defaults as libvirt's client sets them. */
export async function libsshSettings(uri: ConnectUri): Promise<LibsshSettings> {
  const host = uri.host || 'localhost';
  // eslint-disable-next-line no-control-regex
  if (/[\s\x00-\x1f\x7f,]/.test(host))
    throw sshParamError(ErrorDomain.LIBSSH, `host name '${host.replace(/[^\x20-\x7e]/g, '?')}' is not valid`);
  const knownHostsParam = uriParam(uri, 'known_hosts');
  if (knownHostsParam !== null && !isAbsolute(knownHostsParam))
    throw sshParamError(ErrorDomain.LIBSSH, `known_hosts must be an absolute path: '${knownHostsParam}'`);
  // no_verify is the TLS and +ssh switch; here only known_hosts_verify=ignore turns checking off.
  const verifyParam = uriParam(uri, 'known_hosts_verify') ?? 'normal';
  if (verifyParam !== 'normal' && verifyParam !== 'auto' && verifyParam !== 'ignore') {
    throw sshParamError(ErrorDomain.LIBSSH, `Invalid host key verification method '${verifyParam}' (should be normal|auto|ignore)`);
  }
  const keyfile = uriParam(uri, 'keyfile');
  const sshauth = uriParam(uri, 'sshauth');
  let auth: SshAuthMethod[];
  let resolvedKey = keyfile;
  if (sshauth !== null) {
    auth = [];
    for (const name of sshauth.split(',')) {
      if (!AUTH_METHODS.includes(name as SshAuthMethod))
        throw sshParamError(ErrorDomain.LIBSSH, `Unknown authentication method '${name}' (should be ${AUTH_METHODS.join(', ')})`);
      auth.push(name as SshAuthMethod);
    }
    if (auth.length === 0) throw sshParamError(ErrorDomain.LIBSSH, 'No authentication methods and credentials provided');
    if (auth.includes('privkey') && !resolvedKey) resolvedKey = await defaultKeyFile();
    if (auth.includes('privkey') && !resolvedKey)
      throw sshParamError(ErrorDomain.LIBSSH, 'Key file path must be provided for private key authentication (keyfile=)');
  } else {
    // libvirt's default order; privkey only when there is a key to use.
    resolvedKey ??= await defaultKeyFile();
    auth = AUTH_METHODS.filter((m) => m !== 'privkey' || resolvedKey !== null);
  }
  return {
    host,
    port: uri.port ?? 22,
    // libvirt's default login for this transport (the system ssh uses the local user instead).
    user: uri.user || 'root',
    auth,
    keyfile: resolvedKey,
    knownHosts: knownHostsParam ?? defaultKnownHosts(),
    verify: verifyParam,
  };
}

/** One question to whoever answers for this open; returns the answer (never logged). */
type Ask = (type: CredentialType, prompt: string) => Promise<string>;

function makeAsk(settings: LibsshSettings, opts: TransportOptions): { ask: Ask; canAsk: boolean; secretType: CredentialType } {
  const types = opts.auth?.credTypes ?? opts.relayCredTypes ?? [];
  // libvirt: a question without echo goes to the first of PASSPHRASE and NOECHOPROMPT the caller takes.
  const secretType =
    types.includes(CredentialType.PASSPHRASE) || !types.includes(CredentialType.NOECHOPROMPT)
      ? CredentialType.PASSPHRASE
      : CredentialType.NOECHOPROMPT;
  const requester = opts.requestCredentials;
  const ask: Ask = async (type, prompt) => {
    if (!requester) throw libsshError('No user interaction callback provided: cannot answer the SSH server', ErrorCode.AUTH_UNAVAILABLE);
    const cred: Credential = credential(type, prompt);
    await requester([cred], { service: 'ssh', host: settings.host, ...(opts.signal ? { signal: opts.signal } : {}) });
    return cred.result ?? '';
  };
  return { ask, canAsk: requester !== undefined, secretType };
}

/** Text from the server, made safe to show: no control characters, bounded length. */
function serverText(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\x00-\x08\x0b-\x1f\x7f]/g, '?').slice(0, MAX_PROMPT_TEXT);
}

/** libvirt's keyboard-interactive prompt: name and instruction lines, then the prompt without its trailing ': '. */
export function keyboardPromptText(name: string, instructions: string, prompt: string): string {
  const head = [name, instructions].filter((s) => s !== '').map(serverText);
  const body = serverText(prompt).replace(/[ :]+$/, '');
  return head.length > 0 ? `${head.join('\n')}\n${body}` : body;
}

function preferredHostKeyAlgorithms(types: readonly string[]): string[] {
  return [...new Set(types.flatMap((t) => ALGORITHMS_FOR_KEY_TYPE[t] ?? []))];
}

/** An authenticated SSH connection, and the channels that use it. */
class SshSession {
  channels = 0;
  closed = false;
  constructor(
    readonly client: SshClient,
    /** The server's key, when known_hosts or the person vouched for it (not under auto or ignore). */
    readonly identity: DaemonIdentity | null,
    private readonly onIdle: (s: SshSession) => void,
  ) {
    client.once('close', () => {
      this.closed = true;
      this.onIdle(this);
    });
  }

  release(): void {
    this.channels -= 1;
    if (this.channels === 0) {
      this.closed = true;
      this.onIdle(this);
      this.client.end();
    }
  }
}

/**
 * Connects and logs in. Resolves once the server accepted us; rejects with a VirError saying
 * what failed (the host key, each method, the server going away).
 */
interface LoggedIn {
  client: SshClient;
  identity: DaemonIdentity | null;
}

async function connectSession(settings: LibsshSettings, opts: TransportOptions): Promise<LoggedIn> {
  const { ask, canAsk, secretType } = makeAsk(settings, opts);
  const knownName = knownHostName(settings.host, settings.port);
  let lines: Awaited<ReturnType<typeof loadKnownHosts>> = [];
  if (settings.verify !== 'ignore') {
    try {
      lines = await loadKnownHosts(settings.knownHosts);
    } catch (e) {
      throw libsshError(`failed to read known_hosts file '${settings.knownHosts}': ${(e as Error).message}`, ErrorCode.LIBSSH, e);
    }
  }
  const client = new Client();
  let identity: DaemonIdentity | null = null;
  // The error this transport decided on; ssh2's own error is only the fallback.
  let failure: VirError | null = null;
  let connectTimer: NodeJS.Timeout | null = null;
  const stopTimer = () => {
    if (connectTimer) clearTimeout(connectTimer);
    connectTimer = null;
  };

  const hostVerifier = (key: Buffer, verify: (ok: boolean) => void): void => {
    // The server answered: from here a person may be answering, which takes as long as it takes.
    stopTimer();
    if (settings.verify === 'ignore') return verify(true);
    const hash = hostKeyHash(key);
    const vouched = (): void => {
      identity = { transport: 'ssh', host: settings.host, port: settings.port, hostKey: hostKeyFingerprint(key) };
      verify(true);
    };
    const state = checkHostKey(lines, knownName, key);
    if (state.state === 'known') return vouched();
    if (state.state === 'changed') {
      failure = libsshError(
        `!!! SSH HOST KEY VERIFICATION FAILED !!!: Identity of host '${settings.host}:${settings.port}' differs from stored identity. ` +
          `Please verify the new host key '${hash}' to avoid possible man in the middle attack. The key is stored in '${settings.knownHosts}'.` +
          (state.revoked ? ' The key the server offered is marked @revoked.' : ''),
        ErrorCode.AUTH_FAILED,
      );
      return verify(false);
    }
    const accept = async (): Promise<void> => {
      if (settings.verify === 'normal') {
        const noCallback = libsshError("No user interaction callback provided: Can't verify the session host key");
        if (!canAsk) throw noCallback;
        const answer = await ask(
          CredentialType.ECHOPROMPT,
          `Accept SSH host key with hash '${hash}' for host '${settings.host}:${settings.port}' (y/n)?`,
        ).catch((e: unknown) => {
          // Nobody to ask: libvirt's own words, never a silent accept.
          if (e instanceof VirError && e.message === 'authentication failed: No authentication callback available') throw noCallback;
          throw e;
        });
        if (answer.toLowerCase() !== 'y') throw libsshError(`SSH host key for '${settings.host}' (${hash}) was not accepted`);
      }
      try {
        await addKnownHost(settings.knownHosts, knownName, key);
      } catch (e) {
        throw libsshError(`failed to write known_host file '${settings.knownHosts}': ${(e as Error).message}`, ErrorCode.LIBSSH, e);
      }
    };
    accept().then(
      // A key stored under auto was accepted by nobody: it identifies no one yet.
      () => (settings.verify === 'normal' ? vouched() : verify(true)),
      (e: unknown) => {
        failure = e instanceof VirError ? e : libsshError(`failed to validate SSH host key: ${(e as Error).message}`);
        verify(false);
      },
    );
  };

  // libvirt's order of methods, each tried only when the server offers its kind.
  const queue = [...settings.auth];
  let current: SshAuthMethod | 'none' | null = null;
  let tries = 0;
  let lastAnswer: string | null = null;
  let promptsAsked = 0;
  let denied = false;
  let offeredAny = false;
  const methodKind: Record<SshAuthMethod, AuthenticationType> = {
    agent: 'publickey',
    privkey: 'publickey',
    password: 'password',
    'keyboard-interactive': 'keyboard-interactive',
  };

  const countPrompt = () => {
    promptsAsked += 1;
    if (promptsAsked > MAX_PROMPTS_PER_LOGIN)
      throw libsshError(`the SSH server asked more than ${MAX_PROMPTS_PER_LOGIN} questions in one login`, ErrorCode.AUTH_FAILED);
  };

  /** The same answer given twice came from a store, not a person: asking again would loop. */
  const freshAnswer = (answer: string, what: string): string => {
    if (lastAnswer !== null && answer === lastAnswer)
      throw libsshError(
        `the server rejected the ${what} for ${settings.user}@${settings.host}, and the same one was given again`,
        ErrorCode.AUTH_FAILED,
      );
    lastAnswer = answer;
    return answer;
  };

  const passwordMethod = async (): Promise<AnyAuthMethod> => {
    countPrompt();
    const answer = await ask(secretType, `Enter ${settings.user}'s password for ${settings.host}`);
    return { type: 'password', username: settings.user, password: freshAnswer(answer, 'password') };
  };

  const keyboardMethod = (): AnyAuthMethod => ({
    type: 'keyboard-interactive',
    username: settings.user,
    prompt: (name: string, instructions: string, _lang: string, prompts: Prompt[], finish: (answers: string[]) => void) => {
      (async () => {
        const answers: string[] = [];
        for (const p of prompts) {
          countPrompt();
          answers.push(await ask(p.echo ? CredentialType.ECHOPROMPT : secretType, keyboardPromptText(name, instructions, p.prompt)));
        }
        if (answers.length === 1 && !prompts[0]!.echo) freshAnswer(answers[0]!, 'answer');
        return answers;
      })().then(finish, (e: unknown) => {
        failure = e instanceof VirError ? e : libsshError((e as Error).message, ErrorCode.AUTH_FAILED);
        client.end();
      });
    },
  });

  const privateKeyMethod = async (): Promise<AnyAuthMethod> => {
    const path = settings.keyfile!;
    let data: Buffer;
    try {
      data = await readFile(path);
    } catch (e) {
      throw libsshError(`error while reading private key '${path}': ${(e as Error).message}`, ErrorCode.AUTH_FAILED);
    }
    let parsed = utils.parseKey(data);
    if (parsed instanceof Error && /passphrase/i.test(parsed.message)) {
      countPrompt();
      const passphrase = await ask(secretType, `Enter passphrase for key '${path}'`);
      parsed = utils.parseKey(data, passphrase);
      if (parsed instanceof Error) throw libsshError(`error while opening private key '${path}', wrong passphrase?`, ErrorCode.AUTH_FAILED);
    }
    if (parsed instanceof Error) throw libsshError(`error while reading private key '${path}': ${parsed.message}`, ErrorCode.AUTH_FAILED);
    const key = (Array.isArray(parsed) ? parsed[0] : parsed) as ParsedKey;
    return { type: 'publickey', username: settings.user, key };
  };

  const nextMethod = async (methodsLeft: AuthenticationType[] | null): Promise<AnyAuthMethod | false> => {
    if (current === null) {
      current = 'none';
      return { type: 'none', username: settings.user };
    }
    const offered = methodsLeft ?? [];
    if (current !== 'none') denied = true;
    // A password or keyboard-interactive login the server rejected is asked again, a few times.
    if (current === 'password' && offered.includes('password') && tries < MAX_PASSWORD_TRIES) {
      tries += 1;
      return passwordMethod();
    }
    if (current === 'keyboard-interactive' && offered.includes('keyboard-interactive') && tries < MAX_KEYBOARD_ROUNDS) {
      tries += 1;
      return keyboardMethod();
    }
    while (queue.length > 0) {
      const method = queue.shift()!;
      if (!offered.includes(methodKind[method])) continue;
      if (method === 'agent' && !process.env.SSH_AUTH_SOCK) continue;
      offeredAny = true;
      current = method;
      tries = 1;
      lastAnswer = null;
      switch (method) {
        case 'agent':
          return { type: 'agent', username: settings.user, agent: process.env.SSH_AUTH_SOCK! };
        case 'privkey':
          return privateKeyMethod();
        case 'password':
          return passwordMethod();
        case 'keyboard-interactive':
          return keyboardMethod();
      }
    }
    failure ??=
      offeredAny || denied
        ? libsshError('All provided authentication methods with credentials were rejected by the server', ErrorCode.AUTH_FAILED)
        : libsshError('None of the requested authentication methods are supported by the server', ErrorCode.AUTH_FAILED);
    return false;
  };

  const config: ConnectConfig = {
    host: settings.host,
    port: settings.port,
    username: settings.user,
    hostVerifier,
    authHandler: (methodsLeft, _partial, next) => {
      // ssh2 takes `false` for "no more methods"; its typings omit it.
      const proceed = next as (method: AnyAuthMethod | false) => void;
      nextMethod(methodsLeft).then(proceed, (e: unknown) => {
        failure = e instanceof VirError ? e : libsshError((e as Error).message, ErrorCode.AUTH_FAILED);
        proceed(false);
      });
    },
    // Our own timer covers the connection up to the host key; prompts are not timed here.
    readyTimeout: 0,
    agentForward: false,
    keepaliveInterval: 0,
  };
  const preferred = preferredHostKeyAlgorithms(knownKeyTypes(lines, knownName));
  if (preferred.length > 0) config.algorithms = { serverHostKey: { prepend: preferred } as never };

  return new Promise<LoggedIn>((resolve, reject) => {
    let settled = false;
    const settle = (error: VirError | null) => {
      if (settled) return;
      settled = true;
      stopTimer();
      opts.signal?.removeEventListener('abort', onAbort);
      if (error) {
        // Not end(): a connection that failed before the handshake finished may never close by itself.
        client.destroy();
        reject(error);
      } else {
        resolve({ client, identity });
      }
    };
    const onAbort = () => {
      failure ??=
        opts.signal!.reason instanceof VirError
          ? opts.signal!.reason
          : libsshError('the SSH connection was cancelled', ErrorCode.AUTH_CANCELLED);
      settle(failure);
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    connectTimer = setTimeout(
      () =>
        settle(
          libsshError(
            `SSH session handshake failed: no answer from ${settings.host}:${settings.port} within ${opts.timeoutMs ?? 30000} ms`,
          ),
        ),
      opts.timeoutMs ?? 30000,
    );
    client.once('ready', () => settle(null));
    client.on('error', (e: Error & { level?: string }) => {
      // An agent that fails is one method failing: ssh2 goes on with the next.
      if (e.level === 'agent') return;
      if (failure) return settle(failure);
      if (e.level === 'client-authentication' || denied)
        return settle(libsshError(`authentication failed: ${e.message}`, ErrorCode.AUTH_FAILED, e));
      settle(libsshError(`SSH session handshake failed: ${e.message}`, ErrorCode.LIBSSH, e));
    });
    client.once('close', () =>
      settle(failure ?? libsshError(`SSH session handshake failed: ${settings.host}:${settings.port} closed the connection`)),
    );
    client.connect(config);
  });
}

/** Shared sessions, per callback (the same person answers) and per login they were made with. */
const sharedSessions = new WeakMap<ConnectAuth, Map<string, Promise<SshSession>>>();

function sessionKey(settings: LibsshSettings, uri: ConnectUri): string {
  return JSON.stringify([
    settings.user,
    settings.host,
    settings.port,
    settings.auth,
    settings.keyfile,
    settings.knownHosts,
    settings.verify,
    uriParam(uri, 'authfile'),
  ]);
}

async function acquireSession(settings: LibsshSettings, uri: ConnectUri, opts: TransportOptions): Promise<SshSession> {
  // Without a callback of the caller's own (a daemon opening for a client) nothing is shared: a
  // session logged in with one client's answers must never carry another client's connection.
  const scope = opts.auth ?? null;
  if (scope === null) {
    const { client, identity } = await connectSession(settings, opts);
    return new SshSession(client, identity, () => {});
  }
  let sessions = sharedSessions.get(scope);
  if (!sessions) sharedSessions.set(scope, (sessions = new Map()));
  const key = sessionKey(settings, uri);
  const existing = sessions.get(key);
  if (existing) {
    const session = await existing;
    if (!session.closed) return session;
  }
  const map = sessions;
  const forget = () => {
    if (map.get(key) === created) map.delete(key);
  };
  const created: Promise<SshSession> = connectSession(settings, opts).then(
    ({ client, identity }) => new SshSession(client, identity, forget),
  );
  map.set(key, created);
  created.catch(forget);
  return created;
}

interface OpenedChannel {
  channel: ClientChannel;
  /** Resolves when the channel closes: null after a clean exit, else the error explaining it. */
  exited: Promise<Error | null>;
}

function openChannel(session: SshSession, command: string): Promise<OpenedChannel> {
  return new Promise((resolve, reject) => {
    try {
      session.client.exec(command, (err, channel) => {
        if (err) return reject(err);
        // Listened to here, in the callback: a command that fails at once has its exit and
        // close in the same packet batch as the exec reply, before any later turn could look.
        const stderr = new StderrTail();
        channel.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
        let status: number | null = null;
        let signal: string | null = null;
        channel.on('exit', (code: number | null, signalName?: string) => {
          status = code;
          signal = signalName ?? null;
        });
        const exited = new Promise<Error | null>((settle) => {
          channel.once('close', () => {
            if (status === 0 || (status === null && signal === null)) return settle(null);
            const said = stderr.text();
            const what = signal
              ? `Remote command was killed by signal ${signal}`
              : `Remote command terminated with non-zero code: ${status}`;
            settle(libsshError(`${what}${said ? `: ${said}` : ''}`));
          });
        });
        resolve({ channel, exited });
      });
    } catch (e) {
      reject(e);
    }
  });
}

export async function openLibssh(uri: ConnectUri, opts: TransportOptions): Promise<OpenedTransport> {
  const settings = await libsshSettings(uri);
  const command = remoteProxyCommand(uri, opts.readOnly, ErrorDomain.LIBSSH);
  let session = await acquireSession(settings, uri, opts);
  session.channels += 1;
  let opened: OpenedChannel;
  try {
    opened = await openChannel(session, command);
  } catch (first) {
    const dropped = session.closed;
    session.release();
    // A shared connection the server dropped meanwhile: log in once more.
    if (!dropped) throw libsshError(`failed to execute command '${command}': ${(first as Error).message}`);
    session = await acquireSession(settings, uri, opts);
    session.channels += 1;
    try {
      opened = await openChannel(session, command);
    } catch (e) {
      session.release();
      throw libsshError(`failed to open ssh channel: ${(e as Error).message}`);
    }
  }
  const { channel, exited } = opened;
  const finished = session;
  let released = false;
  const stream = new ExitAwareStream(channel, channel, exited, () => {
    if (released) return;
    released = true;
    channel.close();
    finished.release();
  });
  exited.then(() => {
    if (!released) {
      released = true;
      finished.release();
    }
  });
  return { socket: stream, info: { kind: 'ssh', secure: true, ...(finished.identity ? { identity: finished.identity } : {}) } };
}
