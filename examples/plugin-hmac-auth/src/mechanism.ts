// SASL mechanism HMAC-SHA-256: runs inside libvirt's AUTH_SASL_* procedures, so the daemon's SASL
// provider offers it (sasl_mech_list), applies its allow list and throttles its failures.
//   client -> user name;  server -> 32-byte nonce;  client -> HMAC(key, label, nonce, user)

import { randomBytes } from 'node:crypto';
import {
  SaslAuthenticationError,
  type SaslClientContext,
  type SaslClientSession,
  type SaslMechanism,
  type SaslServerSession,
  type SaslStepResult,
} from '@virtauth/core';
import { NONCE_BYTES, clientError, isUserName, mac, requestKey, signedMessage, type KeyStore } from './keys.js';

export const HMAC_MECHANISM = 'HMAC-SHA-256';
const LABEL = 'virtauth-plugin-hmac sasl';

export class HmacSaslMechanism implements SaslMechanism {
  readonly name = HMAC_MECHANISM;
  readonly priority: number;
  readonly requiresSecureChannel = true;
  readonly requiresChannelBinding = false;

  /** Without keys the mechanism only serves clients (an application's container). */
  constructor(private readonly keys: KeyStore | null) {
    // A client prefers it to SCRAM-SHA-256 (200), not to SCRAM-SHA-256-PLUS (300). A daemon
    // that holds keys to accept proofs never picks it for its own outgoing connections.
    this.priority = keys ? 0 : 250;
  }

  createClient(ctx: SaslClientContext): SaslClientSession {
    return new HmacClientSession(ctx);
  }

  createServer(): SaslServerSession {
    if (!this.keys) throw new SaslAuthenticationError(`${HMAC_MECHANISM}: this process has no hmac_key_file`);
    return new HmacServerSession(this.keys);
  }
}

class HmacClientSession implements SaslClientSession {
  private credentials: { user: string; key: Buffer } | null = null;
  private answered = false;

  constructor(private readonly ctx: SaslClientContext) {}

  get complete(): boolean {
    return this.answered;
  }

  async start(): Promise<Buffer> {
    if (!this.ctx.transport.secure) throw clientError(`${HMAC_MECHANISM} needs a secure channel`);
    this.credentials = await requestKey(this.ctx.requestCredentials, this.ctx.service, this.ctx.host, this.ctx.signal);
    return Buffer.from(this.credentials.user, 'utf8');
  }

  async step(challenge: Buffer | null): Promise<Buffer> {
    if (!this.credentials || this.answered) throw clientError(`${HMAC_MECHANISM}: unexpected server message`);
    if (challenge === null || challenge.length !== NONCE_BYTES)
      throw clientError(`${HMAC_MECHANISM}: the server's nonce is not ${NONCE_BYTES} bytes`);
    this.answered = true;
    return mac(this.credentials.key, signedMessage(LABEL, challenge, this.credentials.user));
  }
}

class HmacServerSession implements SaslServerSession {
  private claimed: string | null = null;
  private nonce: Buffer | null = null;
  private verified: string | null = null;

  constructor(private readonly keys: KeyStore) {}

  get username(): string | null {
    return this.verified;
  }

  async step(response: Buffer | null): Promise<SaslStepResult> {
    if (this.verified !== null) throw new SaslAuthenticationError(`${HMAC_MECHANISM}: message after success`);
    if (this.nonce === null) {
      const user = response?.toString('utf8') ?? '';
      // The reason is logged: only a name that passed the check is quoted in it.
      if (!isUserName(user)) throw new SaslAuthenticationError(`${HMAC_MECHANISM}: malformed user name`);
      this.claimed = user;
      this.nonce = randomBytes(NONCE_BYTES);
      return { done: false, data: this.nonce };
    }
    const user = this.claimed!;
    if (!response || !this.keys.verify(user, signedMessage(LABEL, this.nonce, user), response)) {
      throw new SaslAuthenticationError(`${HMAC_MECHANISM}: wrong key or unknown user`, user);
    }
    this.verified = user;
    return { done: true, data: null };
  }
}
