// The XenAPI fixture checked against independent clients: Xen Orchestra's `xen-api` (JSON-RPC and
// XML-RPC transports) and Python's xmlrpc.client, so the fixture is not only our reading of the spec.

import test from 'ava';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { DEFAULT_VMS, selfSignedCertificate, startXenApiServer, type XenApiServer } from './fixtures/xenapi-server.js';
import { whenEmitted } from './peers/util.js';

interface XapiLike {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  call(method: string, ...args: unknown[]): Promise<unknown>;
  readonly sessionId: string;
  readonly pool: { master: string };
}
interface XenApiModule {
  createClient(opts: Record<string, unknown>): XapiLike;
}

// xen-api is ESM-only and ships no types; a non-literal specifier keeps TypeScript from resolving it.
const XEN_API_MODULE = 'xen-api';
const loadXenApi = async (): Promise<XenApiModule> => (await import(XEN_API_MODULE)) as XenApiModule;

const USERS = { root: 'pool-secret' };

async function withServer(
  t: { teardown(fn: () => Promise<void>): void },
  opts: Parameters<typeof startXenApiServer>[0],
): Promise<XenApiServer> {
  const server = await startXenApiServer(opts);
  t.teardown(() => server.close());
  return server;
}

function guestNames(records: unknown): string[] {
  return Object.values(records as Record<string, { name_label: string; is_a_template: boolean; is_control_domain: boolean }>)
    .filter((r) => !r.is_a_template && !r.is_control_domain)
    .map((r) => r.name_label)
    .sort();
}

for (const transport of ['json-rpc', 'xml-rpc'] as const) {
  test(`xen-api (${transport}) logs in, reads the inventory and logs out`, async (t) => {
    const server = await withServer(t, { users: USERS });
    const { createClient } = await loadXenApi();
    const xapi = createClient({ url: server.url, auth: { user: 'root', password: 'pool-secret' }, watchEvents: false, transport });
    await xapi.connect();
    t.true(xapi.sessionId.startsWith('OpaqueRef:'));
    t.is(server.sessions.get(xapi.sessionId)?.username, 'root');
    // On connect xen-api logs in with two parameters, reads the pool and introspects the methods.
    t.deepEqual(server.calls.slice(0, 3), ['session.login_with_password', 'pool.get_all_records', 'system.listMethods']);

    const records = (await xapi.call('VM.get_all_records')) as Record<string, Record<string, unknown>>;
    t.deepEqual(guestNames(records), ['vm1', 'vm2']);
    t.is(Object.keys(records).length, DEFAULT_VMS.length);
    const vm1 = Object.values(records).find((r) => r['name_label'] === 'vm1')!;
    t.is(vm1['power_state'], 'Running');
    // JSON-RPC carries ints as numbers; XML-RPC as strings, which xen-api leaves alone.
    t.deepEqual(vm1['memory_static_max'], transport === 'json-rpc' ? 2_147_483_648 : '2147483648');
    t.is(vm1['is_a_template'], false);

    const hostname = await xapi.call('host.get_hostname', xapi.pool.master);
    t.is(hostname, 'xen1.example');

    await xapi.disconnect();
    // xen-api does not wait for the logout: wait for the fixture to have run it.
    await whenEmitted(server.activity, ['call'], () => server.sessions.size === 0, 30_000, 'the logout');
    t.is(server.sessions.size, 0);
    t.true(server.calls.includes('session.logout'));
  });

  test(`xen-api (${transport}) sees SESSION_AUTHENTICATION_FAILED for a wrong password`, async (t) => {
    const server = await withServer(t, { users: USERS });
    const { createClient } = await loadXenApi();
    const xapi = createClient({ url: server.url, auth: { user: 'root', password: 'wrong' }, watchEvents: false, transport });
    // xen-api's XapiError (make-error) is not recognised as an Error by ava, so take the rejection by hand.
    const error = (await xapi.connect().then(
      () => null,
      (e: unknown) => e,
    )) as { code?: string; params?: string[] } | null;
    t.is(error?.code, 'SESSION_AUTHENTICATION_FAILED');
    t.deepEqual(error?.params, ['root', 'Authentication failure']);
    t.is(server.sessions.size, 0);
    t.false(JSON.stringify(server.calls).includes('wrong'));
  });
}

test('xen-api follows HOST_IS_SLAVE from a pool member to the master', async (t) => {
  // The master and the member share a port on two loopback addresses, as real hosts share 443.
  const master = await withServer(t, { users: USERS, bindAddress: '127.0.0.2' });
  const member = await withServer(t, { users: USERS, bindAddress: '127.0.0.1', port: master.port, slaveOf: '127.0.0.2' });
  const { createClient } = await loadXenApi();
  const xapi = createClient({ url: member.url, auth: { user: 'root', password: 'pool-secret' }, watchEvents: false });
  await xapi.connect();
  t.deepEqual(member.calls, ['session.login_with_password']);
  t.true(master.sessions.has(xapi.sessionId));
  await xapi.disconnect();
});

test('xen-api connects over HTTPS to a self-signed fixture when unauthorized certificates are allowed', async (t) => {
  const server = await withServer(t, { users: USERS, tls: selfSignedCertificate() });
  t.true(server.url.startsWith('https://'));
  const { createClient } = await loadXenApi();
  const xapi = createClient({
    url: server.url,
    auth: { user: 'root', password: 'pool-secret' },
    watchEvents: false,
    allowUnauthorized: true,
  });
  await xapi.connect();
  t.deepEqual(guestNames(await xapi.call('VM.get_all_records')), ['vm1', 'vm2']);
  await xapi.disconnect();
});

test("Python's xmlrpc.client talks to the fixture at /RPC2", async (t) => {
  const server = await withServer(t, { users: USERS });
  const script = `
import json, sys, xmlrpc.client
s = xmlrpc.client.ServerProxy(sys.argv[1] + "/RPC2")
bad = s.session.login_with_password("root", "wrong", "1.0", "python")
ok = s.session.login_with_password("root", "pool-secret")
vms = s.VM.get_all_records(ok["Value"])
stale = s.VM.get_all_records("OpaqueRef:nope")
unknown = s.VM.frobnicate(ok["Value"])
out = s.session.logout(ok["Value"])
print(json.dumps({"bad": bad, "ok": ok["Status"], "vms": vms, "stale": stale, "unknown": unknown, "logout": out}))
`;
  const { stdout } = await promisify(execFile)('/usr/bin/python3', ['-c', script, server.url]);
  const result = JSON.parse(stdout) as Record<string, any>;
  t.deepEqual(result['bad'], { Status: 'Failure', ErrorDescription: ['SESSION_AUTHENTICATION_FAILED', 'root', 'Authentication failure'] });
  t.is(result['ok'], 'Success');
  t.is(result['vms'].Status, 'Success');
  const vm2 = Object.values(result['vms'].Value as Record<string, Record<string, unknown>>).find((r) => r['name_label'] === 'vm2')!;
  t.like(vm2, { power_state: 'Halted', domid: '-1', memory_static_max: '1073741824', is_a_template: false, name_description: '' });
  t.deepEqual(result['stale'], { Status: 'Failure', ErrorDescription: ['SESSION_INVALID', 'OpaqueRef:nope'] });
  t.deepEqual(result['unknown'], { Status: 'Failure', ErrorDescription: ['MESSAGE_METHOD_UNKNOWN', 'VM.frobnicate'] });
  t.deepEqual(result['logout'], { Status: 'Success', Value: '' });
  t.is(server.sessions.size, 0);
});

async function postJson(server: XenApiServer, body: string): Promise<{ status: number; type: string | null; text: string }> {
  const res = await fetch(`${server.url}/jsonrpc`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
  return { status: res.status, type: res.headers.get('content-type'), text: await res.text() };
}

test('JSON-RPC v1.0 and v2.0 replies have the shapes XenAPI uses', async (t) => {
  const server = await withServer(t, { users: USERS });
  const v2ok = JSON.parse(
    (
      await postJson(
        server,
        JSON.stringify({ jsonrpc: '2.0', method: 'session.login_with_password', params: ['root', 'pool-secret'], id: 7 }),
      )
    ).text,
  );
  t.is(v2ok.jsonrpc, '2.0');
  t.is(v2ok.id, 7);
  t.false('error' in v2ok);
  const session = v2ok.result as string;

  const v2err = JSON.parse(
    (await postJson(server, JSON.stringify({ jsonrpc: '2.0', method: 'VM.get_record', params: [session, 'OpaqueRef:gone'], id: 8 }))).text,
  );
  t.deepEqual(v2err, { jsonrpc: '2.0', error: { code: 1, message: 'HANDLE_INVALID', data: ['VM', 'OpaqueRef:gone'] }, id: 8 });

  const v1ok = JSON.parse(
    (await postJson(server, JSON.stringify({ method: 'VM.get_by_name_label', params: [session, 'vm2'], id: 'a' }))).text,
  );
  t.deepEqual(Object.keys(v1ok).sort(), ['error', 'id', 'result']);
  t.is(v1ok.error, null);
  t.is(v1ok.result.length, 1);

  const v1err = JSON.parse((await postJson(server, JSON.stringify({ method: 'VM.get_all', params: [], id: 'b' }))).text);
  t.deepEqual(v1err, { result: null, error: ['MESSAGE_PARAMETER_COUNT_MISMATCH', 'VM.get_all', '1', '0'], id: 'b' });

  const uuid = JSON.parse(
    (
      await postJson(
        server,
        JSON.stringify({ jsonrpc: '2.0', method: 'VM.get_by_uuid', params: [session, '00000000-0000-0000-0000-000000000000'], id: 9 }),
      )
    ).text,
  );
  t.is(uuid.error.message, 'UUID_INVALID');

  for (const malformed of ['{not json', JSON.stringify({ jsonrpc: '2.0', method: 'VM.get_all', params: [session], id: null }), '[]']) {
    const res = await postJson(server, malformed);
    t.is(res.status, 500);
    t.is(res.type, 'text/html');
  }
});

test('a member configured as slave refuses logins with HOST_IS_SLAVE [master]', async (t) => {
  const server = await withServer(t, { users: USERS, slaveOf: '192.0.2.99' });
  const reply = JSON.parse(
    (
      await postJson(
        server,
        JSON.stringify({ jsonrpc: '2.0', method: 'session.login_with_password', params: ['root', 'pool-secret', '1.0', 'x'], id: 1 }),
      )
    ).text,
  );
  t.deepEqual(reply.error, { code: 1, message: 'HOST_IS_SLAVE', data: ['192.0.2.99'] });
});
