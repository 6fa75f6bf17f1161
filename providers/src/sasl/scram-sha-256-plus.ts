// SCRAM-SHA-256-PLUS (RFC 7677 with RFC 5802 §6 channel binding): ties the authentication to the
// TLS connection it runs on, so a man in the middle terminating TLS cannot relay it.

import { ScramMechanism, type ScramMechanismOptions } from './scram-session.js';
import { SCRAM_SHA_256 } from './scram.js';

export class ScramSha256PlusMechanism extends ScramMechanism {
  readonly name = 'SCRAM-SHA-256-PLUS';
  /** Preferred over plain SCRAM-SHA-256 whenever both are offered. */
  readonly priority = 300;
  readonly requiresChannelBinding = true;
  protected readonly plus = true;

  constructor(options: ScramMechanismOptions = {}) {
    super(SCRAM_SHA_256, options);
  }
}
