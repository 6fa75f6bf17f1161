// uri_upstream_list: its parsing, and a gateway between two in-process daemons (the upstream an
// embedded virtauthd on the test driver), so the daemon's side runs without a libvirtd.

import 'reflect-metadata';
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, ErrorDomain, VirError, makeCredentialRequester, parseConf, parseUri, type DriverConnection } from '@virtauth/core';
import { RemoteDriver } from '@virtauth/drivers';
import { noneAuthProvider } from '@virtauth/providers';
import { buildConfig, createDaemon, createLogger, defaultConfig, parseUpstreamList, upstreamFor, type DaemonConfig } from '../src/index.js';

const confError = (t: import('ava').ExecutionContext, fn: () => unknown, pattern: RegExp) => {
  const e = t.throws(fn, { instanceOf: VirError });
  t.is(e?.code, ErrorCode.CONF_SYNTAX);
  t.is(e?.domain, ErrorDomain.CONF);
  t.regex(e?.message ?? '', pattern);
};

test('uri_upstream_list entries are CLIENT_URI=UPSTREAM_URI, split at the first "="', (t) => {
  const cfg = buildConfig(
    parseConf(
      'uri_upstream_list = [ "qemu:///system=qemu+unix:///system?socket=/run/libvirt/libvirt-sock", "test:///default = test+tls://h.example/default" ]\n',
    ),
  );
  t.deepEqual(cfg.uriUpstreamList, [
    { clientUri: 'qemu:///system', upstreamUri: 'qemu+unix:///system?socket=/run/libvirt/libvirt-sock' },
    { clientUri: 'test:///default', upstreamUri: 'test+tls://h.example/default' },
  ]);
  t.deepEqual(defaultConfig().uriUpstreamList, []);
  t.is(upstreamFor(cfg.uriUpstreamList, 'qemu:///system')?.upstreamUri, 'qemu+unix:///system?socket=/run/libvirt/libvirt-sock');
  // Only the name exactly as listed: no variant steers a client elsewhere.
  for (const other of ['qemu:///system?socket=/tmp/x', 'qemu:///session', 'QEMU:///system', 'qemu:///system/'])
    t.is(upstreamFor(cfg.uriUpstreamList, other), undefined, other);
});

test('uri_upstream_list refuses what it cannot route, naming the entry', (t) => {
  confError(t, () => parseUpstreamList('qemu:///system=qemu+unix:///system'), /expected a \[/);
  confError(t, () => parseUpstreamList(['qemu:///system']), /not CLIENT_URI=UPSTREAM_URI/);
  confError(t, () => parseUpstreamList(['=qemu+unix:///system']), /not CLIENT_URI=UPSTREAM_URI/);
  confError(t, () => parseUpstreamList(['qemu:///system=']), /not CLIENT_URI=UPSTREAM_URI/);
  confError(t, () => parseUpstreamList(['qemu+unix:///system=qemu+unix:///system']), /names a transport or host/);
  confError(t, () => parseUpstreamList(['qemu://h/system=qemu+unix:///system']), /names a transport or host/);
  confError(t, () => parseUpstreamList(['qemu:///system=qemu:///system']), /names no transport or host/);
  confError(t, () => parseUpstreamList(['not a uri=qemu+unix:///system']), /Unable to parse URI/);
  confError(t, () => parseUpstreamList(['qemu:///system=qemu+unix:///a', 'qemu:///system=qemu+unix:///b']), /listed twice/);
  confError(t, () => buildConfig(parseConf('uri_upstream_list = [ "x" ]\n'), 'virtauthd.conf'), /^.*virtauthd\.conf: uri_upstream_list/);
});

/** A client of our own, as virsh would open the URI (auth none). */
function open(uri: string): Promise<DriverConnection> {
  const driver = new RemoteDriver({ providers: () => [noneAuthProvider], keepalive: false });
  return driver.open(parseUri(uri), {
    requestCredentials: makeCredentialRequester([], null),
    auth: null,
    readOnly: false,
    processName: 'test',
  });
}

test('a gateway URI passes the client through to its upstream daemon; an unreachable upstream fails the open cleanly', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'va-gw-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const quiet = () => createLogger(4, { write: () => true } as unknown as NodeJS.WritableStream);
  const start = (name: string, config: Partial<DaemonConfig>) =>
    createDaemon({
      config: { ...defaultConfig(), ...config },
      logger: quiet(),
      listeners: [{ kind: 'unix', path: join(dir, name), auth: 0, readOnly: false }],
    });
  const upstream = await start('up', {});
  t.teardown(() => upstream.stop());
  const gateway = await start('gw', {
    uriUpstreamList: [
      { clientUri: 'gw:///default', upstreamUri: `test+unix:///default?socket=${join(dir, 'up')}` },
      { clientUri: 'down:///default', upstreamUri: `test+unix:///default?socket=${join(dir, 'nothing-here')}` },
    ],
  });
  t.teardown(() => gateway.stop());

  const conn = await open(`gw+unix:///default?socket=${join(dir, 'gw')}`);
  t.is(await conn.getHostname(), hostname());
  t.deepEqual(
    (await conn.listAllDomains(0)).map((d) => d.name),
    ['test'],
  );
  t.is(upstream.server.clientCount, 1, 'the upstream has its own connection for this client');
  await conn.close();

  const e = await t.throwsAsync(open(`down+unix:///default?socket=${join(dir, 'gw')}`), { instanceOf: VirError });
  t.is(e?.code, ErrorCode.SYSTEM_ERROR);
  t.regex(e?.message ?? '', /unable to connect to socket '.*nothing-here'/);
});

test("an extension's forwarded-call check sees each call before it leaves and can refuse it", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'va-gwc-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const quiet = createLogger(4, { write: () => true } as unknown as NodeJS.WritableStream);
  const upstream = await createDaemon({
    config: defaultConfig(),
    logger: quiet,
    listeners: [{ kind: 'unix', path: join(dir, 'up'), auth: 0, readOnly: false }],
  });
  t.teardown(() => upstream.stop());
  const checked: number[] = [];
  const gateway = await createDaemon({
    config: {
      ...defaultConfig(),
      uriUpstreamList: [{ clientUri: 'gw:///default', upstreamUri: `test+unix:///default?socket=${join(dir, 'up')}` }],
    },
    logger: quiet,
    listeners: [{ kind: 'unix', path: join(dir, 'gw'), auth: 0, readOnly: false }],
    extensions: [
      {
        forwardedCallCheck: () => (call) => {
          checked.push(call.proc);
          // CONNECT_GET_HOSTNAME (59) is refused; the rest pass.
          if (call.proc === 59)
            throw new VirError({ code: ErrorCode.ACCESS_DENIED, domain: ErrorDomain.ACCESS, detail: 'no hostname for you' });
        },
      },
    ],
  });
  t.teardown(() => gateway.stop());
  const conn = await open(`gw+unix:///default?socket=${join(dir, 'gw')}`);
  const e = await t.throwsAsync(conn.getHostname(), { instanceOf: VirError });
  t.deepEqual([e?.code, e?.domain, e?.message], [ErrorCode.ACCESS_DENIED, ErrorDomain.ACCESS, 'access denied: no hostname for you']);
  t.deepEqual(
    (await conn.listAllDomains(0)).map((d) => d.name),
    ['test'],
  );
  t.deepEqual(checked, [59, 273]);
  await conn.close();
});
