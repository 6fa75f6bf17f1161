// libvirt's auth.conf: a GLib key file mapping (service, host) to a named credential set, read
// before any interactive callback is asked. Values are secrets: they never reach a log or an
// error message (errors name groups, keys, paths and line numbers only).
//
// Parsing follows what libvirt 9 (through GLib) actually does, checked against libvirt itself:
//  - `[group]` headers; `key=value` lines; `#` comments and blank lines. `;` comments are accepted
//    as well (GLib refuses them: we are more lenient there, never stricter).
//  - Whitespace around the key and before the value is dropped; whitespace AFTER the value is
//    kept, as GLib keeps it (libvirt reads `password=pw  ` as "pw  ").
//  - GLib escapes in values: \s \n \t \r \\ ; any other escape is a syntax error.
//  - A key repeated in a group, or a group repeated in the file: the later value wins.
//  - Anything else (a key before the first group, a line without `=`) is a syntax error.
//
// Which file: LIBVIRT_AUTH_FILE, then the URI's authfile=, then $XDG_CONFIG_HOME/libvirt/auth.conf
// (default ~/.config), then /etc/libvirt/auth.conf. Like libvirt, the two explicit choices are
// taken as given (an unreadable one is an error, not a reason to fall through to another file
// that may hold other credentials); the two default locations are used only when readable.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  AUTH_CONF_KEYS,
  CredentialType,
  ErrorCode,
  ErrorDomain,
  VirError,
  uriParam,
  type ConnectUri,
  type Credential,
  type CredentialSource,
} from '@virtauth/core';

export const SYSTEM_AUTH_CONF_PATH = '/etc/libvirt/auth.conf';

/** The host auth.conf uses when a connection names none (unix sockets, local drivers). */
export const DEFAULT_AUTH_HOST = 'localhost';

const confError = (detail: string): VirError => new VirError({ code: ErrorCode.CONF_SYNTAX, domain: ErrorDomain.NONE, detail });

const ESCAPES: Record<string, string> = { s: ' ', n: '\n', t: '\t', r: '\r', '\\': '\\' };

function unescapeValue(raw: string, where: string): string {
  if (!raw.includes('\\')) return raw;
  let out = '';
  for (let i = 0; i < raw.length; i++) {
    const ch = raw[i]!;
    if (ch !== '\\') {
      out += ch;
      continue;
    }
    const next = raw[++i];
    if (next === undefined) throw confError(`${where}: the value ends with an escape character`);
    const replacement = ESCAPES[next];
    if (replacement === undefined) throw confError(`${where}: the value contains an invalid escape sequence`);
    out += replacement;
  }
  return out;
}

/** A parsed auth.conf. */
export class AuthConfig {
  private constructor(
    /** Where the text came from, for error messages. */
    readonly path: string,
    private readonly groups: ReadonlyMap<string, ReadonlyMap<string, string>>,
  ) {}

  /** Parses key-file text; throws VirError CONF_SYNTAX (domain NONE) on malformed lines. */
  static parse(text: string, source = '<auth.conf>'): AuthConfig {
    const groups = new Map<string, Map<string, string>>();
    let current: Map<string, string> | null = null;
    const lines = text.split('\n');
    for (let i = 0; i < lines.length; i++) {
      const where = `auth file '${source}' line ${i + 1}`;
      const line = lines[i]!.replace(/\r$/, '').replace(/^\s+/, '');
      if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
      if (line.startsWith('[')) {
        const header = line.trimEnd();
        if (!header.endsWith(']') || header.length < 3 || /[[\]]/.test(header.slice(1, -1))) {
          throw confError(`${where}: malformed group header`);
        }
        const name = header.slice(1, -1);
        current = groups.get(name) ?? new Map<string, string>();
        groups.set(name, current);
        continue;
      }
      const eq = line.indexOf('=');
      // The line is not echoed: a misplaced password would otherwise end up in the message.
      if (eq < 0) throw confError(`${where}: not a group header, key=value pair or comment`);
      const key = line.slice(0, eq).trimEnd();
      if (key === '') throw confError(`${where}: key=value pair without a key`);
      if (current === null) throw confError(`${where}: key '${key}' appears before the first group`);
      current.set(key, unescapeValue(line.slice(eq + 1).replace(/^\s+/, ''), where));
    }
    return new AuthConfig(source, groups);
  }

  /** Reads and parses a file; an unreadable file is VirError READ_FAILED naming the path. */
  static async load(file: string): Promise<AuthConfig> {
    let text: string;
    try {
      text = await fs.promises.readFile(file, 'utf8');
    } catch (e) {
      const reason = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
      throw new VirError({
        code: ErrorCode.READ_FAILED,
        domain: ErrorDomain.NONE,
        detail: `Unable to read auth file '${file}': ${reason}`,
        cause: e,
      });
    }
    return AuthConfig.parse(text, file);
  }

  hasGroup(name: string): boolean {
    return this.groups.has(name);
  }

  /**
   * The value of `key` in the credential set mapped to (service, host): `[auth-SERVICE-HOST]`,
   * else `[auth-SERVICE-default]`, names the set with `credentials=NAME`, found in
   * `[credentials-NAME]` (with `exactHost`, only `[auth-SERVICE-HOST]`, and never for a host
   * named `default`). No mapping group, or no such key in the set → null. A mapping group
   * without `credentials`, or naming a set that does not exist → CONF_SYNTAX, as in libvirt.
   */
  lookup(service: string, host: string | null, key: string, opts: { exactHost?: boolean } = {}): string | null {
    if (opts.exactHost && (host === null || host === '' || host === 'default')) return null;
    let groupName = `auth-${service}-${host || DEFAULT_AUTH_HOST}`;
    let group = this.groups.get(groupName);
    if (!group && !opts.exactHost) {
      groupName = `auth-${service}-default`;
      group = this.groups.get(groupName);
    }
    if (!group) return null;
    const setName = group.get('credentials');
    if (setName === undefined) throw confError(`Missing item 'credentials' in group '${groupName}' in '${this.path}'`);
    const set = this.groups.get(`credentials-${setName}`);
    if (!set) throw confError(`Missing group 'credentials-${setName}' referenced from group '${groupName}' in '${this.path}'`);
    return set.get(key) ?? null;
  }
}

/**
 * The auth.conf key for a credential. SASL (service `libvirt`) keeps the authentication name in
 * `authname=` and the authorization id in `username=`; hypervisor drivers (esx, xenapi, ...) ask
 * for their login name as AUTHNAME and libvirt reads it from `username=`.
 */
export function authConfKey(type: number, service: string): string | undefined {
  if (type === CredentialType.AUTHNAME && service !== 'libvirt') return 'username';
  return AUTH_CONF_KEYS[type];
}

/** Fills USERNAME, AUTHNAME, PASSPHRASE and REALM credentials from an auth.conf. */
export class AuthConfCredentialSource implements CredentialSource {
  constructor(readonly config: AuthConfig) {}

  fill(creds: Credential[], service: string, host: string): void {
    this.fillFrom(creds, service, host, false);
  }

  /** Only `[auth-SERVICE-HOST]` for exactly this host: never `[auth-SERVICE-default]`. */
  fillExact(creds: Credential[], service: string, host: string): void {
    this.fillFrom(creds, service, host, true);
  }

  private fillFrom(creds: Credential[], service: string, host: string, exactHost: boolean): void {
    for (const c of creds) {
      if (c.result !== null) continue;
      const key = authConfKey(c.type, service);
      if (key === undefined) continue;
      const value = this.config.lookup(service, host, key, { exactHost });
      if (value !== null) c.result = value;
    }
  }
}

export interface AuthConfPathOptions {
  /** The connection URI's `authfile=` parameter, if any. */
  uriAuthFile?: string | null;
  /** Environment to consult (LIBVIRT_AUTH_FILE, XDG_CONFIG_HOME, HOME); default process.env. */
  env?: NodeJS.ProcessEnv;
  /** The system-wide file; default /etc/libvirt/auth.conf. */
  systemPath?: string;
}

function isReadable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.R_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** The auth.conf to use, in libvirt's order (see the top of this file), or null for none. */
export function findAuthConfPath(opts: AuthConfPathOptions = {}): string | null {
  const env = opts.env ?? process.env;
  if (env.LIBVIRT_AUTH_FILE) return env.LIBVIRT_AUTH_FILE;
  if (opts.uriAuthFile) return opts.uriAuthFile;
  const configHome = env.XDG_CONFIG_HOME || path.join(env.HOME || os.homedir(), '.config');
  const userFile = path.join(configHome, 'libvirt', 'auth.conf');
  if (isReadable(userFile)) return userFile;
  const systemFile = opts.systemPath ?? SYSTEM_AUTH_CONF_PATH;
  if (isReadable(systemFile)) return systemFile;
  return null;
}

/** Loads the auth.conf that applies to a connection, or resolves null when there is none. */
export async function loadAuthConfSource(
  uri?: ConnectUri,
  opts: Omit<AuthConfPathOptions, 'uriAuthFile'> = {},
): Promise<AuthConfCredentialSource | null> {
  const file = findAuthConfPath({ ...opts, uriAuthFile: uri ? uriParam(uri, 'authfile') : null });
  if (file === null) return null;
  return new AuthConfCredentialSource(await AuthConfig.load(file));
}
