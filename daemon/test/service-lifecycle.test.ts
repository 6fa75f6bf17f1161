// sd_notify messages and --timeout's idle clock, with a stand-in socket and client count.

import test from 'ava';
import { createServiceNotifier } from '../src/systemd/notify.js';
import { watchIdleTimeout, type ClientCountSource } from '../src/service/idle-timeout.js';

test('notifications: READY with MAINPID and a one-line STATUS, RELOADING with a clock, STOPPING', (t) => {
  const sent: [string, string][] = [];
  const notifier = createServiceNotifier({
    env: { NOTIFY_SOCKET: '@/test/notify' },
    send: (path, data) => sent.push([path, data.toString('utf8')]),
  });
  t.true(notifier.enabled);
  notifier.ready('serving 2 listener(s)\nINJECTED=1');
  notifier.reloading();
  notifier.stopping();
  t.deepEqual(sent[0], ['@/test/notify', `READY=1\nMAINPID=${process.pid}\nSTATUS=serving 2 listener(s) INJECTED=1`]);
  t.regex(sent[1]![1], /^RELOADING=1\nMONOTONIC_USEC=\d+$/);
  t.deepEqual(sent[2], ['@/test/notify', 'STOPPING=1']);
});

test('no NOTIFY_SOCKET: nothing is sent; a failed send is reported, never thrown', (t) => {
  let calls = 0;
  const off = createServiceNotifier({ env: {}, send: () => calls++ });
  off.ready();
  off.stopping();
  t.false(off.enabled);
  t.is(calls, 0);
  const errors: string[] = [];
  const failing = createServiceNotifier({
    env: { NOTIFY_SOCKET: '/nonexistent/notify' },
    send: () => {
      throw new Error('sendmsg: No such file or directory');
    },
    onError: (message, e) => errors.push(`${message}: ${e.message}`),
  });
  t.notThrows(() => failing.ready());
  t.deepEqual(errors, ['READY=1: sendmsg: No such file or directory']);
});

class FakeClients implements ClientCountSource {
  clientCount = 0;
  private readonly listeners = new Set<(count: number) => void>();
  onClientCountChange(listener: (count: number) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  set(count: number): void {
    this.clientCount = count;
    for (const l of this.listeners) l(count);
  }
}

test('--timeout: fires once after the idle period, restarted by every client that comes and goes', async (t) => {
  const clients = new FakeClients();
  const started = Date.now();
  let fired = 0;
  const idle = new Promise<number>((resolve) =>
    watchIdleTimeout(clients, 0.3, () => {
      fired++;
      resolve(Date.now());
    }),
  );
  clients.set(1);
  // While a client is connected, nothing fires however long it stays.
  await new Promise((r) => setTimeout(r, 450));
  t.is(fired, 0);
  const leftAt = Date.now();
  clients.set(0);
  const firedAt = await idle;
  t.true(firedAt - leftAt >= 290, `fired ${firedAt - leftAt} ms after the last client left`);
  t.true(firedAt - started >= 700);
  clients.set(1);
  clients.set(0);
  await new Promise((r) => setTimeout(r, 400));
  t.is(fired, 1, 'fires once, then stops watching');
});

test('--timeout: cancelling stops the clock', async (t) => {
  const clients = new FakeClients();
  let fired = false;
  const cancel = watchIdleTimeout(clients, 0.1, () => (fired = true));
  cancel();
  await new Promise((r) => setTimeout(r, 250));
  t.false(fired);
});
