// SCRAM-SHA-256 (RFC 7677) without channel binding: the mechanism libvirtd offers by default.

import { ScramMechanism, type ScramMechanismOptions } from './scram-session.js';
import { SCRAM_SHA_256 } from './scram.js';

export class ScramSha256Mechanism extends ScramMechanism {
  readonly name = 'SCRAM-SHA-256';
  readonly priority = 200;
  readonly requiresChannelBinding = false;
  protected readonly plus = false;

  constructor(options: ScramMechanismOptions = {}) {
    super(SCRAM_SHA_256, options);
  }
}
