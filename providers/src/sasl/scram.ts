// Shared SCRAM machinery (RFC 5802, SHA-256 per RFC 7677): message grammar, string preparation,
// key derivation and proof checks. The mechanism sessions build on these pieces.

import { createHash, createHmac, pbkdf2, randomBytes, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import saslprep from '@mongodb-js/saslprep';
import type { ScramVerifier } from '@virtauth/core';

const pbkdf2Async = promisify(pbkdf2);

/** A SCRAM hash: its name in the mechanism (`SHA-256`), node's digest name, and its output size. */
export interface ScramHashAlgorithm {
  readonly name: string;
  readonly digest: string;
  readonly length: number;
}

export const SCRAM_SHA_256: ScramHashAlgorithm = { name: 'SHA-256', digest: 'sha256', length: 32 };

/** RFC 7677's minimum recommended iteration count, also libvirt/Cyrus's default. */
export const DEFAULT_SCRAM_ITERATIONS = 4096;
export const DEFAULT_SALT_LENGTH = 16;
/** PBKDF2's counter is a 32-bit integer in practice; anything larger is a typo or an attack. */
export const MAX_SCRAM_ITERATIONS = 0x7fffffff;

/** The `server-error-value`s of RFC 5802 §7 (also used to classify our own parse failures). */
export type ScramErrorValue =
  | 'invalid-encoding'
  | 'extensions-not-supported'
  | 'invalid-proof'
  | 'channel-bindings-dont-match'
  | 'server-does-support-channel-binding'
  | 'channel-binding-not-supported'
  | 'unsupported-channel-binding-type'
  | 'unknown-user'
  | 'invalid-username-encoding'
  | 'no-resources'
  | 'other-error';

/** A SCRAM exchange that cannot go on; the message never contains secrets. */
export class ScramProtocolError extends Error {
  override readonly name = 'ScramProtocolError';
  constructor(
    readonly errorValue: ScramErrorValue,
    message: string,
  ) {
    super(message);
  }
}

/** A user name or password that SASLprep rejects; the message names the field, never its value. */
export class SaslPrepError extends Error {
  override readonly name = 'SaslPrepError';
  constructor(
    readonly field: 'user name' | 'authorization name' | 'password',
    problem: string,
  ) {
    super(`the ${field} ${problem}`);
  }
}

// ---------------------------------------------------------------------------------------------
// String preparation (RFC 4013). Names and passwords typed by a user are "query" strings
// (unassigned code points allowed); what the user database stores is a "stored" string.

export type PreparationUse = 'query' | 'stored';

export function prepareString(value: string, field: SaslPrepError['field'], use: PreparationUse): string {
  let prepared: string;
  try {
    prepared = saslprep(value, { allowUnassigned: use === 'query' });
  } catch (e) {
    throw new SaslPrepError(field, describeSaslPrepFailure(e instanceof Error ? e.message : ''));
  }
  if (prepared.length === 0) throw new SaslPrepError(field, 'is empty after SASLprep normalization');
  return prepared;
}

function describeSaslPrepFailure(libraryMessage: string): string {
  if (/unassigned/i.test(libraryMessage)) return 'contains an unassigned Unicode code point';
  if (/prohibited/i.test(libraryMessage)) return 'contains a character SASLprep (RFC 4013) prohibits, such as a control character';
  if (/RandALCat|bidirectional/i.test(libraryMessage))
    return 'mixes right-to-left and left-to-right text in a way SASLprep (RFC 4013) forbids';
  // The library fails without a message of its own when everything was mapped to nothing.
  return 'is empty after SASLprep normalization';
}

// ---------------------------------------------------------------------------------------------
// Message grammar (RFC 5802 §7).

const NONCE_RE = /^[\x21-\x2b\x2d-\x7e]+$/;
const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const CB_NAME_RE = /^[A-Za-z0-9.-]+$/;
const POSIT_NUMBER_RE = /^[1-9][0-9]*$/;

export function isPrintableNonce(nonce: string): boolean {
  return NONCE_RE.test(nonce);
}

/** A fresh nonce: base64 of 24 random bytes only uses printable characters other than `,`. */
export function generateNonce(): string {
  return randomBytes(24).toString('base64');
}

/** Decodes strict, canonical base64 (padding required, no stray bits); null when invalid. */
export function decodeBase64Strict(text: string): Buffer | null {
  if (!BASE64_RE.test(text)) return null;
  const bytes = Buffer.from(text, 'base64');
  return bytes.toString('base64') === text ? bytes : null;
}

/** `saslname` encoding: `=` becomes `=3D`, `,` becomes `=2C`. */
export function escapeSaslName(name: string): string {
  return name.replace(/=/g, '=3D').replace(/,/g, '=2C');
}

/** Inverse of escapeSaslName; any `=` not starting `=2C` or `=3D` is an error (RFC 5802 §5.1). */
export function unescapeSaslName(encoded: string): string {
  if (encoded.length === 0) throw new ScramProtocolError('invalid-username-encoding', 'empty name');
  let out = '';
  for (let i = 0; i < encoded.length; i++) {
    const ch = encoded[i];
    if (ch === ',') throw new ScramProtocolError('invalid-username-encoding', 'unescaped "," in a name');
    if (ch !== '=') {
      out += ch;
      continue;
    }
    const escape = encoded.slice(i + 1, i + 3);
    if (escape === '2C') out += ',';
    else if (escape === '3D') out += '=';
    else throw new ScramProtocolError('invalid-username-encoding', 'a name contains "=" not followed by 2C or 3D');
    i += 2;
  }
  return out;
}

/** Decodes a SCRAM message: strict UTF-8, no NUL; `null` (SASL "no data") is an error. */
export function decodeScramMessage(data: Buffer | null, what: string): string {
  if (data === null) throw new ScramProtocolError('invalid-encoding', `${what} is missing (no data)`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(data);
  } catch {
    throw new ScramProtocolError('invalid-encoding', `${what} is not valid UTF-8`);
  }
  if (text.includes('\0')) throw new ScramProtocolError('invalid-encoding', `${what} contains a NUL byte`);
  return text;
}

interface Attribute {
  name: string;
  value: string;
}

/** Splits `a=value,b=value,...`; every attribute is one letter, `=`, and a non-empty value. */
function splitAttributes(text: string, what: string): Attribute[] {
  return text.split(',').map((part) => {
    if (part.length < 3 || part[1] !== '=' || !/^[A-Za-z]$/.test(part[0]!)) {
      throw new ScramProtocolError('invalid-encoding', `${what} has a malformed attribute`);
    }
    return { name: part[0]!, value: part.slice(2) };
  });
}

function expectAttribute(attrs: Attribute[], index: number, name: string, what: string): string {
  const attr = attrs[index];
  if (!attr || attr.name !== name) {
    throw new ScramProtocolError('invalid-encoding', `${what}: expected attribute "${name}=" at position ${index + 1}`);
  }
  return attr.value;
}

function rejectMandatoryExtension(attrs: Attribute[], what: string): void {
  if (attrs[0]?.name === 'm')
    throw new ScramProtocolError('extensions-not-supported', `${what} requires an unsupported mandatory extension (m=)`);
}

function parseNonce(value: string, what: string): string {
  if (!isPrintableNonce(value))
    throw new ScramProtocolError('invalid-encoding', `${what}: the nonce contains characters outside printable ASCII`);
  return value;
}

function parseBase64(value: string, what: string, attribute: string): Buffer {
  const bytes = decodeBase64Strict(value);
  if (bytes === null || bytes.length === 0)
    throw new ScramProtocolError('invalid-encoding', `${what}: "${attribute}=" is not valid base64`);
  return bytes;
}

export type ChannelBindingFlag = { kind: 'n' } | { kind: 'y' } | { kind: 'p'; name: string };

export function formatGs2Header(flag: ChannelBindingFlag, authzid: string | null): string {
  const cbind = flag.kind === 'p' ? `p=${flag.name}` : flag.kind;
  return `${cbind},${authzid !== null ? `a=${escapeSaslName(authzid)}` : ''},`;
}

export interface ClientFirstMessage {
  flag: ChannelBindingFlag;
  /** Decoded authorization identity, or null when absent. */
  authzid: string | null;
  /** The GS2 header exactly as sent (part of the channel binding input). */
  gs2Header: string;
  /** `client-first-message-bare` exactly as sent (part of AuthMessage). */
  bare: string;
  /** Decoded authentication name. */
  username: string;
  nonce: string;
}

export function formatClientFirstBare(username: string, nonce: string): string {
  return `n=${escapeSaslName(username)},r=${nonce}`;
}

export function parseClientFirst(text: string): ClientFirstMessage {
  const what = 'client-first-message';
  const first = text.indexOf(',');
  const second = first < 0 ? -1 : text.indexOf(',', first + 1);
  if (second < 0) throw new ScramProtocolError('invalid-encoding', `${what} has no complete GS2 header`);
  const cbindText = text.slice(0, first);
  const authzText = text.slice(first + 1, second);
  let flag: ChannelBindingFlag;
  if (cbindText === 'n' || cbindText === 'y') flag = { kind: cbindText };
  else if (cbindText.startsWith('p=') && CB_NAME_RE.test(cbindText.slice(2))) flag = { kind: 'p', name: cbindText.slice(2) };
  else throw new ScramProtocolError('invalid-encoding', `${what} has an invalid channel binding flag`);
  let authzid: string | null = null;
  if (authzText.length > 0) {
    if (!authzText.startsWith('a='))
      throw new ScramProtocolError('invalid-encoding', `${what} has an invalid authorization identity field`);
    authzid = unescapeSaslName(authzText.slice(2));
  }
  const bare = text.slice(second + 1);
  const attrs = splitAttributes(bare, what);
  rejectMandatoryExtension(attrs, what);
  const username = unescapeSaslName(expectAttribute(attrs, 0, 'n', what));
  const nonce = parseNonce(expectAttribute(attrs, 1, 'r', what), what);
  // Attributes after the nonce are optional extensions, ignored as RFC 5802 §5.1 requires.
  return { flag, authzid, gs2Header: text.slice(0, second + 1), bare, username, nonce };
}

export interface ServerFirstMessage {
  nonce: string;
  salt: Buffer;
  iterations: number;
}

export function formatServerFirst(nonce: string, salt: Buffer, iterations: number): string {
  return `r=${nonce},s=${salt.toString('base64')},i=${iterations}`;
}

/** Thrown by the client-side parsers when the server answered with `e=`. */
export class ScramServerError extends Error {
  override readonly name = 'ScramServerError';
  constructor(readonly errorValue: string) {
    super(`the server reported "${errorValue}"`);
  }
}

/** Keeps only a plausible `server-error-value` so that a hostile server cannot inject text. */
function sanitizeServerError(value: string): string {
  return /^[A-Za-z0-9-]{1,64}$/.test(value) ? value : 'unspecified error';
}

export function parseServerFirst(text: string): ServerFirstMessage {
  const what = 'server-first-message';
  const attrs = splitAttributes(text, what);
  if (attrs[0]?.name === 'e') throw new ScramServerError(sanitizeServerError(attrs[0].value));
  rejectMandatoryExtension(attrs, what);
  const nonce = parseNonce(expectAttribute(attrs, 0, 'r', what), what);
  const salt = parseBase64(expectAttribute(attrs, 1, 's', what), what, 's');
  const iterationText = expectAttribute(attrs, 2, 'i', what);
  if (!POSIT_NUMBER_RE.test(iterationText) || iterationText.length > 10 || Number(iterationText) > MAX_SCRAM_ITERATIONS) {
    throw new ScramProtocolError('invalid-encoding', `${what}: the iteration count is not a positive 32-bit number`);
  }
  return { nonce, salt, iterations: Number(iterationText) };
}

export interface ClientFinalMessage {
  /** Decoded `c=`: the GS2 header followed by any channel binding data. */
  channelBinding: Buffer;
  nonce: string;
  proof: Buffer;
  /** `client-final-message-without-proof` exactly as sent (part of AuthMessage). */
  withoutProof: string;
}

export function formatClientFinalWithoutProof(cbindInput: Buffer, nonce: string): string {
  return `c=${cbindInput.toString('base64')},r=${nonce}`;
}

export function parseClientFinal(text: string): ClientFinalMessage {
  const what = 'client-final-message';
  const attrs = splitAttributes(text, what);
  const channelBinding = parseBase64(expectAttribute(attrs, 0, 'c', what), what, 'c');
  const nonce = parseNonce(expectAttribute(attrs, 1, 'r', what), what);
  const last = attrs.length - 1;
  if (last < 2) throw new ScramProtocolError('invalid-encoding', `${what} has no proof`);
  const proof = parseBase64(expectAttribute(attrs, last, 'p', what), what, 'p');
  const withoutProof = text.slice(0, text.lastIndexOf(',p='));
  return { channelBinding, nonce, proof, withoutProof };
}

export type ServerFinalMessage = { kind: 'verifier'; signature: Buffer } | { kind: 'error'; errorValue: string };

export function parseServerFinal(text: string): ServerFinalMessage {
  const what = 'server-final-message';
  const attrs = splitAttributes(text, what);
  if (attrs[0]?.name === 'e') return { kind: 'error', errorValue: sanitizeServerError(attrs[0].value) };
  return { kind: 'verifier', signature: parseBase64(expectAttribute(attrs, 0, 'v', what), what, 'v') };
}

export function authMessage(clientFirstBare: string, serverFirst: string, clientFinalWithoutProof: string): string {
  return `${clientFirstBare},${serverFirst},${clientFinalWithoutProof}`;
}

// ---------------------------------------------------------------------------------------------
// Cryptography (RFC 5802 §3).

export function hmac(hash: ScramHashAlgorithm, key: Buffer, data: string | Buffer): Buffer {
  return createHmac(hash.digest, key).update(data).digest();
}

export function digest(hash: ScramHashAlgorithm, data: Buffer): Buffer {
  return createHash(hash.digest).update(data).digest();
}

/** Hi() = PBKDF2 with HMAC as the PRF and one output block; `password` must already be SASLprep'd. */
export async function hi(hash: ScramHashAlgorithm, preparedPassword: string, salt: Buffer, iterations: number): Promise<Buffer> {
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > MAX_SCRAM_ITERATIONS) {
    throw new RangeError(`iteration count must be an integer between 1 and ${MAX_SCRAM_ITERATIONS}`);
  }
  return pbkdf2Async(Buffer.from(preparedPassword, 'utf8'), salt, iterations, hash.length, hash.digest);
}

export interface ScramKeys {
  clientKey: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
}

export function deriveKeys(hash: ScramHashAlgorithm, saltedPassword: Buffer): ScramKeys {
  const clientKey = hmac(hash, saltedPassword, 'Client Key');
  return { clientKey, storedKey: digest(hash, clientKey), serverKey: hmac(hash, saltedPassword, 'Server Key') };
}

export function xorBuffers(a: Buffer, b: Buffer): Buffer {
  if (a.length !== b.length) throw new RangeError('xor operands differ in length');
  const out = Buffer.allocUnsafe(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ b[i]!;
  return out;
}

/** Constant-time equality; lengths are public (they are fixed by the hash), contents are not. */
export function constantTimeEqual(a: Buffer, b: Buffer): boolean {
  if (a.length !== b.length) {
    timingSafeEqual(a, a);
    return false;
  }
  return timingSafeEqual(a, b);
}

export function clientProof(hash: ScramHashAlgorithm, keys: ScramKeys, message: string): Buffer {
  return xorBuffers(keys.clientKey, hmac(hash, keys.storedKey, message));
}

export function serverSignature(hash: ScramHashAlgorithm, serverKey: Buffer, message: string): Buffer {
  return hmac(hash, serverKey, message);
}

/** Recovers ClientKey from the proof and checks H(ClientKey) == StoredKey, in constant time. */
export function verifyClientProof(hash: ScramHashAlgorithm, storedKey: Buffer, message: string, proof: Buffer): boolean {
  const signature = hmac(hash, storedKey, message);
  if (proof.length !== signature.length) return false;
  return constantTimeEqual(digest(hash, xorBuffers(proof, signature)), storedKey);
}

export interface MakeScramVerifierOptions {
  iterations: number;
  /** Defaults to 16 random bytes. */
  salt?: Buffer;
  hash?: ScramHashAlgorithm;
}

/** Turns a password into what a server stores: salt, iterations, StoredKey and ServerKey. */
export async function makeScramVerifier(password: string, options: MakeScramVerifierOptions): Promise<ScramVerifier> {
  const hash = options.hash ?? SCRAM_SHA_256;
  const { iterations } = options;
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > MAX_SCRAM_ITERATIONS) {
    throw new RangeError(`SCRAM iteration count must be an integer between 1 and ${MAX_SCRAM_ITERATIONS}, got ${iterations}`);
  }
  const salt = options.salt ?? randomBytes(DEFAULT_SALT_LENGTH);
  if (salt.length === 0) throw new RangeError('SCRAM salt must not be empty');
  const keys = deriveKeys(hash, await hi(hash, prepareString(password, 'password', 'stored'), salt, iterations));
  return { hash: hash.name, salt: Buffer.from(salt), iterations, storedKey: keys.storedKey, serverKey: keys.serverKey };
}

/** Whether `password` matches `verifier` (one PBKDF2 run); `preparedPassword` is already SASLprep'd. */
export async function passwordMatchesVerifier(
  hash: ScramHashAlgorithm,
  verifier: ScramVerifier,
  preparedPassword: string,
): Promise<boolean> {
  const keys = deriveKeys(hash, await hi(hash, preparedPassword, verifier.salt, verifier.iterations));
  return constantTimeEqual(keys.storedKey, verifier.storedKey);
}
