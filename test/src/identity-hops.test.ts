// identity.hops: a virtauthd that passes its client on (gateway) names itself, and the daemons
// its client came through, to the next virtauthd (relay HOPS). That daemon's access drivers
// (cedar's context.hops) and audit records see the chain; a direct client has none. A peer that
// names hops at the wrong time, twice, or with names no daemon has, is refused.

import { hostname } from 'node:os';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import test from 'ava';
import {
  CredentialType,
  ErrorCode,
  ErrorDomain,
  REMOTE_PROGRAM,
  RELAY_PROGRAM,
  RELAY_PROTOCOL_VERSION,
  RelayProc,
  VirError,
  relayProtocol,
  remote,
  xdr,
  type RpcConnection,
} from '@virtauth/core';
import { parseUpstreamList } from '@virtauth/daemon';
import type { RemoteConnection } from '@virtauth/drivers';
import { openAuth } from 'virtauth';

import { scratchDir } from './gateway-support.js';
import { interopTest, runVirsh, setEnvUntilTeardown } from './peers/index.js';
import { TestVirtauthd } from './sasl-support.js';
import { rawClient, startVirtauthd } from './virtauthd-support.js';

const USER = 'alice';
const PASSWORD = 'alice-Hops-Pa55-7e';
const GATEWAY = `vt-gw@${hostname()}`;

/** Anything goes, but a domain is never stopped by a connection that came through the gateway. */
const POLICY = `
permit (principal, action, resource);
forbid (principal, action == Action::"domain.stop", resource) when { context.hops.contains("${GATEWAY}") };
`;

interopTest.serial(
  'hops: virsh and the virtauth client through a virtauthd gateway reach the next virtauthd with the gateway in identity.hops; cedar and audit see it',
  ['virsh'],
  async (t) => {
    const dir = await scratchDir(t, 'vhop');
    const policyFile = join(dir, 'policy.cedar');
    await writeFile(policyFile, POLICY);
    const authFile = join(dir, 'auth.conf');
    await writeFile(authFile, `[credentials-a]\nauthname=${USER}\npassword=${PASSWORD}\n[auth-libvirt-localhost]\ncredentials=a\n`, {
      mode: 0o600,
    });
    // The gateway runs in this process: it logs in to the inner daemon with this auth.conf.
    setEnvUntilTeardown(t, 'LIBVIRT_AUTH_FILE', authFile);
    const inner = await TestVirtauthd.start({
      users: { [USER]: PASSWORD },
      settings: {
        daemon_name: 'vt-inner',
        access_drivers: ['cedar'],
        access_cedar_policy_file: policyFile,
        access_audit: 'all',
      },
    });
    t.teardown(() => inner.stop());
    const gateway = await TestVirtauthd.start({
      users: { [USER]: PASSWORD },
      settings: { daemon_name: 'vt-gw', uri_upstream_list: [`test:///default=${inner.uri('unix')}`] },
    });
    t.teardown(() => gateway.stop());
    const env = { LIBVIRT_AUTH_FILE: authFile };

    const through = await runVirsh(['destroy test'], { uri: gateway.uri('unix'), env });
    t.not(through.code, 0);
    t.regex(through.stderr, /access denied/);
    const direct = await runVirsh(['destroy test'], { uri: inner.uri('unix'), env });
    t.is(direct.code, 0, direct.stderr);

    const stops = inner
      .events('access.denied')
      .concat(inner.events('access.allowed'))
      .filter((r) => r.permission === 'stop');
    t.deepEqual(
      stops.map((r) => [r.event, r.hops]),
      [
        ['access.denied', [GATEWAY]],
        ['access.allowed', null],
      ],
    );

    // virtauth's own client enables the relay on the gateway; the gateway names itself all the same.
    const conn = (await openAuth(gateway.uri('unix'), {
      credTypes: [CredentialType.AUTHNAME, CredentialType.PASSPHRASE],
      callback: (creds) => {
        for (const c of creds) c.result = c.type === CredentialType.AUTHNAME ? USER : PASSWORD;
      },
    })) as RemoteConnection;
    t.teardown(() => conn.close().catch(() => undefined));
    const { dom } = await conn.domainLookupByName({ name: 'test' });
    await conn.domainCreate({ dom }).catch(() => undefined);
    const refused = await t.throwsAsync(conn.domainDestroy({ dom }));
    t.like(refused, { code: ErrorCode.ACCESS_DENIED, domain: ErrorDomain.ACCESS });
    t.deepEqual(inner.events('access.denied').at(-1)?.hops, [GATEWAY]);
    t.deepEqual(
      inner.events('identity.hops').map((r) => r.hops),
      [[GATEWAY], [GATEWAY]],
    );
  },
);

function hopsCall(rpc: RpcConnection, hops: { daemon: string; driver: string }[]): Promise<void> {
  return rpc.call(RELAY_PROGRAM, RELAY_PROTOCOL_VERSION, RelayProc.HOPS, relayProtocol.relayHopsArgs, { hops }, xdr.xvoid);
}

function open(rpc: RpcConnection): Promise<void> {
  return rpc.call(REMOTE_PROGRAM, 1, 1, remote.connectOpenArgs, { name: 'test:///default', flags: 0 }, xdr.xvoid);
}

test('hops: refused when empty, with control characters or overlong names, twice, or after CONNECT_OPEN', async (t) => {
  const daemon = await startVirtauthd(t);
  const rpc = await rawClient(daemon.rwSocket);
  t.teardown(() => rpc.close(null));
  for (const [hops, message] of [
    [[], /at least the calling daemon/],
    [[{ daemon: 'gw\nforged: yes', driver: 'remote' }], /hop 1: the daemon name/],
    [
      [
        { daemon: 'gw', driver: '' },
        { daemon: '', driver: 'remote' },
      ],
      /hop 2: the daemon name/,
    ],
    [[{ daemon: 'x'.repeat(256), driver: 'remote' }], /hop 1: the daemon name/],
  ] as const) {
    const error = await t.throwsAsync(hopsCall(rpc, [...hops]));
    t.like(error, { code: ErrorCode.INVALID_ARG });
    t.regex(error!.message, message);
  }
  await hopsCall(rpc, [{ daemon: 'gw-1@h', driver: 'remote' }]);
  const again = await t.throwsAsync(hopsCall(rpc, [{ daemon: 'gw-2@h', driver: 'remote' }]));
  t.regex(again!.message, /named already/);
  await open(rpc);
  const rpc2 = await rawClient(daemon.rwSocket);
  t.teardown(() => rpc2.close(null));
  await open(rpc2);
  const late = await t.throwsAsync(hopsCall(rpc2, [{ daemon: 'gw-1@h', driver: 'remote' }]));
  t.like(late, { code: ErrorCode.OPERATION_INVALID });
  t.regex(late!.message, /before CONNECT_OPEN/);
  t.false(rpc.closed || rpc2.closed, 'a refused HOPS call ends nothing');
});

test('hops: a connection that came through 16 daemons is not passed on to a 17th (a loop of gateways ends)', async (t) => {
  const daemon = await startVirtauthd(t, {
    uriUpstreamList: parseUpstreamList(['test:///default=test+unix:///default?socket=/nonexistent']),
  });
  const rpc = await rawClient(daemon.rwSocket);
  t.teardown(() => rpc.close(null));
  await hopsCall(
    rpc,
    Array.from({ length: 16 }, (_, i) => ({ daemon: `gw-${i}@h`, driver: 'remote' })),
  );
  const error = (await t.throwsAsync(open(rpc))) as VirError;
  t.like(error, { code: ErrorCode.OPERATION_INVALID });
  t.regex(error.message, /more than 16 daemons/);
});
