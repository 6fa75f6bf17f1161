// max_clients, max_anonymous_clients and max_queued_clients: which accepted connections become
// clients now, which wait unread (as in libvirtd's listen backlog), and which are refused.

import type net from 'node:net';
import type { Logger } from 'pino';
import { AuthType, ErrorCode, ErrorDomain, VirError, type TransportInfo } from '@virtauth/core';
import type { DaemonConfig } from '../config.js';
import type { ListenerSpec } from './listeners.js';

/** The admission limits an administrator can change while the daemon runs (virt-admin srv-clients-set). */
export interface ClientLimits {
  maxClients: number;
  maxAnonymousClients: number;
}

/** libvirt's refusal of limits where unauthenticated clients could outnumber all clients. */
export function clientLimitsOrderError(): VirError {
  // libvirt's text, word for word (its two halves are the wrong way round there too).
  return new VirError({
    code: ErrorCode.INVALID_ARG,
    domain: ErrorDomain.NONE,
    detail: 'The overall maximum number of clients waiting for authentication must not be less than the overall maximum number of clients',
  });
}

/** A connection accepted on a listener, and what was learnt about it at accept. */
export interface AcceptedConnection {
  socket: net.Socket;
  spec: ListenerSpec;
  acceptedAt: number;
  /** The client certificate's subject, on a TLS listener. */
  tlsDn?: string;
  /** The unix peer's credentials, read at accept. */
  peer?: TransportInfo['peer'];
}

export interface AdmissionQueueOptions {
  limits: ClientLimits;
  /** Read at each use: max_queued_clients and auth_timeout. */
  config: Pick<DaemonConfig, 'maxQueuedClients' | 'authTimeout'>;
  log: Logger;
  /** Clients admitted and not gone yet. */
  admittedCount: () => number;
  /** Makes an admitted connection a client; by the time it returns, admittedCount() counts it. */
  admit: (connection: AcceptedConnection) => void;
  /** Called when a connection starts or stops waiting without being admitted. */
  onWaitingChange: () => void;
}

interface Waiting {
  connection: AcceptedConnection;
  /** auth_timeout running for a connection that must authenticate once admitted. */
  timer?: NodeJS.Timeout;
}

export class AdmissionQueue {
  /** Accepted sockets left unread until the limits admit them, oldest first. */
  private readonly waiting: Waiting[] = [];
  private unauthenticated = 0;
  private readonly limits: ClientLimits;
  private closed = false;

  constructor(private readonly opts: AdmissionQueueOptions) {
    this.limits = { ...opts.limits };
  }

  get waitingCount(): number {
    return this.waiting.length;
  }

  /** Clients admitted that have not authenticated yet. */
  get unauthenticatedCount(): number {
    return this.unauthenticated;
  }

  currentLimits(): Readonly<ClientLimits> {
    return { ...this.limits };
  }

  /**
   * Changes the limits at once. Lowering them disconnects no one: clients beyond the new limit
   * stay, and new ones wait until enough have gone. Raising them admits waiting ones.
   */
  setLimits(change: Partial<ClientLimits>): void {
    const next = { ...this.limits, ...change };
    if (next.maxClients < next.maxAnonymousClients) throw clientLimitsOrderError();
    Object.assign(this.limits, next);
    this.opts.log.info(
      { event: 'limits.changed', maxClients: next.maxClients, maxAnonymousClients: next.maxAnonymousClients },
      'client limits changed',
    );
    this.admitWaiting();
  }

  /**
   * A newly accepted connection: admitted now if the limits allow and no one waits before it,
   * else it waits unread, or is closed when max_queued_clients already wait. The limits are read
   * live, so an administrator's change applies at once.
   */
  offer(connection: AcceptedConnection): void {
    if (this.closed) {
      connection.socket.destroy();
      return;
    }
    if (this.waiting.length === 0 && this.admits(connection.spec)) {
      this.start(connection);
      return;
    }
    const { socket, spec } = connection;
    if (this.waiting.length >= this.opts.config.maxQueuedClients) {
      this.opts.log.warn({ event: 'client.refused', reason: 'queue full' }, 'too many clients waiting to authenticate');
      socket.destroy();
      return;
    }
    const entry: Waiting = { connection };
    this.waiting.push(entry);
    this.opts.onWaitingChange();
    socket.pause();
    // A queued client's auth_timeout runs from accept: waiting in the queue counts too. One that
    // needs no authentication waits as long as libvirtd's backlog would keep it.
    const authTimeout = this.opts.config.authTimeout;
    if (spec.auth !== AuthType.NONE && authTimeout > 0) {
      entry.timer = setTimeout(() => {
        this.opts.log.warn(
          { event: 'client.auth_timeout', seconds: authTimeout, queued: true },
          'client waited in the queue longer than auth_timeout',
        );
        socket.destroy();
      }, authTimeout * 1000);
      entry.timer.unref();
    }
    socket.once('close', () => {
      clearTimeout(entry.timer);
      const i = this.waiting.indexOf(entry);
      if (i >= 0) {
        this.waiting.splice(i, 1);
        this.opts.onWaitingChange();
      }
    });
    this.opts.log.info(
      { event: 'client.waiting', clients: this.opts.admittedCount(), maxClients: this.limits.maxClients, waiting: this.waiting.length },
      'client limit reached: the connection waits',
    );
  }

  /** An admitted client has authenticated: its unauthenticated place is free. */
  authenticated(): void {
    this.unauthenticated--;
    this.admitWaiting();
  }

  /** An admitted client has gone, still unauthenticated or not. */
  left(wasUnauthenticated: boolean): void {
    if (wasUnauthenticated) this.unauthenticated--;
    this.admitWaiting();
  }

  /** Closes every waiting connection and admits no more. */
  close(): void {
    this.closed = true;
    for (const { connection } of this.waiting.splice(0)) connection.socket.destroy();
  }

  private admits(spec: ListenerSpec): boolean {
    if (this.opts.admittedCount() >= this.limits.maxClients) return false;
    return spec.auth === AuthType.NONE || this.limits.maxAnonymousClients <= 0 || this.unauthenticated < this.limits.maxAnonymousClients;
  }

  private start(connection: AcceptedConnection): void {
    if (connection.spec.auth !== AuthType.NONE) this.unauthenticated++;
    this.opts.admit(connection);
  }

  /** Starts the waiting connections the limits now admit, oldest first. */
  private admitWaiting(): void {
    for (let next = this.waiting[0]; !this.closed && next && this.admits(next.connection.spec); next = this.waiting[0]) {
      this.waiting.shift();
      clearTimeout(next.timer);
      this.start(next.connection);
    }
  }
}
