// Warnings caused by a client's bad input, limited per connection: a flood of junk packets costs
// a few lines and a count, not a line per packet (560 KB of stray replies once made 3.8 MB of log).

import { performance } from 'node:perf_hooks';

export interface WarnLogger {
  warn(obj: object, msg?: string): void;
}

export interface PeerFaultLogOptions {
  /** Lines written at once before the limit applies. */
  burst?: number;
  /** One more line allowed per this many ms. */
  refillMs?: number;
  /** Monotonic clock in ms (tests). */
  now?: () => number;
}

export class PeerFaultLog {
  private readonly burst: number;
  private readonly refillMs: number;
  private tokens: number;
  private refilledAt: number;
  private suppressed = 0;
  private readonly now: () => number;

  constructor(
    private readonly log: WarnLogger,
    opts: PeerFaultLogOptions = {},
  ) {
    this.burst = opts.burst ?? 10;
    this.refillMs = opts.refillMs ?? 6000;
    this.tokens = this.burst;
    this.now = opts.now ?? (() => performance.now());
    this.refilledAt = this.now();
  }

  /** Lines left out since the last one written. */
  get suppressedCount(): number {
    return this.suppressed;
  }

  /** Writes the line if the budget allows; the next line written says how many were left out. */
  warn(obj: Record<string, unknown>, msg: string): void {
    const now = this.now();
    const earned = Math.floor((now - this.refilledAt) / this.refillMs);
    if (earned > 0) {
      this.tokens = Math.min(this.burst, this.tokens + earned);
      this.refilledAt += earned * this.refillMs;
    }
    if (this.tokens < 1) {
      this.suppressed++;
      return;
    }
    this.tokens--;
    if (this.suppressed > 0) {
      obj.suppressed = this.suppressed;
      this.suppressed = 0;
    }
    this.log.warn(obj, msg);
  }

  /** When the connection ends: one line with the count of lines left out, if any. */
  flush(): void {
    if (this.suppressed === 0) return;
    this.log.warn(
      { event: 'protocol.error.suppressed', count: this.suppressed },
      'further malformed input from this client was not logged line by line',
    );
    this.suppressed = 0;
  }
}
