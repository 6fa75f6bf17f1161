// The XenAPI driver against the XenAPI fixture: credentials, login, redirects, mapping, logout, abort.

import test from 'ava';
import {
  CredentialType,
  ErrorCode,
  ErrorDomain,
  LIBVIRT_API_VERSION,
  ListDomainsFlag,
  VirError,
  makeCredentialRequester,
  parseUri,
  type Credential,
  type CredentialRequester,
  type DriverConnection,
  type DriverOpenContext,
} from '@virtauth/core';
import { XenApiDriver } from '@virtauth/drivers';
import { selfSignedCertificate, startXenApiServer, type XenApiServer, type XenApiServerOptions } from './fixtures/xenapi-server.js';
import { whenEmitted } from './peers/util.js';

const PASSWORD = 'pool-secret';
const USERS = { root: PASSWORD, admin: 'admin-secret' };
const VM1_UUID = '6f8a1c2e-3b4d-4e5f-9a0b-1c2d3e4f5a6b';
const VM2_UUID = '7a9b2d3f-4c5e-4f60-8b1c-2d3e4f5a6b7c';

interface AskedCredential {
  type: number;
  prompt: string;
  challenge: string | null;
  defresult: string | null;
}
interface Asked {
  creds: AskedCredential[];
  service: string;
  host: string;
  signal: AbortSignal | undefined;
}

/** A requester that records every request and answers by type from `answers`. */
function recordingRequester(answers: Partial<Record<number, string>>): { requester: CredentialRequester; asked: Asked[] } {
  const asked: Asked[] = [];
  const requester: CredentialRequester = async (creds: Credential[], info) => {
    asked.push({
      creds: creds.map(({ type, prompt, challenge, defresult }) => ({ type, prompt, challenge, defresult })),
      service: info.service,
      host: info.host,
      signal: info.signal,
    });
    for (const c of creds) c.result = answers[c.type] ?? null;
  };
  return { requester, asked };
}

function context(requester: CredentialRequester, signal?: AbortSignal): DriverOpenContext {
  return { requestCredentials: requester, auth: null, readOnly: false, processName: 'virtauthd@test', ...(signal ? { signal } : {}) };
}

async function withServer(t: { teardown(fn: () => Promise<void>): void }, opts: Partial<XenApiServerOptions> = {}): Promise<XenApiServer> {
  const server = await startXenApiServer({ users: USERS, ...opts });
  t.teardown(() => server.close());
  return server;
}

/**
 * Two servers on one port of two loopback addresses (a pool member redirects to its master by
 * address only). The port the system chose for the first may be taken on the second address by
 * another process on a busy machine: then both try again on a new port.
 */
async function serversOnOnePort(
  t: { teardown(fn: () => Promise<void>): void },
  first: Partial<XenApiServerOptions> & { bindAddress: string },
  second: Partial<XenApiServerOptions> & { bindAddress: string },
): Promise<[XenApiServer, XenApiServer]> {
  for (let attempt = 1; ; attempt++) {
    const a = await startXenApiServer({ users: USERS, ...first });
    try {
      const b = await startXenApiServer({ users: USERS, ...second, port: a.port });
      t.teardown(() => a.close());
      t.teardown(() => b.close());
      return [a, b];
    } catch (e) {
      await a.close();
      if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt === 5) throw e;
    }
  }
}

async function openAsRoot(
  t: { teardown(fn: () => Promise<void>): void },
  server: XenApiServer,
  driver = new XenApiDriver(),
): Promise<DriverConnection> {
  const { requester } = recordingRequester({ [CredentialType.PASSPHRASE]: PASSWORD });
  const conn = await driver.open(parseUri(`xenapi://root@127.0.0.1:${server.port}/?scheme=http`), context(requester));
  t.teardown(() => conn.close());
  return conn;
}

const virError = (e: unknown): VirError => {
  if (!(e instanceof VirError)) throw new Error(`expected a VirError, got ${String(e)}`);
  return e;
};

test('the username from the URI: only the password is asked, naming that user and the host', async (t) => {
  const server = await withServer(t);
  const { requester, asked } = recordingRequester({ [CredentialType.PASSPHRASE]: PASSWORD });
  const uri = `xenapi://root@127.0.0.1:${server.port}/?scheme=http`;
  const conn = await new XenApiDriver().open(parseUri(uri), context(requester));
  t.teardown(() => conn.close());

  t.deepEqual(asked, [
    {
      creds: [{ type: CredentialType.PASSPHRASE, prompt: "Enter root's password for 127.0.0.1", challenge: '127.0.0.1', defresult: null }],
      service: 'xenapi',
      host: '127.0.0.1',
      signal: undefined,
    },
  ]);
  const [session] = [...server.sessions.values()];
  t.deepEqual(session, { username: 'root', originator: 'virtauthd@test' });
  t.is(conn.driverName, 'xenapi');
  t.is(await conn.getType(), 'XenAPI');
  t.is(await conn.getVersion(), 8_002_001n);
  t.is(await conn.getLibVersion(), LIBVIRT_API_VERSION);
  t.is(await conn.getHostname(), 'xen1.example');
  t.is(await conn.getUri(), uri);
  t.false(await conn.isSecure());
  t.false(await conn.supportsFeature(1));
  t.deepEqual(await conn.getNodeInfo(), {
    model: 'Intel(R) Xeon(R) CPU E5-2630 v4',
    memory: 33_554_432n,
    cpus: 8,
    mhz: 2194,
    nodes: 1,
    sockets: 2,
    cores: 4,
    threads: 1,
  });
});

test('no user in the URI: the username is asked first (default root), then the password for that user', async (t) => {
  const server = await withServer(t);
  const { requester, asked } = recordingRequester({ [CredentialType.AUTHNAME]: 'admin', [CredentialType.PASSPHRASE]: 'admin-secret' });
  const conn = await new XenApiDriver().open(parseUri(`xenapi://127.0.0.1:${server.port}/?scheme=http`), context(requester));
  t.teardown(() => conn.close());
  t.deepEqual(
    asked.map((a) => a.creds),
    [
      [{ type: CredentialType.AUTHNAME, prompt: 'Enter username for 127.0.0.1 [root]', challenge: '127.0.0.1', defresult: 'root' }],
      [{ type: CredentialType.PASSPHRASE, prompt: "Enter admin's password for 127.0.0.1", challenge: '127.0.0.1', defresult: null }],
    ],
  );
  t.true(asked.every((a) => a.service === 'xenapi' && a.host === '127.0.0.1'));
  t.is([...server.sessions.values()][0]?.username, 'admin');
});

test("through the credential pipeline, an empty username answer takes the callback's default root", async (t) => {
  const server = await withServer(t);
  const seen: string[] = [];
  const requester = makeCredentialRequester([], {
    credTypes: [CredentialType.AUTHNAME, CredentialType.PASSPHRASE],
    callback: (creds) => {
      for (const c of creds) {
        seen.push(c.prompt);
        // What virConnectAuthPtrDefault does with an empty line: the default, if any.
        c.result = c.type === CredentialType.PASSPHRASE ? PASSWORD : (c.defresult ?? '');
      }
    },
  });
  const conn = await new XenApiDriver().open(parseUri(`xenapi:///?server=127.0.0.1:${server.port}&scheme=http`), context(requester));
  t.teardown(() => conn.close());
  t.deepEqual(seen, ['Enter username for 127.0.0.1 [root]', "Enter root's password for 127.0.0.1"]);
  t.is([...server.sessions.values()][0]?.username, 'root');
});

test('a wrong password is AUTH_FAILED naming the user and host, never the password', async (t) => {
  const server = await withServer(t);
  const wrong = 'not-the-pool-secret';
  const { requester } = recordingRequester({ [CredentialType.PASSPHRASE]: wrong });
  const error = virError(
    await new XenApiDriver()
      .open(parseUri(`xenapi://root@127.0.0.1:${server.port}/?scheme=http`), context(requester))
      .catch((e: unknown) => e),
  );
  t.is(error.code, ErrorCode.AUTH_FAILED);
  t.is(error.domain, ErrorDomain.XENAPI);
  t.is(error.message, "authentication failed: XenAPI server 127.0.0.1 rejected the credentials of user 'root'");
  const everything = JSON.stringify({ message: error.message, str2: error.str2, cause: String(error.cause), stack: error.stack });
  t.false(everything.includes(wrong));
  t.is(server.sessions.size, 0);
});

test('unanswered credentials stop the open before any login', async (t) => {
  const server = await withServer(t);
  const { requester } = recordingRequester({});
  const error = virError(
    await new XenApiDriver()
      .open(parseUri(`xenapi://root@127.0.0.1:${server.port}/?scheme=http`), context(requester))
      .catch((e: unknown) => e),
  );
  t.is(error.code, ErrorCode.AUTH_FAILED);
  t.regex(error.message, /no password for user 'root' on XenAPI server 127\.0\.0\.1/);
  t.deepEqual(server.calls, []);
});

test('HOST_IS_SLAVE: the driver logs in on the pool master instead', async (t) => {
  const [master, member] = await serversOnOnePort(
    t,
    { bindAddress: '127.0.0.2', hosts: [{ nameLabel: 'xen0', hostname: 'xen-master.example' }] },
    { bindAddress: '127.0.0.1', slaveOf: '127.0.0.2' },
  );
  const conn = await openAsRoot(t, member);
  t.deepEqual(member.calls, ['session.login_with_password']);
  t.is(master.sessions.size, 1);
  t.is(await conn.getHostname(), 'xen-master.example');
  await conn.close();
  t.is(master.sessions.size, 0);
});

test('HOST_IS_SLAVE redirects are bounded: a loop fails after three', async (t) => {
  const [a, b] = await serversOnOnePort(
    t,
    { bindAddress: '127.0.0.1', slaveOf: '127.0.0.3' },
    { bindAddress: '127.0.0.3', slaveOf: '127.0.0.1' },
  );
  const { requester } = recordingRequester({ [CredentialType.PASSPHRASE]: PASSWORD });
  const error = virError(
    await new XenApiDriver().open(parseUri(`xenapi://root@127.0.0.1:${a.port}/?scheme=http`), context(requester)).catch((e: unknown) => e),
  );
  t.is(error.code, ErrorCode.OPERATION_FAILED);
  t.is(error.domain, ErrorDomain.XENAPI);
  t.regex(error.message, /is a pool member, not the pool master \(the master is 127\.0\.0\.[13]\)/);
  t.is(a.calls.length + b.calls.length, 4);
});

test('listAllDomains leaves out templates and dom0, and filters by the libvirt flags', async (t) => {
  const server = await withServer(t);
  const conn = await openAsRoot(t, server);
  const names = async (flags: number): Promise<string[]> => (await conn.listAllDomains(flags)).map((d) => d.name).sort();
  const all = await conn.listAllDomains(0);
  t.deepEqual(
    all.map((d) => ({ name: d.name, id: d.id, uuid: d.uuid.toString('hex') })).sort((x, y) => x.name.localeCompare(y.name)),
    [
      { name: 'vm1', id: 1, uuid: VM1_UUID.replace(/-/g, '') },
      { name: 'vm2', id: -1, uuid: VM2_UUID.replace(/-/g, '') },
    ],
  );
  t.deepEqual(await names(ListDomainsFlag.ACTIVE), ['vm1']);
  t.deepEqual(await names(ListDomainsFlag.INACTIVE), ['vm2']);
  t.deepEqual(await names(ListDomainsFlag.ACTIVE | ListDomainsFlag.INACTIVE), ['vm1', 'vm2']);
  t.deepEqual(await names(ListDomainsFlag.TRANSIENT), []);
  t.deepEqual(await names(ListDomainsFlag.SHUTOFF), ['vm2']);
  const bad = virError(await conn.listAllDomains(1 << 12).catch((e: unknown) => e));
  t.is(bad.code, ErrorCode.INVALID_ARG);
});

test('lookups by name, id and uuid; misses are NO_DOMAIN in domain XENAPI', async (t) => {
  const server = await withServer(t);
  const conn = await openAsRoot(t, server);
  const vm2 = await conn.lookupDomainByName('vm2');
  t.deepEqual({ name: vm2.name, id: vm2.id, uuid: vm2.uuid.toString('hex') }, { name: 'vm2', id: -1, uuid: VM2_UUID.replace(/-/g, '') });
  t.is((await conn.lookupDomainById(1)).name, 'vm1');
  t.is((await conn.lookupDomainByUuid(Buffer.from(VM1_UUID.replace(/-/g, ''), 'hex'))).name, 'vm1');

  const misses: [Promise<unknown>, string][] = [
    [conn.lookupDomainByName('nope'), "Domain not found: no domain with matching name 'nope'"],
    [conn.lookupDomainByName('Debian Bookworm 12'), "Domain not found: no domain with matching name 'Debian Bookworm 12'"],
    [conn.lookupDomainById(0), 'Domain not found: no domain with matching id 0'],
    [conn.lookupDomainById(-1), 'Domain not found: no domain with matching id -1'],
    [
      conn.lookupDomainByUuid(Buffer.alloc(16, 0xab)),
      "Domain not found: no domain with matching uuid 'abababab-abab-abab-abab-abababababab'",
    ],
  ];
  for (const [promise, message] of misses) {
    const error = virError(await promise.catch((e: unknown) => e));
    t.is(error.code, ErrorCode.NO_DOMAIN);
    t.is(error.domain, ErrorDomain.XENAPI);
    t.is(error.message, message);
  }
});

test('domain info, state and XML map the VM records', async (t) => {
  const server = await withServer(t, {
    vms: [
      {
        nameLabel: 'vm1',
        uuid: VM1_UUID,
        description: 'web <server>',
        powerState: 'Running',
        domid: 1,
        memoryStaticMaxBytes: 2_147_483_648,
        memoryDynamicMaxBytes: 1_073_741_824,
        vcpusMax: 2,
        hvm: true,
      },
      { nameLabel: 'vm2', uuid: VM2_UUID, powerState: 'Halted', memoryStaticMaxBytes: 1_073_741_824, vcpusMax: 1, autostart: true },
      { nameLabel: 'paused', powerState: 'Paused', domid: 7 },
      { nameLabel: 'suspended', powerState: 'Suspended' },
    ],
  });
  const conn = await openAsRoot(t, server);
  const vm1 = await conn.lookupDomainByName('vm1');
  const vm2 = await conn.lookupDomainByName('vm2');
  t.deepEqual(await conn.getDomainInfo(vm1), { state: 1, maxMem: 2_097_152n, memory: 1_048_576n, nrVirtCpu: 2, cpuTime: 0n });
  t.deepEqual(await conn.getDomainInfo(vm2), { state: 5, maxMem: 1_048_576n, memory: 1_048_576n, nrVirtCpu: 1, cpuTime: 0n });
  t.deepEqual(await conn.getDomainState(vm1), { state: 1, reason: 0 });
  t.deepEqual(await conn.getDomainState(await conn.lookupDomainByName('paused')), { state: 3, reason: 0 });
  t.deepEqual(await conn.getDomainState(await conn.lookupDomainByName('suspended')), { state: 7, reason: 0 });
  t.is((await conn.lookupDomainByName('paused')).id, 7);
  t.is((await conn.lookupDomainByName('suspended')).id, -1);
  t.is(
    await conn.getDomainXmlDesc(vm1, 0),
    [
      "<domain type='xen' id='1'>",
      '  <name>vm1</name>',
      `  <uuid>${VM1_UUID}</uuid>`,
      '  <description>web &lt;server&gt;</description>',
      "  <memory unit='KiB'>2097152</memory>",
      "  <currentMemory unit='KiB'>1048576</currentMemory>",
      "  <vcpu placement='static'>2</vcpu>",
      '  <os>',
      '    <type>hvm</type>',
      '  </os>',
      '  <on_poweroff>destroy</on_poweroff>',
      '  <on_reboot>restart</on_reboot>',
      '  <on_crash>restart</on_crash>',
      '</domain>',
      '',
    ].join('\n'),
  );
  t.is(await conn.getDomainOsType!(vm1), 'hvm');
  t.is(await conn.getDomainOsType!(vm2), 'xen');
  t.true(await conn.isDomainPersistent!(vm2));
  t.false(await conn.getDomainAutostart!(vm1));
  t.true(await conn.getDomainAutostart!(vm2));
  const xml2 = await conn.getDomainXmlDesc(vm2, 2 /* INACTIVE */);
  t.true(xml2.startsWith("<domain type='xen'>\n  <name>vm2</name>"));
  t.true(xml2.includes('<type>xen</type>'));
});

test('close logs the session out; closing twice is harmless', async (t) => {
  const server = await withServer(t);
  const conn = await openAsRoot(t, server);
  t.is(server.sessions.size, 1);
  await conn.close();
  t.is(server.sessions.size, 0);
  t.is(server.calls.at(-1), 'session.logout');
  await conn.close();
  t.is(server.calls.filter((c) => c === 'session.logout').length, 1);
  const after = virError(await conn.listAllDomains(0).catch((e: unknown) => e));
  t.is(after.code, ErrorCode.INVALID_CONN);
});

test('aborting the open abandons a login the server never answers', async (t) => {
  const server = await withServer(t, { stallMethods: ['session.login_with_password'] });
  const controller = new AbortController();
  const { requester, asked } = recordingRequester({ [CredentialType.PASSPHRASE]: PASSWORD });
  const opening = new XenApiDriver().open(
    parseUri(`xenapi://root@127.0.0.1:${server.port}/?scheme=http`),
    context(requester, controller.signal),
  );
  await whenEmitted(server.activity, ['call'], () => server.calls.includes('session.login_with_password'), 30_000, 'the login call');
  const reason = new VirError({ code: ErrorCode.AUTH_CANCELLED, domain: ErrorDomain.AUTH, detail: 'client went away' });
  controller.abort(reason);
  t.is(await opening.catch((e: unknown) => e), reason);
  t.is(asked[0]?.signal, controller.signal);
});

test('an already aborted open asks for nothing', async (t) => {
  const server = await withServer(t);
  const controller = new AbortController();
  controller.abort(new Error('deadline'));
  const { requester, asked } = recordingRequester({ [CredentialType.PASSPHRASE]: PASSWORD });
  const error = virError(
    await new XenApiDriver()
      .open(parseUri(`xenapi://root@127.0.0.1:${server.port}/?scheme=http`), context(requester, controller.signal))
      .catch((e: unknown) => e),
  );
  t.is(error.code, ErrorCode.OPERATION_FAILED);
  t.regex(error.message, /opening the XenAPI connection to 127\.0\.0\.1 was abandoned/);
  t.deepEqual(asked, []);
  t.deepEqual(server.calls, []);
});

test('a call that outlives the timeout is OPERATION_TIMEOUT, and the half-open session is logged out', async (t) => {
  const server = await withServer(t, { stallMethods: ['pool.get_all_records'] });
  const { requester } = recordingRequester({ [CredentialType.PASSPHRASE]: PASSWORD });
  // Long enough for the login to get through on a loaded machine; pool.get_all_records never answers.
  const driver = new XenApiDriver({ callTimeoutMs: 2000 });
  const error = virError(
    await driver.open(parseUri(`xenapi://root@127.0.0.1:${server.port}/?scheme=http`), context(requester)).catch((e: unknown) => e),
  );
  t.is(error.code, ErrorCode.OPERATION_TIMEOUT);
  t.is(error.message, `Timed out during operation: XenAPI server 127.0.0.1:${server.port} did not answer pool.get_all_records within 2s`);
  t.is(server.sessions.size, 0);
});

test('connection refused is SYSTEM_ERROR naming host:port', async (t) => {
  const server = await startXenApiServer({ users: USERS });
  const port = server.port;
  await server.close();
  const { requester } = recordingRequester({ [CredentialType.PASSPHRASE]: PASSWORD });
  const error = virError(
    await new XenApiDriver().open(parseUri(`xenapi://root@127.0.0.1:${port}/?scheme=http`), context(requester)).catch((e: unknown) => e),
  );
  t.is(error.code, ErrorCode.SYSTEM_ERROR);
  t.is(error.domain, ErrorDomain.XENAPI);
  t.is(error.message, `unable to connect to XenAPI server at 127.0.0.1:${port}: connection refused`);
});

test('HTTPS: a self-signed server is refused unless no_verify=1', async (t) => {
  const server = await withServer(t, { tls: selfSignedCertificate() });
  const { requester } = recordingRequester({ [CredentialType.PASSPHRASE]: PASSWORD });
  const refused = virError(
    await new XenApiDriver().open(parseUri(`xenapi://root@127.0.0.1:${server.port}/`), context(requester)).catch((e: unknown) => e),
  );
  t.is(refused.code, ErrorCode.SYSTEM_ERROR);
  t.regex(refused.message, /TLS certificate of XenAPI server 127\.0\.0\.1:\d+ could not be verified .*no_verify=1/);
  t.deepEqual(server.calls, []);

  const conn = await new XenApiDriver().open(parseUri(`xenapi://root@127.0.0.1:${server.port}/?no_verify=1`), context(requester));
  t.teardown(() => conn.close());
  t.true(await conn.isSecure());
  t.is((await conn.listAllDomains(0)).length, 2);
});
