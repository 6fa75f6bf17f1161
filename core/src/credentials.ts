// The credential model of virConnectOpenAuth: typed requests answered all at once by one callback.

import { ErrorCode, ErrorDomain, VirError } from './errors.js';
import type { DaemonIdentity } from './contracts/transport.js';

/** `virConnectCredentialType`. */
export const CredentialType = {
  USERNAME: 1,
  AUTHNAME: 2,
  LANGUAGE: 3,
  CNONCE: 4,
  PASSPHRASE: 5,
  ECHOPROMPT: 6,
  NOECHOPROMPT: 7,
  REALM: 8,
  EXTERNAL: 9,
} as const;
export type CredentialType = (typeof CredentialType)[keyof typeof CredentialType];

export const ALL_CREDENTIAL_TYPES: readonly CredentialType[] = [1, 2, 3, 4, 5, 6, 7, 8, 9];

const CREDENTIAL_TYPE_NAMES = new Map<number, string>(Object.entries(CredentialType).map(([k, v]) => [v, k]));

export function credentialTypeName(t: number): string {
  return CREDENTIAL_TYPE_NAMES.get(t) ?? `type ${t}`;
}

/** Types whose answers are secret: never logged, echoed, or put in an error or audit record. */
export const SECRET_CREDENTIAL_TYPES: ReadonlySet<number> = new Set([CredentialType.PASSPHRASE, CredentialType.NOECHOPROMPT]);

/** One `virConnectCredential`: the callback fills `result` (null = could not be filled). */
export interface Credential {
  type: CredentialType;
  prompt: string;
  challenge: string | null;
  defresult: string | null;
  result: string | null;
}

export function credential(
  type: CredentialType,
  prompt: string,
  challenge: string | null = null,
  defresult: string | null = null,
): Credential {
  return { type, prompt, challenge, defresult, result: null };
}

/** One hop of the chain a relayed request travelled: who asks, for what. */
export interface OriginHop {
  /** The daemon the driver runs in, e.g. `virtauthd@hostB`. */
  daemon: string;
  /** The driver that needs the credentials, e.g. `xenapi` or `remote`. */
  driver: string;
  /** The URI the driver was opening (without secrets). */
  uri: string;
}

/** The connection a relayed request arrived on: the daemon this client itself reached. */
export interface RelayVia {
  /** The name that daemon gave itself when the relay was enabled: every request's last hop. */
  daemon: string;
  /** What the transport proved about that daemon; null when nothing (plain TCP, no_verify=1). */
  identity: DaemonIdentity | null;
  /** The far end as one string (`unix:/run/x.sock`, `tls:host:16514`), for per-origin limits. */
  key: string;
}

/** What a credential request is about; passed to the callback alongside the credentials. */
export interface CredentialRequestInfo {
  /** auth.conf service: `libvirt` for the remote driver's SASL, `xenapi` for XenAPI, ... */
  service: string;
  /** auth.conf host: the server the credentials are for (`localhost` when there is none). */
  host: string;
  /** Where the request comes from; empty when the request is local to this process. */
  origin: readonly OriginHop[];
  /** Present exactly when a daemon relayed the request: the daemon this client connected to. */
  via?: RelayVia | undefined;
  /** Aborted when the request is no longer wanted (deadline, disconnect, cancellation). */
  signal?: AbortSignal;
  /** Absolute time (ms since the epoch) after which no answer will be taken. */
  deadline?: number;
  /**
   * True when the answers would travel to the server unencrypted (XenAPI over http): a daemon's
   * stored credentials are then never used.
   */
  cleartext?: boolean;
}

/**
 * The application's callback. It receives every needed credential at once and fills each
 * `result`. Returning `false` or throwing means the credentials could not be collected.
 */
export type CredentialCallback = (creds: Credential[], info: CredentialRequestInfo) => void | boolean | Promise<void | boolean>;

/** `virConnectAuth`: the types the caller can answer, and the callback that answers them. */
export interface ConnectAuth {
  credTypes: readonly CredentialType[];
  callback: CredentialCallback;
}

/**
 * What a mechanism or driver calls to obtain credentials: fills every entry or throws a VirError.
 * Implementations consult auth.conf first and ask the callback only for the rest.
 */
export type CredentialRequester = (
  creds: Credential[],
  info: Omit<CredentialRequestInfo, 'origin'> & { origin?: readonly OriginHop[] },
) => Promise<void>;

/** A source that fills credentials without asking anyone (auth.conf). */
export interface CredentialSource {
  /** Fills what it can in place; entries it cannot fill keep `result === null`. */
  fill(creds: Credential[], service: string, host: string, info?: Omit<CredentialRequestInfo, 'origin'>): Promise<void> | void;
  /**
   * For relayed requests, which a client's policy must have bound to this service and host:
   * fills only from an entry for exactly this service and host, never a `-default` or wildcard
   * one. A source without it never answers a relayed request.
   */
  fillExact?(creds: Credential[], service: string, host: string): Promise<void> | void;
}

/** auth.conf's key for each credential type it can answer. */
export const AUTH_CONF_KEYS: Partial<Record<number, string>> = {
  [CredentialType.USERNAME]: 'username',
  [CredentialType.AUTHNAME]: 'authname',
  [CredentialType.PASSPHRASE]: 'password',
  [CredentialType.REALM]: 'realm',
};

/**
 * The shared credential pipeline: sources fill what they can, then the callback is asked once
 * for everything left, restricted to the types the caller declared it can answer.
 */
export function makeCredentialRequester(sources: readonly CredentialSource[], auth: ConnectAuth | null): CredentialRequester {
  return async (creds, info) => {
    for (const source of sources) {
      const open = creds.filter((c) => c.result === null);
      if (open.length === 0) return;
      // Most sources (auth.conf) answer at once: no turn of the event loop for them.
      const filling = source.fill(open, info.service, info.host, info);
      if (filling) await filling;
    }
    const missing = creds.filter((c) => c.result === null);
    if (missing.length === 0) return;
    if (!auth) {
      throw new VirError({ code: ErrorCode.AUTH_FAILED, domain: ErrorDomain.AUTH, detail: 'No authentication callback available' });
    }
    const unsupported = missing.filter((c) => !auth.credTypes.includes(c.type));
    if (unsupported.length > 0) {
      throw new VirError({
        code: ErrorCode.AUTH_UNAVAILABLE,
        domain: ErrorDomain.AUTH,
        detail: `the authentication callback cannot answer ${unsupported.map((c) => credentialTypeName(c.type)).join(', ')}`,
      });
    }
    let ok: void | boolean;
    try {
      ok = await auth.callback(missing, { origin: [], ...info });
    } catch (e) {
      if (e instanceof VirError) throw e;
      throw new VirError({ code: ErrorCode.AUTH_FAILED, domain: ErrorDomain.AUTH, detail: 'Failed to collect auth credentials', cause: e });
    }
    if (ok === false) {
      throw new VirError({ code: ErrorCode.AUTH_FAILED, domain: ErrorDomain.AUTH, detail: 'Failed to collect auth credentials' });
    }
    const unfilled = missing.filter((c) => c.result === null);
    if (unfilled.length > 0) {
      throw new VirError({
        code: ErrorCode.AUTH_FAILED,
        domain: ErrorDomain.AUTH,
        detail: `the authentication callback left ${unfilled.map((c) => credentialTypeName(c.type)).join(', ')} unanswered`,
      });
    }
  };
}
