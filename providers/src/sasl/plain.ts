// PLAIN (RFC 4616): the password travels in the clear inside the SASL exchange, so this mechanism
// is only allowed on secure channels. The server checks it against the stored SCRAM verifier.

import { randomBytes } from 'node:crypto';
import {
  SaslAuthenticationError,
  type SaslClientContext,
  type SaslClientSession,
  type SaslMechanism,
  type SaslServerContext,
  type SaslServerSession,
  type SaslStepResult,
  type ScramVerifier,
} from '@virtauth/core';
import { collectPasswordCredentials, saslClientError } from './client-support.js';
import {
  DEFAULT_SALT_LENGTH,
  DEFAULT_SCRAM_ITERATIONS,
  hi,
  passwordMatchesVerifier,
  prepareString,
  SaslPrepError,
  SCRAM_SHA_256,
} from './scram.js';

export interface PlainMechanismOptions {
  /** PBKDF2 iterations spent on unknown user names, so that they take as long as known ones. */
  unknownUserIterations?: number;
}

export class PlainMechanism implements SaslMechanism {
  readonly name = 'PLAIN';
  readonly priority = 100;
  readonly exposesPassword = true;
  readonly requiresSecureChannel = true;
  readonly requiresChannelBinding = false;
  private readonly unknownUserIterations: number;

  constructor(options: PlainMechanismOptions = {}) {
    this.unknownUserIterations = options.unknownUserIterations ?? DEFAULT_SCRAM_ITERATIONS;
    if (!Number.isInteger(this.unknownUserIterations) || this.unknownUserIterations < 1) {
      throw new RangeError(`unknownUserIterations must be a positive integer, got ${this.unknownUserIterations}`);
    }
  }

  createClient(ctx: SaslClientContext): SaslClientSession {
    return new PlainClientSession(this.name, ctx);
  }

  createServer(ctx: SaslServerContext): SaslServerSession {
    return new PlainServerSession(this.name, ctx, this.unknownUserIterations);
  }
}

class PlainClientSession implements SaslClientSession {
  private started = false;
  private finished = false;

  constructor(
    private readonly mechanism: string,
    private readonly ctx: SaslClientContext,
  ) {}

  /** PLAIN has no server message to verify: the client is done once it has sent its response. */
  get complete(): boolean {
    return this.finished;
  }

  async start(): Promise<Buffer | null> {
    if (this.started) throw saslClientError(this.mechanism, 'the exchange was already started');
    this.started = true;
    const creds = await collectPasswordCredentials(this.mechanism, this.ctx);
    for (const [field, value] of [
      ['authorization name', creds.authzid ?? ''],
      ['authentication name', creds.authcid],
      ['password', creds.password],
    ] as const) {
      if (value.includes('\0')) throw saslClientError(this.mechanism, `the ${field} contains a NUL character`);
    }
    // Sent unprepared: RFC 4616 has the server apply SASLprep, and servers that do not (Cyrus)
    // compare the bytes the user typed.
    this.finished = true;
    return Buffer.from(`${creds.authzid ?? ''}\0${creds.authcid}\0${creds.password}`, 'utf8');
  }

  async step(challenge: Buffer | null): Promise<Buffer | null> {
    if (challenge === null || challenge.length === 0) return null;
    throw saslClientError(this.mechanism, 'the server sent a challenge, but PLAIN has none');
  }
}

class PlainServerSession implements SaslServerSession {
  private used = false;
  username: string | null = null;

  constructor(
    private readonly mechanism: string,
    private readonly ctx: SaslServerContext,
    private readonly unknownUserIterations: number,
  ) {}

  async step(response: Buffer | null): Promise<SaslStepResult> {
    let claimedUser: string | undefined;
    const fail = (reason: string) => new SaslAuthenticationError(`${this.mechanism}: ${reason}`, claimedUser);
    if (this.used) throw fail('client sent data after the exchange ended');
    this.used = true;
    if (response === null) throw fail('client sent no initial response');
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(response);
    } catch {
      throw fail('the response is not valid UTF-8');
    }
    const fields = text.split('\0');
    if (fields.length !== 3) throw fail('the response is not "authzid NUL authcid NUL password"');
    const [authzText, authcText, password] = fields as [string, string, string];
    if (authcText.length === 0) throw fail('empty authentication name');
    claimedUser = authcText;
    if (password.length === 0) throw fail('empty password');
    let authcid: string;
    let authzid: string | null;
    let preparedPassword: string;
    try {
      authcid = prepareString(authcText, 'user name', 'query');
      claimedUser = authcid;
      authzid = authzText.length > 0 ? prepareString(authzText, 'authorization name', 'query') : null;
      preparedPassword = prepareString(password, 'password', 'query');
    } catch (e) {
      if (e instanceof SaslPrepError) throw fail(e.message);
      throw e;
    }
    let verifier: ScramVerifier | null;
    try {
      verifier = await this.ctx.users.getVerifier(authcid, SCRAM_SHA_256.name);
    } catch (e) {
      throw fail(`user database lookup failed: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (verifier === null) {
      // The same PBKDF2 work as for a real user, so response time does not reveal unknown names.
      await hi(SCRAM_SHA_256, preparedPassword, randomBytes(DEFAULT_SALT_LENGTH), this.unknownUserIterations);
      throw fail('unknown-user: no such user in the user database');
    }
    if (!(await passwordMatchesVerifier(SCRAM_SHA_256, verifier, preparedPassword))) throw fail('wrong password');
    if (authzid !== null && authzid !== authcid) throw fail(`${authcid} may not act as ${authzid} (proxy authorization is not supported)`);
    this.username = authzid ?? authcid;
    return { done: true, data: null };
  }
}
