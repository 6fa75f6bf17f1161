// Slows password guessing without letting anyone lock a user out. Failures are counted per user
// name AND source (unix peer uid, TCP address — an IPv6 /64 —, TLS client certificate): an
// attacker's failures delay and finally refuse that user only from the attacker's own source,
// while the right password from elsewhere goes through at once.
//
// Memory is bounded, and no one can make us forget a live record: records go only when their
// window has passed. Names beyond a source's quota share one record per source, and sources
// beyond the table's size share one record (which delays, but never refuses), so a flood of
// invented names or addresses slows the flooder and erases nothing.

import { isIPv4, isIPv6 } from 'node:net';
import type { TransportInfo } from '@virtauth/core';

export interface ThrottleClock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

export const realClock: ThrottleClock = {
  now: () => performance.now(),
  sleep: (ms) => (ms > 0 ? new Promise((resolve) => setTimeout(resolve, ms)) : Promise.resolve()),
};

export interface FailureThrottleOptions {
  /** Failures of one user name from one source within the window before that pair is refused. */
  maxFailures: number;
  /** How long a failure is remembered after the last one of its record (ms). */
  windowMs: number;
  /** The first failure's delay; doubled per further failure. */
  baseDelayMs: number;
  /** Cap on any one delay; default 32 times the base, at most 8 s. */
  maxDelayMs?: number;
  /** (user, source) records kept at most; default 10,000. */
  maxRecords?: number;
  /** Names with a record of their own per source; further names share the source's record. */
  maxNamesPerSource?: number;
  clock?: ThrottleClock;
}

interface FailureRecord {
  failures: number;
  lastFailure: number;
  /** Answers for this record wait until then: concurrent attempts are served one delay apart. */
  notBefore: number;
}

interface SourceRecord {
  /** Names from this source with a record of their own. */
  names: number;
  /** Failures of every other name from this source, and of failures that name no user. */
  others: FailureRecord;
  lastFailure: number;
}

const fresh = (): FailureRecord => ({ failures: 0, lastFailure: -Infinity, notBefore: -Infinity });

export class FailureThrottle {
  private readonly pairs = new Map<string, FailureRecord>();
  private readonly sources = new Map<string, SourceRecord>();
  /** Shared by sources that found the table full: it delays but never refuses. */
  private readonly overflow = fresh();
  private readonly maxDelayMs: number;
  private readonly maxRecords: number;
  private readonly maxNamesPerSource: number;
  readonly clock: ThrottleClock;

  constructor(private readonly opts: FailureThrottleOptions) {
    this.maxDelayMs = opts.maxDelayMs ?? Math.min(8000, opts.baseDelayMs * 32);
    this.maxRecords = opts.maxRecords ?? 10_000;
    this.maxNamesPerSource = opts.maxNamesPerSource ?? 32;
    this.clock = opts.clock ?? realClock;
  }

  /** Records tracked: (user, source) pairs and sources. */
  get size(): { pairs: number; sources: number } {
    return { pairs: this.pairs.size, sources: this.sources.size };
  }

  /** Whether `user` from `source` has failed too often lately to be let in at all. */
  isRefused(source: string, user: string): boolean {
    const now = this.clock.now();
    const rec = this.governing(source, user, now);
    return rec !== undefined && rec !== this.overflow && this.live(rec, now) && rec.failures >= this.opts.maxFailures;
  }

  /** How long an answer for `user` from `source` must wait (ms): failures from there delay it. */
  waitFor(source: string, user: string): number {
    const now = this.clock.now();
    const rec = this.governing(source, user, now);
    return rec ? Math.max(0, rec.notBefore - now) : 0;
  }

  /**
   * Records a failure (user undefined when none was named) and returns how long to wait before
   * answering it. `connectionFailures` doubles the delay too, as before per connection.
   */
  recordFailure(source: string, user: string | undefined, connectionFailures: number): number {
    const now = this.clock.now();
    this.prune(now);
    const rec = this.recordToCharge(source, user, now);
    rec.failures = this.live(rec, now) ? rec.failures + 1 : 1;
    rec.lastFailure = now;
    const doublings = Math.max(rec.failures, connectionFailures) - 1;
    const delay = Math.min(this.opts.baseDelayMs * 2 ** Math.min(doublings, 30), this.maxDelayMs);
    rec.notBefore = Math.min(Math.max(now, rec.notBefore) + delay, now + this.maxDelayMs);
    return rec.notBefore - now;
  }

  private live(rec: FailureRecord, now: number): boolean {
    return now - rec.lastFailure < this.opts.windowMs;
  }

  /** The record that applies to a pair: its own, else its source's shared one, else the table's. */
  private governing(source: string, user: string, now: number): FailureRecord | undefined {
    const own = this.pairs.get(pairKey(source, user));
    if (own) return own;
    const src = this.sources.get(source);
    if (src) return src.others;
    return this.live(this.overflow, now) ? this.overflow : undefined;
  }

  private recordToCharge(source: string, user: string | undefined, now: number): FailureRecord {
    const key = user === undefined ? undefined : pairKey(source, user);
    const own = key === undefined ? undefined : this.pairs.get(key);
    let src = this.sources.get(source);
    if (!src) {
      if (this.sources.size >= this.maxRecords) return this.overflow;
      src = { names: 0, others: fresh(), lastFailure: now };
    }
    // Re-inserted at the end: both maps stay in order of last failure, oldest first.
    this.sources.delete(source);
    src.lastFailure = now;
    this.sources.set(source, src);
    if (own) {
      this.pairs.delete(key!);
      this.pairs.set(key!, own);
      return own;
    }
    if (key === undefined || src.names >= this.maxNamesPerSource || this.pairs.size >= this.maxRecords) return src.others;
    const rec = fresh();
    this.pairs.set(key, rec);
    src.names++;
    return rec;
  }

  /** Drops records whose window has passed (only those: a live record is never evicted). */
  private prune(now: number): void {
    for (const [key, rec] of this.pairs) {
      if (this.live(rec, now)) break;
      this.pairs.delete(key);
      const src = this.sources.get(sourceOfKey(key));
      if (src) src.names--;
    }
    for (const [source, src] of this.sources) {
      if (now - src.lastFailure < this.opts.windowMs) break;
      this.sources.delete(source);
    }
  }
}

function pairKey(source: string, user: string): string {
  return `${source}\n${user}`;
}

function sourceOfKey(key: string): string {
  return key.slice(0, key.indexOf('\n'));
}

/**
 * Where a login attempt comes from, as the throttle counts it: the TLS client certificate, the
 * unix peer's uid, or the TCP address (an IPv6 /64, what one host usually holds).
 */
export function failureSource(transport: TransportInfo): string {
  const cert = transport.tls?.getPeerX509Certificate?.();
  if (cert) return `cert:${cert.fingerprint256}`;
  if (transport.kind === 'unix') return transport.peer ? `uid:${transport.peer.uid}` : 'unix';
  const remote = transport.remoteAddress ?? '';
  const cut = remote.lastIndexOf(';');
  return `ip:${addressNetwork(cut < 0 ? remote : remote.slice(0, cut))}`;
}

/** An IPv4 address as is (IPv4-mapped IPv6 too); an IPv6 address as its /64. */
export function addressNetwork(address: string): string {
  const bare = address.replace(/%.*$/, '');
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(bare);
  if (mapped) return mapped[1]!;
  if (isIPv4(bare) || !isIPv6(bare)) return bare;
  const [head = '', tail] = bare.split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups =
    tail === undefined ? headGroups : [...headGroups, ...Array<string>(8 - headGroups.length - tailGroups.length).fill('0'), ...tailGroups];
  return `${groups
    .slice(0, 4)
    .map((g) => parseInt(g, 16).toString(16))
    .join(':')}::/64`;
}
