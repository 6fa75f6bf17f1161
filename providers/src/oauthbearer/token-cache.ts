// A person's tokens kept between processes: one file per issuer and client, readable by its owner
// only (0600 in a 0700 directory), replaced atomically (write-file-atomic), changed under a
// cross-process lock (proper-lockfile) so that two commands never refresh with the same rotating
// refresh token, and sealed with an HMAC whose key lives beside it: a file that was edited,
// truncated, swapped for another slot's, or made readable by others is refused, never used.

import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { link, lstat, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ErrorCode, ErrorDomain, VirError } from '@virtauth/core';

/** One token as the cache keeps it. Times are ms since the epoch. */
export interface StoredToken {
  accessToken: string;
  /** null when the issuer gave no lifetime. */
  expiresAt: number | null;
  refreshToken: string | null;
  /** Scopes the issuer granted (space-separated), when it said. */
  scope: string | null;
  /** Who signed in (preferred_username, else sub), for `auth status`. */
  subject: string | null;
  obtainedAt: number;
}

/** What reading the cache found: its tokens, or why the file was refused. */
export interface TokenCacheContents {
  entries: Map<string, StoredToken>;
  /** Why an existing file was not used (tampered, wrong owner or mode); null when it was fine or absent. */
  refused: string | null;
}

export interface TokenCacheOptions {
  /** Directory of the cache files (created 0700). */
  directory: string;
  issuer: string;
  clientId: string;
  /** How long to wait for another process's lock (default 30 s). */
  lockTimeoutMs?: number;
}

const FORMAT_VERSION = 1;
const KEY_FILE = 'cache.key';

function cacheError(detail: string): VirError {
  return new VirError({ code: ErrorCode.AUTH_UNAVAILABLE, domain: ErrorDomain.AUTH, detail });
}

/** The default cache directory: $XDG_STATE_HOME/virtauth/tokens (~/.local/state when unset). */
export function defaultTokenCacheDirectory(env: NodeJS.ProcessEnv = process.env, home = env.HOME ?? ''): string {
  const state = env.XDG_STATE_HOME && path.isAbsolute(env.XDG_STATE_HOME) ? env.XDG_STATE_HOME : path.join(home, '.local', 'state');
  return path.join(state, 'virtauth', 'tokens');
}

function isStoredToken(v: unknown): v is StoredToken {
  if (typeof v !== 'object' || v === null) return false;
  const t = v as Record<string, unknown>;
  const stringOrNull = (x: unknown) => x === null || typeof x === 'string';
  return (
    typeof t.accessToken === 'string' &&
    t.accessToken !== '' &&
    (t.expiresAt === null || (typeof t.expiresAt === 'number' && Number.isFinite(t.expiresAt))) &&
    stringOrNull(t.refreshToken) &&
    stringOrNull(t.scope) &&
    stringOrNull(t.subject) &&
    typeof t.obtainedAt === 'number'
  );
}

/** Why a cache file or directory must not be trusted: another owner, or access for others. */
function ownershipProblem(info: { uid: number; mode: number }, wanted: number): string | null {
  const uid = process.getuid?.();
  if (uid !== undefined && info.uid !== uid) return `belongs to uid ${info.uid}, not to you (uid ${uid}); remove it and log in again`;
  if ((info.mode & 0o077) !== 0)
    return `is accessible to others (mode 0${(info.mode & 0o777).toString(8)}, must be 0${wanted.toString(8)}); remove it and log in again`;
  return null;
}

export class TokenCacheFile {
  /** The cache file of this issuer and client. */
  readonly path: string;
  private readonly keyPath: string;

  constructor(private readonly options: TokenCacheOptions) {
    // The name hides nothing; it only has to be a safe file name unique per issuer and client.
    const slot = createHash('sha256').update(`${options.issuer}\n${options.clientId}`).digest('hex').slice(0, 32);
    this.path = path.join(options.directory, `${slot}.json`);
    this.keyPath = path.join(options.directory, KEY_FILE);
  }

  get issuer(): string {
    return this.options.issuer;
  }

  get clientId(): string {
    return this.options.clientId;
  }

  /** Reads the tokens without taking the lock (a consistent file is always there: writes are atomic). */
  async read(): Promise<TokenCacheContents> {
    const key = await this.sealKey(false);
    return this.readWith(key);
  }

  /**
   * Runs `change` on the tokens under the cross-process lock, and writes them back when it says
   * so. A refused file counts as empty (and is replaced when `change` writes).
   */
  async update<T>(change: (contents: TokenCacheContents) => Promise<{ value: T; write: boolean }>): Promise<T> {
    await this.ensureDirectory();
    const key = await this.sealKey(true);
    let release: () => Promise<void>;
    try {
      // Loaded on first use: a process that never touches the cache (virtauthd) does not pay for them.
      const { default: lockfile } = await import('proper-lockfile');
      release = await lockfile.lock(this.path, {
        realpath: false,
        stale: 15_000,
        update: 5_000,
        retries: { retries: Math.ceil((this.options.lockTimeoutMs ?? 30_000) / 200), minTimeout: 50, maxTimeout: 200, factor: 1.3 },
      });
    } catch (e) {
      throw cacheError(`the token cache ${this.path} is locked by another virtauth process: ${(e as Error).message}`);
    }
    try {
      const contents = await this.readWith(key!);
      const { value, write } = await change(contents);
      if (write) await this.write(contents.entries, key!);
      return value;
    } finally {
      await release().catch(() => {});
    }
  }

  /** Deletes this issuer and client's file (logout). */
  async remove(): Promise<void> {
    await rm(this.path, { force: true });
  }

  private async ensureDirectory(): Promise<void> {
    await mkdir(this.options.directory, { recursive: true, mode: 0o700 });
    const info = await lstat(this.options.directory);
    if (!info.isDirectory()) throw cacheError(`the token cache directory ${this.options.directory} is not a directory`);
    const problem = ownershipProblem(info, 0o700);
    if (problem) throw cacheError(`the token cache directory ${this.options.directory} ${problem}`);
  }

  /** The HMAC key beside the files; created once (exclusively, so two processes agree on one). */
  private async sealKey(create: boolean): Promise<Buffer | null> {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const info = await lstat(this.keyPath);
        if (!info.isFile()) throw cacheError(`the token cache key ${this.keyPath} is not a regular file; remove it`);
        const problem = ownershipProblem(info, 0o600);
        if (problem) throw cacheError(`the token cache key ${this.keyPath} ${problem}`);
        const key = await readFile(this.keyPath);
        if (key.length !== 32)
          throw cacheError(
            `the token cache key ${this.keyPath} is damaged; remove the directory ${this.options.directory} and log in again`,
          );
        return key;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
        if (!create) return null;
        // Written whole under a private name, then linked into place: link() fails if the key
        // exists, and a process that loses the race never sees a half-written key.
        const draft = `${this.keyPath}.${process.pid}.${randomBytes(6).toString('hex')}`;
        try {
          await writeFile(draft, randomBytes(32), { mode: 0o600, flag: 'wx' });
          await link(draft, this.keyPath);
        } catch (w) {
          // Another process created it first: read theirs.
          if ((w as NodeJS.ErrnoException).code !== 'EEXIST') throw w;
        } finally {
          await rm(draft, { force: true });
        }
      }
    }
    throw cacheError(`the token cache key ${this.keyPath} cannot be created`);
  }

  private seal(body: string, key: Buffer): string {
    return createHmac('sha256', key).update(body).digest('base64url');
  }

  private async readWith(key: Buffer | null): Promise<TokenCacheContents> {
    const entries = new Map<string, StoredToken>();
    const refuse = (why: string): TokenCacheContents => ({ entries: new Map(), refused: `the token cache ${this.path} ${why}` });
    let info;
    try {
      info = await lstat(this.path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { entries, refused: null };
      throw e;
    }
    if (!info.isFile()) return refuse('is not a regular file');
    const problem = ownershipProblem(info, 0o600);
    if (problem) return refuse(problem);
    if (key === null) return refuse('has no key to check it with (was it copied from elsewhere?)');
    let outer: unknown;
    try {
      outer = JSON.parse(await readFile(this.path, 'utf8'));
    } catch {
      return refuse('is not valid JSON (changed outside virtauth)');
    }
    const o = outer as { body?: unknown; seal?: unknown };
    if (typeof o !== 'object' || o === null || typeof o.body !== 'string' || typeof o.seal !== 'string')
      return refuse('has an unknown layout (changed outside virtauth)');
    const expected = Buffer.from(this.seal(o.body, key));
    const given = Buffer.from(o.seal);
    if (expected.length !== given.length || !timingSafeEqual(expected, given))
      return refuse('was changed outside virtauth (its seal does not match)');
    let body: { version?: unknown; issuer?: unknown; clientId?: unknown; tokens?: unknown };
    try {
      body = JSON.parse(o.body) as typeof body;
    } catch {
      return refuse('has a damaged body');
    }
    if (body.version !== FORMAT_VERSION) return refuse(`has format version ${String(body.version)}, not ${FORMAT_VERSION}`);
    if (body.issuer !== this.options.issuer || body.clientId !== this.options.clientId)
      return refuse('belongs to another issuer or client');
    if (typeof body.tokens !== 'object' || body.tokens === null) return refuse('has no tokens object');
    for (const [slot, token] of Object.entries(body.tokens)) {
      if (!isStoredToken(token)) return refuse(`has a malformed token entry`);
      entries.set(slot, token);
    }
    return { entries, refused: null };
  }

  private async write(entries: Map<string, StoredToken>, key: Buffer): Promise<void> {
    const body = JSON.stringify({
      version: FORMAT_VERSION,
      issuer: this.options.issuer,
      clientId: this.options.clientId,
      tokens: Object.fromEntries(entries),
    });
    const { default: writeFileAtomic } = await import('write-file-atomic');
    await writeFileAtomic(this.path, `${JSON.stringify({ body, seal: this.seal(body, key) })}\n`, { mode: 0o600, fsync: true });
  }
}
