// The daemon's password file: SCRAM verifiers in JSON, replaced atomically on every change and
// re-read whenever it changes on disk, so `virtauth passwd add` takes effect in a running daemon.
//
// Format: {"version":1,"users":{"alice":{"verifiers":[{"hash":"SHA-256","salt":"<b64>",
// "iterations":4096,"storedKey":"<b64>","serverKey":"<b64>"}]}}}

import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, stat, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ErrorCode, ErrorDomain, VirError, type ScramVerifier, type UserDatabase } from '@virtauth/core';
import { decodeBase64Strict, MAX_SCRAM_ITERATIONS, SCRAM_SHA_256 } from '../sasl/scram.js';
import { checkIterations, copyVerifier, DEFAULT_SCRAM_ITERATIONS, lookupName, prepareUserName, verifiersForPassword } from './common.js';

export const USER_DATABASE_VERSION = 1;

export interface FileUserDatabaseOptions {
  /** Path of the JSON file; created (with its directory) on the first change. */
  path: string;
  /** PBKDF2 iterations for new verifiers (default 4096). */
  iterations?: number;
  /** How long a change waits for another process's lock on the file, in ms (default 10 s). */
  lockWaitMs?: number;
}

type UserTable = Map<string, ScramVerifier[]>;

interface Snapshot {
  /** Identifies the file version that was read: inode, size, mtime and ctime. */
  stamp: string;
  users: UserTable;
}

const ABSENT = 'absent';

/** A lock older than this is left over from a crash: a change holds it for milliseconds. */
const LOCK_STALE_MS = 30_000;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class FileUserDatabase implements UserDatabase {
  readonly path: string;
  readonly iterations: number;
  private readonly lockWaitMs: number;
  private snapshot: Snapshot | null = null;
  /** Serializes this process's read-modify-write cycles. */
  private writes: Promise<unknown> = Promise.resolve();

  constructor(options: FileUserDatabaseOptions) {
    if (!options.path)
      throw new VirError({ code: ErrorCode.INVALID_ARG, domain: ErrorDomain.AUTH, detail: 'the user database needs a file path' });
    this.path = options.path;
    this.iterations = checkIterations(options.iterations ?? DEFAULT_SCRAM_ITERATIONS);
    this.lockWaitMs = options.lockWaitMs ?? 10_000;
  }

  async getVerifier(username: string, hash: string): Promise<ScramVerifier | null> {
    const name = lookupName(username);
    if (name === null) return null;
    const found = (await this.load()).get(name)?.find((v) => v.hash === hash);
    return found ? copyVerifier(found) : null;
  }

  async list(): Promise<string[]> {
    return [...(await this.load()).keys()].sort();
  }

  async setPassword(username: string, password: string): Promise<void> {
    const name = prepareUserName(username, 'stored');
    const verifiers = await verifiersForPassword(password, this.iterations);
    await this.modify((users) => {
      users.set(name, verifiers);
      return true;
    });
  }

  async remove(username: string): Promise<boolean> {
    const name = lookupName(username);
    if (name === null) return false;
    return this.modify((users) => users.delete(name));
  }

  /**
   * Applies `change` to the current file contents; writes only when it returns true. Changes
   * are queued within this process and hold `FILE.lock` across processes, so two `virtauth
   * passwd` runs at once both keep their change.
   */
  private modify(change: (users: UserTable) => boolean): Promise<boolean> {
    const run = this.writes.then(() =>
      this.withFileLock(async () => {
        const users = new Map(await this.load());
        if (!change(users)) return false;
        await this.write(users);
        return true;
      }),
    );
    this.writes = run.catch(() => undefined);
    return run;
  }

  /** Runs `work` holding the lock file, created exclusively beside the database. */
  private async withFileLock<T>(work: () => Promise<T>): Promise<T> {
    const lockPath = `${this.path}.lock`;
    try {
      await mkdir(dirname(this.path), { recursive: true, mode: 0o700 });
    } catch (e) {
      throw this.fileError('cannot be locked', e);
    }
    const giveUpAt = Date.now() + this.lockWaitMs;
    for (let delay = 5; ; delay = Math.min(delay * 2, 100)) {
      try {
        const handle = await open(lockPath, 'wx', 0o600);
        try {
          await handle.writeFile(`${process.pid}\n`, 'utf8');
        } finally {
          await handle.close();
        }
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw this.fileError('cannot be locked', e);
        if (await removeStaleLock(lockPath)) continue;
        if (Date.now() >= giveUpAt) {
          throw new VirError({
            code: ErrorCode.OPERATION_TIMEOUT,
            domain: ErrorDomain.AUTH,
            detail: `user database ${this.path} is locked by another writer (${lockPath}) for more than ${this.lockWaitMs} ms; remove the lock file if no 'virtauth passwd' is running`,
          });
        }
        await sleep(delay);
      }
    }
    try {
      return await work();
    } finally {
      await unlink(lockPath).catch(() => undefined);
    }
  }

  private async load(): Promise<UserTable> {
    let handle: FileHandle;
    try {
      handle = await open(this.path, 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        if (this.snapshot?.stamp !== ABSENT) this.snapshot = { stamp: ABSENT, users: new Map() };
        return this.snapshot.users;
      }
      throw this.fileError('cannot be read', e);
    }
    try {
      // Stat and read through one handle: a concurrent rename cannot mix two versions.
      const stats = await handle.stat();
      const stamp = `${stats.ino}:${stats.size}:${stats.mtimeMs}:${stats.ctimeMs}`;
      if (this.snapshot?.stamp === stamp) return this.snapshot.users;
      const users = this.parse(await handle.readFile('utf8'));
      this.snapshot = { stamp, users };
      return users;
    } catch (e) {
      if (e instanceof VirError) throw e;
      throw this.fileError('cannot be read', e);
    } finally {
      await handle.close();
    }
  }

  private async write(users: UserTable): Promise<void> {
    const dir = dirname(this.path);
    const temp = join(dir, `.${basename(this.path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
    const document = {
      version: USER_DATABASE_VERSION,
      users: Object.fromEntries(
        [...users.entries()]
          .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
          .map(([name, verifiers]) => [
            name,
            {
              verifiers: verifiers.map((v) => ({
                hash: v.hash,
                salt: v.salt.toString('base64'),
                iterations: v.iterations,
                storedKey: v.storedKey.toString('base64'),
                serverKey: v.serverKey.toString('base64'),
              })),
            },
          ]),
      ),
    };
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const handle = await open(temp, 'wx', 0o600);
      try {
        await handle.writeFile(`${JSON.stringify(document, null, 2)}\n`, 'utf8');
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temp, this.path);
    } catch (e) {
      await unlink(temp).catch(() => undefined);
      throw this.fileError('cannot be written', e);
    }
    // The next read re-stats the file; dropping the snapshot avoids trusting a stale stamp.
    this.snapshot = null;
  }

  private parse(text: string): UserTable {
    let document: unknown;
    try {
      document = JSON.parse(text);
    } catch (e) {
      // V8's message may quote file content; only the position is reported.
      const position = /position (\d+)/.exec(e instanceof Error ? e.message : '')?.[1];
      throw this.corrupt(`is not valid JSON${position !== undefined ? ` (at character ${position})` : ''}`);
    }
    if (!isPlainObject(document)) throw this.corrupt('is not a JSON object');
    if (document.version !== USER_DATABASE_VERSION)
      throw this.corrupt(
        `has version ${JSON.stringify(document.version) ?? 'undefined'}; this program reads version ${USER_DATABASE_VERSION}`,
      );
    if (!isPlainObject(document.users)) throw this.corrupt('has no "users" object');
    const users: UserTable = new Map();
    for (const [name, entry] of Object.entries(document.users)) {
      const where = `user ${JSON.stringify(name)}`;
      if (name.length === 0) throw this.corrupt('has a user with an empty name');
      if (!isPlainObject(entry) || !Array.isArray(entry.verifiers)) throw this.corrupt(`: ${where} has no "verifiers" array`);
      users.set(
        name,
        entry.verifiers.map((raw, index) => this.parseVerifier(raw, `${where}, verifier ${index}`)),
      );
    }
    return users;
  }

  private parseVerifier(raw: unknown, where: string): ScramVerifier {
    if (!isPlainObject(raw)) throw this.corrupt(`: ${where} is not an object`);
    const { hash, iterations } = raw;
    if (typeof hash !== 'string' || hash.length === 0) throw this.corrupt(`: ${where} has no "hash" name`);
    if (typeof iterations !== 'number' || !Number.isInteger(iterations) || iterations < 1 || iterations > MAX_SCRAM_ITERATIONS) {
      throw this.corrupt(`: ${where} has an invalid "iterations" count`);
    }
    const bytes = (field: 'salt' | 'storedKey' | 'serverKey'): Buffer => {
      const value = raw[field];
      const decoded = typeof value === 'string' ? decodeBase64Strict(value) : null;
      if (decoded === null || decoded.length === 0) throw this.corrupt(`: ${where} has an invalid base64 "${field}"`);
      if (field !== 'salt' && hash === SCRAM_SHA_256.name && decoded.length !== SCRAM_SHA_256.length) {
        throw this.corrupt(`: ${where} has a "${field}" of ${decoded.length} bytes; ${hash} needs ${SCRAM_SHA_256.length}`);
      }
      return decoded;
    };
    return { hash, iterations, salt: bytes('salt'), storedKey: bytes('storedKey'), serverKey: bytes('serverKey') };
  }

  private corrupt(problem: string): VirError {
    const sep = problem.startsWith(':') ? '' : ' ';
    return new VirError({
      code: ErrorCode.CONF_SYNTAX,
      domain: ErrorDomain.CONF,
      detail: `user database ${this.path}${sep}${problem}; fix or recreate the file (e.g. with "virtauth passwd")`,
    });
  }

  private fileError(what: string, cause: unknown): VirError {
    const reason = cause instanceof Error ? cause.message : String(cause);
    return new VirError({
      code: ErrorCode.SYSTEM_ERROR,
      domain: ErrorDomain.AUTH,
      detail: `user database ${this.path} ${what}: ${reason}`,
      cause,
    });
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Removes a lock left by a writer that is gone (its process no longer exists, or the lock is far
 * older than any change takes). Returns whether it did, so the caller tries again at once.
 */
async function removeStaleLock(lockPath: string): Promise<boolean> {
  let handle: FileHandle;
  try {
    handle = await open(lockPath, 'r');
  } catch {
    return true; // released meanwhile
  }
  let ino: number;
  let stale: boolean;
  try {
    const stats = await handle.stat();
    ino = stats.ino;
    const pid = Number.parseInt(await handle.readFile('utf8'), 10);
    stale = Date.now() - stats.mtimeMs > LOCK_STALE_MS || (Number.isInteger(pid) && pid > 0 && !processExists(pid));
  } finally {
    await handle.close();
  }
  if (!stale) return false;
  // Only the lock that was judged: another writer may have replaced it since.
  const now = await stat(lockPath).catch(() => null);
  if (now?.ino === ino) await unlink(lockPath).catch(() => undefined);
  return true;
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists, under another user.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
