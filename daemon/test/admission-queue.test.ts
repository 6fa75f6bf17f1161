// The admission queue on its own: max_clients, max_anonymous_clients and max_queued_clients,
// first come first served, and live limit changes, with unconnected sockets as connections.

import test from 'ava';
import net from 'node:net';
import { once } from 'node:events';
import { AuthType, ErrorCode, VirError, type TransportKind } from '@virtauth/core';
import { AdmissionQueue, type AcceptedConnection, type ClientLimits } from '../src/server/admission-queue.js';
import type { ListenerSpec } from '../src/server/listeners.js';
import { createLogger } from '../src/index.js';
import { JsonSink, keepProcessAlive } from './helpers.js';

const rw: ListenerSpec = { kind: 'unix' as TransportKind, auth: AuthType.SASL, readOnly: false };
const open: ListenerSpec = { kind: 'unix' as TransportKind, auth: AuthType.NONE, readOnly: false };

/** A queue whose admitted clients are kept in `admitted`, in the order it admitted them. */
function queueWith(
  limits: ClientLimits,
  config: { maxQueuedClients: number; authTimeout: number } = { maxQueuedClients: 10, authTimeout: 0 },
) {
  const log = new JsonSink();
  const admitted: AcceptedConnection[] = [];
  let waitingChanges = 0;
  const queue = new AdmissionQueue({
    limits,
    config,
    log: createLogger(2, log),
    admittedCount: () => admitted.length,
    admit: (connection) => admitted.push(connection),
    onWaitingChange: () => waitingChanges++,
  });
  let accepted = 0;
  const offer = (spec: ListenerSpec): AcceptedConnection => {
    const connection = { socket: new net.Socket(), spec, acceptedAt: accepted++ };
    queue.offer(connection);
    return connection;
  };
  /** An admitted client goes, as a session's close reports it. */
  const leave = (connection: AcceptedConnection, wasUnauthenticated: boolean) => {
    admitted.splice(admitted.indexOf(connection), 1);
    queue.left(wasUnauthenticated);
  };
  return { queue, admitted, offer, leave, log, waitingChanges: () => waitingChanges };
}

test('max_clients: clients over it wait, and are admitted oldest first as places free up', (t) => {
  const { queue, admitted, offer, leave } = queueWith({ maxClients: 2, maxAnonymousClients: 0 });
  const [a, b, c, d] = [offer(open), offer(open), offer(open), offer(open)];
  t.deepEqual(admitted, [a, b]);
  t.is(queue.waitingCount, 2);
  t.true(c.socket.isPaused(), 'a waiting connection is not read');
  leave(b, false);
  t.deepEqual(admitted, [a, c], 'the oldest waiting one takes the place');
  leave(a, false);
  t.deepEqual(admitted, [c, d]);
  t.is(queue.waitingCount, 0);
});

test('a connection that needs no authentication does not overtake one waiting before it', (t) => {
  const { queue, admitted, offer } = queueWith({ maxClients: 5, maxAnonymousClients: 1 });
  const first = offer(rw);
  const heldBack = offer(rw);
  const later = offer(open);
  t.deepEqual(admitted, [first], 'only one unauthenticated client at a time');
  t.is(queue.waitingCount, 2);
  queue.authenticated();
  t.deepEqual(admitted, [first, heldBack, later], 'both follow, in their order, once the place is free');
  t.is(queue.unauthenticatedCount, 1);
});

test('max_anonymous_clients: a client leaving unauthenticated frees its place; one leaving after authenticating has freed it already', (t) => {
  const { queue, admitted, offer, leave } = queueWith({ maxClients: 5, maxAnonymousClients: 1 });
  const first = offer(rw);
  const second = offer(rw);
  t.is(queue.unauthenticatedCount, 1);
  leave(first, true);
  t.deepEqual(admitted, [second]);
  t.is(queue.unauthenticatedCount, 1);
  queue.authenticated();
  t.is(queue.unauthenticatedCount, 0);
  leave(second, false);
  t.is(queue.unauthenticatedCount, 0, 'never counted twice');
});

test('max_queued_clients: one more than may wait is closed at once and logged; the waiting ones stay', async (t) => {
  const { queue, offer, log } = queueWith({ maxClients: 1, maxAnonymousClients: 0 }, { maxQueuedClients: 1, authTimeout: 0 });
  offer(open);
  const waiting = offer(open);
  const refused = offer(open);
  t.true(refused.socket.destroyed);
  t.false(waiting.socket.destroyed);
  t.is(queue.waitingCount, 1);
  t.deepEqual(
    log.events('client.refused').map((r) => r.reason),
    ['queue full'],
  );
  t.is(log.events('client.waiting').length, 1);
});

test('a waiting connection that closes leaves the queue and is never admitted', async (t) => {
  const { queue, admitted, offer, leave, waitingChanges } = queueWith({ maxClients: 1, maxAnonymousClients: 0 });
  const first = offer(open);
  const gone = offer(open);
  const next = offer(open);
  t.is(waitingChanges(), 2);
  gone.socket.destroy();
  await once(gone.socket, 'close');
  t.is(queue.waitingCount, 1);
  t.is(waitingChanges(), 3, 'its leaving changes the count');
  leave(first, false);
  t.deepEqual(admitted, [next]);
});

test('setLimits: raising admits waiting clients at once, lowering disconnects no one, and limits out of order are refused', (t) => {
  const { queue, admitted, offer, log } = queueWith({ maxClients: 1, maxAnonymousClients: 1 });
  const [a, b, c] = [offer(open), offer(open), offer(open)];
  queue.setLimits({ maxClients: 3 });
  t.deepEqual(admitted, [a, b, c]);
  queue.setLimits({ maxClients: 1 });
  t.is(admitted.length, 3, 'clients over a lowered limit stay');
  t.true(queue.currentLimits().maxClients === 1);
  const d = offer(open);
  t.is(queue.waitingCount, 1);
  t.false(admitted.includes(d));
  const e = t.throws(() => queue.setLimits({ maxAnonymousClients: 2 }), { instanceOf: VirError });
  t.is(e?.code, ErrorCode.INVALID_ARG);
  t.regex(e?.message ?? '', /must not be less than the overall maximum number of clients/);
  t.deepEqual(queue.currentLimits(), { maxClients: 1, maxAnonymousClients: 1 }, 'a refused change changes nothing');
  t.is(log.events('limits.changed').length, 2);
});

test('close: every waiting connection is closed and none is admitted afterwards', (t) => {
  const { queue, admitted, offer, leave } = queueWith({ maxClients: 1, maxAnonymousClients: 0 });
  const first = offer(open);
  const waiting = offer(open);
  queue.close();
  t.true(waiting.socket.destroyed);
  leave(first, false);
  t.deepEqual(admitted, []);
  const late = offer(open);
  t.true(late.socket.destroyed, 'a connection offered after close is closed');
  t.is(queue.waitingCount, 0);
});

test('auth_timeout closes a queued client that must authenticate; one that needs none waits on', async (t) => {
  const { queue, offer, log } = queueWith({ maxClients: 1, maxAnonymousClients: 0 }, { maxQueuedClients: 10, authTimeout: 0.05 });
  offer(open);
  const mustAuthenticate = offer(rw);
  const needsNone = offer(open);
  keepProcessAlive(t);
  await once(mustAuthenticate.socket, 'close');
  t.is(queue.waitingCount, 1);
  t.false(needsNone.socket.destroyed);
  t.deepEqual(
    log.events('client.auth_timeout').map((r) => r.queued),
    [true],
  );
});
