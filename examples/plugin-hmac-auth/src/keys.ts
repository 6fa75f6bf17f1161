// The shared keys: a JSON file `{ "alice": "<base64 of 32 or more random bytes>" }` on the
// server, a PASSPHRASE credential (the same base64 text) on the client. Both halves prove a key
// with an HMAC over a fresh server nonce; the key itself never crosses the wire.

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { CredentialType, ErrorCode, ErrorDomain, VirError, credential, type CredentialRequester } from '@virtauth/core';

export const MIN_KEY_BYTES = 32;
export const NONCE_BYTES = 32;
const USER_NAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;

function confError(detail: string): VirError {
  return new VirError({ code: ErrorCode.CONF_SYNTAX, domain: ErrorDomain.CONF, detail });
}

export function isUserName(name: string): boolean {
  return USER_NAME.test(name);
}

function decodeKey(text: string): Buffer | null {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(text)) return null;
  const key = Buffer.from(text, 'base64');
  return key.length >= MIN_KEY_BYTES ? key : null;
}

/** The server's keys, read once at start from the file named by `hmac_key_file`. */
export class KeyStore {
  // Compared against when the user is unknown, so that a guess takes as long either way.
  private readonly decoy = randomBytes(MIN_KEY_BYTES);

  private constructor(private readonly keys: ReadonlyMap<string, Buffer>) {}

  static load(path: string): KeyStore {
    let text: string;
    try {
      if ((statSync(path).mode & 0o077) !== 0) throw confError(`hmac_key_file: ${path} is readable by other users; chmod 600 it`);
      text = readFileSync(path, 'utf8');
    } catch (e) {
      if (e instanceof VirError) throw e;
      throw confError(`hmac_key_file: cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw confError(`hmac_key_file: ${path} is not JSON (expected { "user": "<base64 key>" })`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
      throw confError(`hmac_key_file: ${path}: expected an object { "user": "<base64 key>" }`);
    const keys = new Map<string, Buffer>();
    for (const [name, value] of Object.entries(parsed)) {
      if (!isUserName(name)) throw confError(`hmac_key_file: ${path}: '${name}' is not a user name (letters, digits, . _ @ -, at most 64)`);
      // The message names the user, never the key.
      const key = typeof value === 'string' ? decodeKey(value) : null;
      if (!key)
        throw confError(
          `hmac_key_file: ${path}: the key of '${name}' must be base64 of at least ${MIN_KEY_BYTES} bytes (openssl rand -base64 32)`,
        );
      keys.set(name, key);
    }
    return new KeyStore(keys);
  }

  /** Whether `proof` is the MAC of `message` under `user`'s key; unknown users cost the same. */
  verify(user: string, message: Buffer, proof: Buffer): boolean {
    const key = this.keys.get(user);
    const expected = mac(key ?? this.decoy, message);
    return key !== undefined && proof.length === expected.length && timingSafeEqual(proof, expected);
  }
}

export function mac(key: Buffer, message: Buffer): Buffer {
  return createHmac('sha256', key).update(message).digest();
}

/** What both halves sign: a label (so a proof for one protocol is no use in the other), the nonce, the user. */
export function signedMessage(label: string, nonce: Buffer, user: string): Buffer {
  return Buffer.concat([Buffer.from(`${label}\0`), nonce, Buffer.from(`\0${user}`)]);
}

export function clientError(detail: string, code: number = ErrorCode.AUTH_FAILED): VirError {
  return new VirError({ code, domain: ErrorDomain.REMOTE, detail });
}

/** Asks the application (auth.conf first) for the user name and the key, as SASL asks for a password. */
export async function requestKey(
  requestCredentials: CredentialRequester,
  service: string,
  host: string,
  signal?: AbortSignal,
): Promise<{ user: string; key: Buffer }> {
  const creds = [
    credential(CredentialType.AUTHNAME, 'Please enter your authentication name', 'Authentication Name'),
    credential(CredentialType.PASSPHRASE, 'Please enter your HMAC key (base64)', 'HMAC key'),
  ];
  await requestCredentials(creds, { service, host });
  signal?.throwIfAborted();
  const [user, keyText] = creds.map((c) => c.result);
  if (!user || !keyText)
    throw clientError(`no HMAC user name and key for ${host}: answer AUTHNAME and PASSPHRASE, or add them to auth.conf`);
  if (!isUserName(user)) throw clientError(`'${user}' is not a valid HMAC user name`);
  const key = decodeKey(keyText.trim());
  if (!key) throw clientError(`the HMAC key for ${host} must be base64 of at least ${MIN_KEY_BYTES} bytes`);
  return { user, key };
}
