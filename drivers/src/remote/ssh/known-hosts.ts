// OpenSSH's known_hosts format, for the in-process transport: plain and hashed (`|1|salt|hash`)
// host patterns, wildcards and negations, `[host]:port` for non-default ports, `@revoked` keys.

import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { appendFile, mkdir, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';

export type HostKeyState =
  | { state: 'known' }
  | { state: 'unknown' }
  /** The host is listed with other keys only, or this key is revoked. */
  | { state: 'changed'; revoked: boolean };

interface KnownHostLine {
  marker: '' | '@revoked' | '@cert-authority';
  patterns: string;
  keyType: string;
  key: Buffer;
}

/** Files above this size are refused rather than read into memory. */
const MAX_FILE_BYTES = 16 * 1024 * 1024;

/** The name a host is recorded under: bare for port 22, else `[host]:port`. */
export function knownHostName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

/** The key's algorithm name: the first string of its wire encoding. */
export function hostKeyType(key: Buffer): string {
  if (key.length < 4) return '';
  const len = key.readUInt32BE(0);
  if (len > 64 || 4 + len > key.length) return '';
  return key.subarray(4, 4 + len).toString('latin1');
}

/** libvirt's rendering of a host key in its question: SHA-256, lower-case hex pairs joined by ':'. */
export function hostKeyHash(key: Buffer): string {
  return createHash('sha256')
    .update(key)
    .digest('hex')
    .replace(/(..)(?!$)/g, '$1:');
}

/** OpenSSH's fingerprint of a key (`ssh-keygen -l`): `SHA256:` and unpadded base64. */
export function hostKeyFingerprint(key: Buffer): string {
  return `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
}

function globToRegExp(glob: string): RegExp {
  return new RegExp(
    `^${glob
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.')}$`,
    'is',
  );
}

function hashedPatternMatches(pattern: string, name: string): boolean {
  const parts = pattern.split('|');
  // `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`
  if (parts.length !== 4 || parts[1] !== '1') return false;
  const salt = Buffer.from(parts[2]!, 'base64');
  const expected = Buffer.from(parts[3]!, 'base64');
  if (salt.length === 0 || expected.length !== 20) return false;
  const actual = createHmac('sha1', salt).update(name).digest();
  return timingSafeEqual(actual, expected);
}

/** Whether a line's host patterns name `name`: a negated match excludes it whatever else matches. */
export function hostPatternsMatch(patterns: string, name: string): boolean {
  if (patterns.startsWith('|')) return hashedPatternMatches(patterns, name);
  let matched = false;
  for (const raw of patterns.split(',')) {
    const negated = raw.startsWith('!');
    const pattern = negated ? raw.slice(1) : raw;
    if (pattern === '' || !globToRegExp(pattern).test(name)) continue;
    if (negated) return false;
    matched = true;
  }
  return matched;
}

export function parseKnownHosts(text: string): KnownHostLine[] {
  const lines: KnownHostLine[] = [];
  for (const rawLine of text.split('\n')) {
    const line = rawLine.trim();
    if (line === '' || line.startsWith('#')) continue;
    const fields = line.split(/[ \t]+/);
    let marker: KnownHostLine['marker'] = '';
    if (fields[0] === '@revoked' || fields[0] === '@cert-authority') marker = fields.shift() as KnownHostLine['marker'];
    else if (fields[0]!.startsWith('@')) continue; // a marker we do not know: skip the line, as ssh does
    if (fields.length < 3) continue;
    const [patterns, keyType, keyBase64] = fields as [string, string, string];
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(keyBase64)) continue;
    const key = Buffer.from(keyBase64, 'base64');
    // The encoded key names its own type; a line whose two names disagree is damaged.
    if (hostKeyType(key) !== keyType) continue;
    lines.push({ marker, patterns, keyType, key });
  }
  return lines;
}

/** What the known_hosts lines say about `key` for `name`. Certificate authorities are not used. */
export function checkHostKey(lines: readonly KnownHostLine[], name: string, key: Buffer): HostKeyState {
  let listed = false;
  let known = false;
  for (const line of lines) {
    if (line.marker === '@cert-authority' || !hostPatternsMatch(line.patterns, name)) continue;
    const same = line.key.equals(key);
    if (line.marker === '@revoked') {
      if (same) return { state: 'changed', revoked: true };
      continue;
    }
    listed = true;
    if (same) known = true;
  }
  if (known) return { state: 'known' };
  return listed ? { state: 'changed', revoked: false } : { state: 'unknown' };
}

/** Key types recorded for `name`, to ask the server for one of those first (as OpenSSH does). */
export function knownKeyTypes(lines: readonly KnownHostLine[], name: string): string[] {
  const types = new Set<string>();
  for (const line of lines) if (line.marker === '' && hostPatternsMatch(line.patterns, name)) types.add(line.keyType);
  return [...types];
}

export async function loadKnownHosts(path: string): Promise<KnownHostLine[]> {
  let text: Buffer;
  try {
    text = await readFile(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  if (text.length > MAX_FILE_BYTES) throw new Error(`known_hosts file '${path}' is larger than ${MAX_FILE_BYTES} bytes`);
  return parseKnownHosts(text.toString('utf8'));
}

/** Appends a host's key, creating the file (and its directory, private to the user) if needed. */
export async function addKnownHost(path: string, name: string, key: Buffer): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  let prefix = '';
  try {
    const existing = await readFile(path);
    if (existing.length > 0 && existing[existing.length - 1] !== 0x0a) prefix = '\n';
  } catch {
    // No file yet: appendFile creates it.
  }
  await appendFile(path, `${prefix}${name} ${hostKeyType(key)} ${key.toString('base64')}\n`, { mode: 0o600 });
}
