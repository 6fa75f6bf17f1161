// The SASL mechanism plugin contract: one object per mechanism, with a client and a server half.

import type { ConnectAuth, CredentialRequester } from '../credentials.js';
import type { TransportInfo } from './transport.js';
import type { UserDatabase } from './userdb.js';
import type { ClientIdentity } from './auth.js';

export type ChannelBindingType = 'tls-exporter' | 'tls-server-end-point';
export type ChannelBindingPolicy = 'disable' | 'prefer' | 'require';

export interface ChannelBinding {
  type: ChannelBindingType;
  data: Buffer;
}

export interface SaslClientContext {
  /** Obtains credentials: auth.conf first, then the application's callback once for the rest. */
  requestCredentials: CredentialRequester;
  /** The application's declared credential types (USERNAME is asked only when declared). */
  auth: ConnectAuth | null;
  /** auth.conf service and host for this server. */
  service: string;
  host: string;
  transport: TransportInfo;
  /** Channel binding data of this connection, when it runs over TLS. */
  channelBinding: ChannelBinding | null;
  channelBindingPolicy: ChannelBindingPolicy;
  /** Mechanism names the server offered (as listed by AUTH_SASL_INIT). */
  serverMechanisms: readonly string[];
  /** Upper bound on the SCRAM iteration count this client accepts. */
  maxIterations: number;
  /**
   * Lower bound on the SCRAM iteration count: a server asking for fewer is refused before any
   * proof is sent (a proof made with few iterations is cheap to crack offline). Default 4096.
   */
  minIterations?: number;
  signal?: AbortSignal;
}

export interface SaslClientSession {
  /** The initial response sent with AUTH_SASL_START; `null` means no data (nil). */
  start(): Promise<Buffer | null>;
  /** Answers a server challenge; `null` input means the server sent nil. */
  step(challenge: Buffer | null): Promise<Buffer | null>;
  /** True once the client has verified the server's final message (or needs none). */
  readonly complete: boolean;
}

export interface SaslServerContext {
  users: UserDatabase;
  transport: TransportInfo;
  channelBinding: ChannelBinding | null;
  /** Whether this server offers a -PLUS mechanism on this connection (downgrade detection). */
  serverOffersChannelBinding: boolean;
}

export interface SaslStepResult {
  /** True when the exchange succeeded; `data` is then the server's final message, if any. */
  done: boolean;
  data: Buffer | null;
}

export interface SaslServerSession {
  /**
   * Consumes the client's message (null = nil). Throws SaslAuthenticationError on any failure;
   * the error's reason is for the server log only, the client sees a generic failure.
   */
  step(response: Buffer | null): Promise<SaslStepResult>;
  /** The authenticated identity (authzid if given, else the authentication name) once done. */
  readonly username: string | null;
  /** What else the mechanism learnt about the client (e.g. OAUTHBEARER's token claims) once done. */
  readonly identity?: Partial<Pick<ClientIdentity, 'oidc'>>;
}

export interface SaslMechanism {
  /** IANA name as listed on the wire, e.g. `SCRAM-SHA-256`. */
  readonly name: string;
  /** Client preference when several are offered; higher is tried first. */
  readonly priority: number;
  /** Whether the mechanism may only run over a secure channel (unix socket or TLS). */
  readonly requiresSecureChannel: boolean;
  /** Whether the mechanism needs TLS channel binding data to run at all (-PLUS). */
  readonly requiresChannelBinding: boolean;
  /**
   * Whether the server learns the password itself (PLAIN). A client picks such a mechanism on
   * its own only when the server offers nothing that keeps the password (no SCRAM).
   */
  readonly exposesPassword?: boolean;
  createClient(ctx: SaslClientContext): SaslClientSession;
  createServer(ctx: SaslServerContext): SaslServerSession;
}

/** A SASL failure; `reason` goes to the server log, never to the peer. */
export class SaslAuthenticationError extends Error {
  override readonly name = 'SaslAuthenticationError';
  constructor(
    readonly reason: string,
    readonly username?: string,
  ) {
    super(reason);
  }
}
