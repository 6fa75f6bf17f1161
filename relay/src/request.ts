// One relayed request as both halves of the relay handle it: what it asks, its cancellation,
// and the handler that answers it (the client's policy and prompts, or a daemon forwarding it to
// its own client).

import type { Credential, OriginHop, RelayVia, VirError } from '@virtauth/core';

export interface RelayedCredentialRequest {
  /** auth.conf service and host the credentials are for. */
  service: string;
  host: string;
  /** From the hop nearest the driver outwards. */
  origin: OriginHop[];
  credentials: Credential[];
  /** Absolute time (ms since the epoch) after which no answer is taken. */
  deadline: number;
  /** The connection it arrived on (set by the client end of the relay). */
  via?: RelayVia | undefined;
}

/**
 * One relayed request's cancellation, shared by the connection that received the request (it
 * cancels when the server withdraws the request, the connection closes or the open finishes) and
 * the handler (it cancels when it gives up first, e.g. its deadline, while a prompt is still up).
 * The AbortSignal a callback sees is made only when someone asks for it: most requests are
 * answered without ever needing one, and making a signal costs more than the rest of a request.
 */
export class RelayCancellation {
  private controller: AbortController | undefined;
  private cancelReason: VirError | undefined;
  private listeners: ((reason: VirError) => void)[] | undefined;

  get cancelled(): boolean {
    return this.cancelReason !== undefined;
  }

  get reason(): VirError | undefined {
    return this.cancelReason;
  }

  /** Aborted with the cancellation's reason; already aborted when asked for after the fact. */
  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.cancelReason) this.controller.abort(this.cancelReason);
    }
    return this.controller.signal;
  }

  /** The first reason wins; later calls change nothing. */
  cancel(reason: VirError): void {
    if (this.cancelReason) return;
    this.cancelReason = reason;
    this.controller?.abort(reason);
    const listeners = this.listeners;
    this.listeners = undefined;
    if (listeners) for (const listener of listeners) listener(reason);
  }

  /** Calls `listener` once on cancellation (at once if already cancelled); returns its removal. */
  onCancel(listener: (reason: VirError) => void): () => void {
    if (this.cancelReason) {
      listener(this.cancelReason);
      return () => {};
    }
    (this.listeners ??= []).push(listener);
    return () => {
      const i = this.listeners?.indexOf(listener) ?? -1;
      if (i >= 0) this.listeners!.splice(i, 1);
    };
  }
}

/**
 * Answers one relayed request: fills each credential's result, then calls `done` once, with null
 * or with the VirError the request ended in. A callback rather than a promise, so an answer
 * known at once (auth.conf, a callback that answers synchronously) goes back within the turn
 * that received the request.
 */
export type RelayHandler = (req: RelayedCredentialRequest, cancel: RelayCancellation, done: (error: VirError | null) => void) => void;

/** Runs a relay handler as a promise: resolves when answered, rejects with the error it ended in. */
export function runRelayHandler(handle: RelayHandler, req: RelayedCredentialRequest, cancel: RelayCancellation): Promise<void> {
  return new Promise<void>((resolve, reject) => handle(req, cancel, (error) => (error ? reject(error) : resolve())));
}

/** What a connection that may receive relayed requests declares, and who answers them. */
export interface RelayClientConfig {
  credTypes: readonly number[];
  personPresent: boolean;
  /** How long the client will wait for one request, in ms. */
  timeoutMs: number;
  maxRequests: number;
  handle: RelayHandler;
}

/** "xenapi on xen1.example via virtauthd@hostB": who asks, for messages and prompts. */
export function describeRequester(req: Pick<RelayedCredentialRequest, 'origin' | 'host'>): string {
  const [first, ...rest] = req.origin;
  if (!first) return `a driver for ${req.host}`;
  return [`${first.driver} on ${req.host}`, `via ${first.daemon}`, ...rest.map((h) => `via ${h.daemon}`)].join(' ');
}
