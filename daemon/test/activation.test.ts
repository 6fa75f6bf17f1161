// Socket activation with libvirt's semantics, on made-up descriptors: which listener each
// passed socket becomes, what the daemon still creates, and what it refuses.

import test from 'ava';
import { AuthType, VirError } from '@virtauth/core';
import type { SocketAddress } from '@virtauth/peercred';
import { defaultConfig, type DaemonConfig } from '../src/config.js';
import { planActivatedListeners, readInheritedSockets, type InheritedSocket } from '../src/systemd/activation.js';

const unix = (path: string): SocketAddress => ({ family: 'unix', path, stream: true, listening: true });
const inet = (port: number, address = '0.0.0.0'): SocketAddress => ({ family: 'inet', address, port, stream: true, listening: true });

function config(overrides: Partial<DaemonConfig> = {}): DaemonConfig {
  return { ...defaultConfig(), unixSockDir: '/run/virtauth', authUnixRw: 'polkit', authTcp: 'sasl', ...overrides };
}

/** What the config's scheme names map to once the providers are registered. */
const AUTH = { authUnixRw: AuthType.POLKIT, authUnixRo: AuthType.NONE, authTcp: AuthType.SASL, authTls: AuthType.NONE };

function env(values: Record<string, string>): NodeJS.ProcessEnv {
  return { PATH: '/usr/bin', ...values };
}

test('LISTEN_* for this process: one socket per descriptor from 3 on, names in order, variables cleared', (t) => {
  const e = env({ LISTEN_PID: '42', LISTEN_FDS: '2', LISTEN_FDNAMES: 'virtauthd.socket:virtauthd-ro.socket' });
  const addresses: Record<number, SocketAddress> = { 3: unix('/run/virtauth/virtauth-sock'), 4: unix('/run/virtauth/virtauth-sock-ro') };
  const sockets = readInheritedSockets(e, 42, (fd) => addresses[fd]!);
  t.deepEqual(
    sockets?.map((s) => [s.fd, s.name]),
    [
      [3, 'virtauthd.socket'],
      [4, 'virtauthd-ro.socket'],
    ],
  );
  t.is(e.LISTEN_PID, undefined);
  t.is(e.LISTEN_FDS, undefined);
  t.is(e.LISTEN_FDNAMES, undefined);
  t.is(e.PATH, '/usr/bin');
});

test('sockets meant for another process, none, or no LISTEN_PID: no activation (and still cleared)', (t) => {
  const never = () => {
    throw new Error('must not look at descriptors');
  };
  const cases: Record<string, string>[] = [
    { LISTEN_PID: '41', LISTEN_FDS: '1' },
    { LISTEN_PID: '42', LISTEN_FDS: '0' },
    { LISTEN_FDS: '1' },
    { LISTEN_PID: 'x42', LISTEN_FDS: '1' },
  ];
  for (const values of cases) {
    const e = env(values);
    t.is(readInheritedSockets(e, 42, never), null, JSON.stringify(values));
    t.is(e.LISTEN_FDS, undefined);
  }
});

test('malformed LISTEN_FDS, a name count that differs, or a descriptor that is no socket: clear errors', (t) => {
  const ok = () => unix('/run/virtauth/virtauth-sock');
  t.throws(() => readInheritedSockets(env({ LISTEN_PID: '42', LISTEN_FDS: '-1' }), 42, ok), {
    instanceOf: VirError,
    message: /socket activation: LISTEN_FDS='-1' is not a count/,
  });
  t.throws(() => readInheritedSockets(env({ LISTEN_PID: '42', LISTEN_FDS: '99999' }), 42, ok), { message: /LISTEN_FDS='99999'/ });
  t.throws(() => readInheritedSockets(env({ LISTEN_PID: '42', LISTEN_FDS: '2', LISTEN_FDNAMES: 'virtauthd.socket' }), 42, ok), {
    message: /LISTEN_FDNAMES names 1 socket\(s\) but LISTEN_FDS passes 2/,
  });
  const notSocket = () => {
    throw Object.assign(new Error('getsockname: Socket operation on non-socket'), { code: 'ENOTSOCK' });
  };
  t.throws(() => readInheritedSockets(env({ LISTEN_PID: '42', LISTEN_FDS: '1', LISTEN_FDNAMES: 'virtauthd.socket' }), 42, notSocket), {
    message: /descriptor 3 \(virtauthd\.socket\) is not a usable socket: getsockname: Socket operation on non-socket/,
  });
});

test('named sockets map onto the listeners; a unix socket not passed is created by the daemon itself', (t) => {
  const sockets: InheritedSocket[] = [
    { fd: 3, name: 'virtauthd.socket', address: unix('/run/virtauth/virtauth-sock') },
    { fd: 4, name: 'virtauthd-admin.socket', address: unix('/run/virtauth/virtauth-admin-sock') },
    { fd: 5, name: 'virtauthd-tcp.socket', address: inet(16509) },
    { fd: 6, name: 'virtauthd-tcp.socket', address: { family: 'inet6', address: '::', port: 16509, stream: true, listening: true } },
  ];
  const plan = planActivatedListeners(sockets, config({ listenTls: true }));
  t.deepEqual(plan.listeners(AUTH), [
    { kind: 'unix', path: '/run/virtauth/virtauth-sock', auth: AuthType.POLKIT, readOnly: false, fd: 3 },
    { kind: 'unix', path: '/run/virtauth/virtauth-sock-ro', auth: AuthType.NONE, readOnly: true, perms: 0o777 },
    { kind: 'tcp', host: '0.0.0.0', port: 16509, auth: AuthType.SASL, readOnly: false, fd: 5 },
    { kind: 'tcp', host: '::', port: 16509, auth: AuthType.SASL, readOnly: false, fd: 6 },
  ]);
  t.deepEqual(
    plan.admin.map((s) => s.fd),
    [4],
  );
  t.deepEqual(plan.ignored, ['listen_tls (no virtauthd-tls.socket was passed)']);
});

test('unnamed sockets (systemd-socket-activate without --fdname) are matched by address', (t) => {
  const cfg = config({ unixSockDir: '/tmp/x', tcpPort: 1650, tlsPort: 1651 });
  const plan = planActivatedListeners(
    [
      { fd: 3, name: null, address: unix('/tmp/x/virtauth-sock-ro') },
      { fd: 4, name: 'unknown', address: inet(1651, '127.0.0.1') },
    ],
    cfg,
  );
  t.deepEqual(
    plan.listeners(AUTH).map((l) => [l.kind, l.readOnly, l.fd]),
    [
      ['unix', false, undefined],
      ['unix', true, 3],
      ['tls', false, 4],
    ],
  );
});

test("a socket that is not virtauthd's, or of the wrong kind, is refused naming it", (t) => {
  const cfg = config();
  const refuse = (socket: InheritedSocket, message: RegExp) =>
    t.throws(() => planActivatedListeners([socket], cfg), { instanceOf: VirError, message });
  refuse(
    { fd: 3, name: 'virtqemud.socket', address: unix('/run/libvirt/virtqemud-sock') },
    /descriptor 3 'virtqemud\.socket' \(unix \/run\/libvirt\/virtqemud-sock\) is none of virtauthd's sockets \(expected one of virtauthd\.socket/,
  );
  refuse(
    { fd: 3, name: null, address: unix('/tmp/elsewhere') },
    /is none of virtauthd's sockets \(expected \/run\/virtauth\/virtauth-sock/,
  );
  refuse({ fd: 3, name: null, address: inet(22) }, /inet 0\.0\.0\.0:22\) is none of virtauthd's sockets/);
  refuse({ fd: 3, name: 'virtauthd.socket', address: inet(16509) }, /must be a unix socket for virtauthd\.socket/);
  refuse({ fd: 3, name: 'virtauthd-tls.socket', address: unix('/run/virtauth/x') }, /must be a TCP socket for virtauthd-tls\.socket/);
  refuse(
    { fd: 3, name: 'virtauthd.socket', address: { ...unix('/run/virtauth/virtauth-sock'), listening: false } },
    /is not a listening stream socket \(use ListenStream= in virtauthd\.socket\)/,
  );
  refuse(
    { fd: 3, name: 'virtauthd.socket', address: { ...unix('/run/virtauth/virtauth-sock'), stream: false } },
    /not a listening stream socket/,
  );
});
