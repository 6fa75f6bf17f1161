// SASL OAUTHBEARER (RFC 7628) as a SaslMechanism plugin. The client obtains a token from its
// OpenID provider and sends it in one message; the server validates it, and on failure answers
// with the RFC's JSON error challenge, which the client acknowledges before the exchange fails.

import {
  ErrorCode,
  ErrorDomain,
  SaslAuthenticationError,
  VirError,
  type OidcIdentity,
  type SaslClientContext,
  type SaslClientSession,
  type SaslMechanism,
  type SaslServerContext,
  type SaslServerSession,
  type SaslStepResult,
} from '@virtauth/core';
import {
  CLIENT_ERROR_ACK,
  encodeClientMessage,
  encodeServerError,
  parseClientMessage,
  parseServerError,
  OAuthBearerFormatError,
  type OAuthBearerServerError,
} from './messages.js';
import { OidcTokenClient, type OidcClientSettings } from './token-client.js';
import { BearerTokenValidator, type BearerValidatorSettings } from './validator.js';

export const OAUTHBEARER = 'OAUTHBEARER';

export interface OAuthBearerClientOptions {
  /**
   * The OpenID client to use for a server, by its auth.conf host name (the URI's host,
   * `localhost` for a unix socket); null when none is configured for it.
   */
  clientFor: (host: string) => OidcClientSettings | null;
  /** Told about the server's error challenge (what was wrong with the token), e.g. for a UI. */
  onServerError?: (host: string, error: OAuthBearerServerError) => void;
}

export interface OAuthBearerMechanismOptions {
  /** The client half; without it this process cannot log in with OAUTHBEARER. */
  client?: OAuthBearerClientOptions;
  /** The server half; without it this process refuses OAUTHBEARER logins. */
  server?: BearerValidatorSettings;
  /**
   * Client preference among the mechanisms a server offers (default 400 when a client is
   * configured, above SCRAM: whoever set up a token client wants tokens, not passwords).
   */
  priority?: number;
}

function clientError(detail: string, code: number = ErrorCode.AUTH_FAILED): VirError {
  return new VirError({ code, domain: ErrorDomain.REMOTE, detail: `${OAUTHBEARER}: ${detail}` });
}

export class OAuthBearerMechanism implements SaslMechanism {
  readonly name = OAUTHBEARER;
  readonly priority: number;
  // A bearer token is a password for its lifetime: never on a channel anyone could read.
  readonly requiresSecureChannel = true;
  readonly requiresChannelBinding = false;
  readonly validator: BearerTokenValidator | null;
  private readonly tokenClients = new Map<OidcClientSettings, OidcTokenClient>();

  constructor(private readonly options: OAuthBearerMechanismOptions) {
    this.priority = options.priority ?? (options.client ? 400 : 0);
    this.validator = options.server ? new BearerTokenValidator(options.server) : null;
  }

  /** One token client (and token cache) per configured OpenID client. */
  tokenClientFor(host: string): OidcTokenClient | null {
    const settings = this.options.client?.clientFor(host) ?? null;
    if (!settings) return null;
    let client = this.tokenClients.get(settings);
    if (!client) this.tokenClients.set(settings, (client = new OidcTokenClient(settings)));
    return client;
  }

  createClient(ctx: SaslClientContext): SaslClientSession {
    return new OAuthBearerClientSession(this, ctx, this.options.client?.onServerError);
  }

  createServer(ctx: SaslServerContext): SaslServerSession {
    return new OAuthBearerServerSession(this.validator, ctx);
  }
}

class OAuthBearerClientSession implements SaslClientSession {
  private token: string | null = null;
  private tokenClient: OidcTokenClient | null = null;
  private sent = false;
  private done = false;

  constructor(
    private readonly mechanism: OAuthBearerMechanism,
    private readonly ctx: SaslClientContext,
    private readonly onServerError: OAuthBearerClientOptions['onServerError'],
  ) {}

  get complete(): boolean {
    return this.done;
  }

  async start(): Promise<Buffer | null> {
    if (!this.ctx.transport.secure)
      throw clientError('refusing to send a bearer token over a channel that is neither a unix socket nor TLS');
    this.tokenClient = this.mechanism.tokenClientFor(this.ctx.host);
    if (!this.tokenClient) {
      throw clientError(
        `no OpenID Connect client is configured for ${this.ctx.host}; configure one, or choose another mechanism with auth=sasl.SCRAM-SHA-256`,
        ErrorCode.AUTH_UNAVAILABLE,
      );
    }
    this.token = await this.tokenClient.accessToken({
      requestCredentials: this.ctx.requestCredentials,
      service: this.ctx.service,
      host: this.ctx.host,
      signal: this.ctx.signal,
    });
    this.sent = true;
    // The exchange has one client message; a server that accepts sends no further data.
    this.done = true;
    return encodeClientMessage(this.token, { host: this.ctx.host });
  }

  async step(challenge: Buffer | null): Promise<Buffer | null> {
    if (!this.sent) return this.start();
    const error = challenge && challenge.length > 0 ? parseServerError(challenge) : null;
    if (!error) {
      if (challenge === null || challenge.length === 0) return null;
      throw clientError('the server sent a message that is neither empty nor an RFC 7628 error');
    }
    this.done = false;
    // A refused token is useless: the next login must not offer it again.
    if (error.status === 'invalid_token' && this.token) await this.tokenClient?.invalidate(this.token);
    this.onServerError?.(this.ctx.host, error);
    // RFC 7628 §3.2.3: acknowledge with %x01 so the server can end the exchange with a failure.
    return CLIENT_ERROR_ACK;
  }
}

type ServerStage = { stage: 'initial' } | { stage: 'failed'; reason: string; username?: string } | { stage: 'done' };

class OAuthBearerServerSession implements SaslServerSession {
  private state: ServerStage = { stage: 'initial' };
  username: string | null = null;
  identity: { oidc?: OidcIdentity } = {};

  constructor(
    private readonly validator: BearerTokenValidator | null,
    private readonly ctx: SaslServerContext,
  ) {}

  async step(response: Buffer | null): Promise<SaslStepResult> {
    const state = this.state;
    if (state.stage === 'failed') {
      const acknowledged = response !== null && response.equals(CLIENT_ERROR_ACK);
      throw new SaslAuthenticationError(
        `${OAUTHBEARER}: ${state.reason}${acknowledged ? '' : ' (and the client did not acknowledge the error with %x01)'}`,
        state.username,
      );
    }
    if (state.stage === 'done') throw new SaslAuthenticationError(`${OAUTHBEARER}: message after the exchange ended`);
    if (!this.validator)
      throw new SaslAuthenticationError(`${OAUTHBEARER}: this server has no token validation configured (oauth_issuer, oauth_audience)`);
    if (!this.ctx.transport.secure)
      throw new SaslAuthenticationError(`${OAUTHBEARER}: refused on a channel that is neither a unix socket nor TLS`);
    // OAUTHBEARER is client-first; a client that sent nothing gets an empty challenge.
    if (response === null || response.length === 0) return { done: false, data: Buffer.alloc(0) };

    let message;
    try {
      message = parseClientMessage(response);
    } catch (e) {
      if (e instanceof OAuthBearerFormatError) return this.refuse('invalid_request', `malformed client message: ${e.message}`);
      throw e;
    }
    // An empty `auth` asks what a token needs (RFC 7628 §4.3): the error challenge says so.
    if (message.token === null) return this.refuse('invalid_token', 'the client sent no token (a discovery request)');

    let verdict;
    try {
      verdict = await this.validator.validate(message.token);
    } catch (e) {
      throw new SaslAuthenticationError(`${OAUTHBEARER}: cannot validate tokens now: ${(e as Error).message}`);
    }
    if (!verdict.ok) return this.refuse(verdict.status, verdict.reason, verdict.username);
    if (message.authzid !== null && message.authzid !== verdict.username) {
      // Acting as someone else than the token names is not something a token can grant here.
      return this.refuse(
        'invalid_request',
        `the client asked to act as '${message.authzid.slice(0, 100)}', but the token names '${verdict.username}'`,
        verdict.username,
      );
    }
    this.username = verdict.username;
    this.identity = { oidc: verdict.identity };
    this.state = { stage: 'done' };
    return { done: true, data: null };
  }

  private refuse(status: 'invalid_request' | 'invalid_token' | 'insufficient_scope', reason: string, username?: string): SaslStepResult {
    this.state = { stage: 'failed', reason: `${status}: ${reason}`, ...(username ? { username } : {}) };
    return { done: false, data: encodeServerError(this.validator!.challenge(status)) };
  }
}
