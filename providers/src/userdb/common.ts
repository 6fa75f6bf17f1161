// Rules every user database applies: names and passwords are SASLprep'd, passwords become SCRAM
// verifiers at once, and bad input is reported without echoing a password.

import { ErrorCode, ErrorDomain, VirError, type ScramVerifier } from '@virtauth/core';
import {
  DEFAULT_SCRAM_ITERATIONS,
  makeScramVerifier,
  MAX_SCRAM_ITERATIONS,
  prepareString,
  SaslPrepError,
  SCRAM_SHA_256,
  type PreparationUse,
} from '../sasl/scram.js';

export { DEFAULT_SCRAM_ITERATIONS };

export function invalidArgument(detail: string): VirError {
  return new VirError({ code: ErrorCode.INVALID_ARG, domain: ErrorDomain.AUTH, detail });
}

export function checkIterations(iterations: number): number {
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > MAX_SCRAM_ITERATIONS) {
    throw invalidArgument(`SCRAM iteration count must be an integer between 1 and ${MAX_SCRAM_ITERATIONS}, got ${iterations}`);
  }
  return iterations;
}

/** The user name as stored and looked up; `null` for a lookup of a name SASLprep rejects. */
export function prepareUserName(username: string, use: PreparationUse): string {
  try {
    return prepareString(username, 'user name', use);
  } catch (e) {
    if (e instanceof SaslPrepError) throw invalidArgument(`${e.message} (user names are SASLprep-normalized, RFC 4013)`);
    throw e;
  }
}

export function lookupName(username: string): string | null {
  try {
    return prepareString(username, 'user name', 'query');
  } catch {
    return null;
  }
}

/** The verifiers stored for a password; the password itself is not kept anywhere. */
export async function verifiersForPassword(password: string, iterations: number): Promise<ScramVerifier[]> {
  if (password.length === 0) throw invalidArgument('the password must not be empty');
  try {
    return [await makeScramVerifier(password, { iterations, hash: SCRAM_SHA_256 })];
  } catch (e) {
    if (e instanceof SaslPrepError) throw invalidArgument(`${e.message} (passwords are SASLprep-normalized, RFC 4013)`);
    throw e;
  }
}

export function copyVerifier(v: ScramVerifier): ScramVerifier {
  return {
    hash: v.hash,
    salt: Buffer.from(v.salt),
    iterations: v.iterations,
    storedKey: Buffer.from(v.storedKey),
    serverKey: Buffer.from(v.serverKey),
  };
}
