// Unit tests of the XenAPI driver's pure parts: URI reading, error mapping, reply parsing,
// version and uuid conversion, list filtering and domain XML. The driver against a server is
// tested in test/src/xenapi-driver.test.ts with the XenAPI fixture.

import test from 'ava';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { DomainState, ErrorCode, ErrorDomain, ListDomainsFlag, VirError, parseUri } from '@virtauth/core';
import { XenApiDriver, matchesListFlags, resolveTarget } from '../src/xenapi/driver.js';
import { XenApiError, mapXenApiError, xenApiErrorCode } from '../src/xenapi/errors.js';
import { XenApiTransport, masterEndpoint, parseJsonRpcReply, type XenApiEndpoint } from '../src/xenapi/client.js';
import { domainState, parseVersion, parseVmRecord, truncateUtf8, uuidToBytes, uuidToString, type VmRecord } from '../src/xenapi/records.js';
import { domainXml } from '../src/xenapi/domain-xml.js';

const catchVirError = (fn: () => unknown): VirError => {
  try {
    fn();
  } catch (e) {
    if (e instanceof VirError) return e;
    throw e;
  }
  throw new Error('expected a VirError');
};

test('accepts transport-less xenapi URIs only', (t) => {
  const driver = new XenApiDriver();
  t.true(driver.accepts(parseUri('xenapi://xen1.example/')));
  t.true(driver.accepts(parseUri('xenapi:///?server=xen1.example')));
  t.false(driver.accepts(parseUri('xenapi+unix:///?server=xen1.example')));
  t.false(driver.accepts(parseUri('test:///default')));
});

test('resolveTarget: host in the URI or in server=, https by default', (t) => {
  t.deepEqual(resolveTarget(parseUri('xenapi://root@xen1.example/')), {
    host: 'xen1.example',
    endpoint: { scheme: 'https', host: 'xen1.example', port: 443, verifyCertificate: true },
  });
  t.deepEqual(resolveTarget(parseUri('xenapi://xen1.example:8443/?no_verify=1')).endpoint, {
    scheme: 'https',
    host: 'xen1.example',
    port: 8443,
    verifyCertificate: false,
  });
  t.deepEqual(resolveTarget(parseUri('xenapi:///?server=xen1.example:8080&scheme=http')).endpoint, {
    scheme: 'http',
    host: 'xen1.example',
    port: 8080,
    verifyCertificate: true,
  });
  t.deepEqual(resolveTarget(parseUri('xenapi:///?server=xen1.example&scheme=http')).endpoint.port, 80);
  t.deepEqual(resolveTarget(parseUri('xenapi:///?server=[2001:db8::1]:8443')).endpoint, {
    scheme: 'https',
    host: '2001:db8::1',
    port: 8443,
    verifyCertificate: true,
  });
});

test('resolveTarget: bad or missing parts are INVALID_ARG with the accepted forms', (t) => {
  const cases: [string, RegExp][] = [
    ['xenapi:///', /Server name not in URI: use xenapi:\/\/\[user@\]HOST\[:PORT\]\/ or xenapi:\/\/\/\?server=HOST\[:PORT\]/],
    ['xenapi://a.example/?server=b.example', /both as the host and as server=/],
    ['xenapi://a.example/?scheme=ftp', /scheme='ftp' is neither https nor http/],
    ['xenapi://a.example/?no_verify=yes', /no_verify='yes' is neither 0 nor 1/],
    ['xenapi:///?server=a:b:c', /server='a:b:c' is not HOST\[:PORT\]/],
    ['xenapi:///?server=a.example:70000', /port 70000 is out of range/],
  ];
  for (const [uri, message] of cases) {
    const error = catchVirError(() => resolveTarget(parseUri(uri)));
    t.is(error.code, ErrorCode.INVALID_ARG, uri);
    t.is(error.domain, ErrorDomain.XENAPI);
    t.regex(error.message, message);
  }
});

const ctx = { host: 'xen1.example', address: 'xen1.example:443', method: 'VM.get_record', username: 'root' };

test('mapXenApiError: each XenAPI error becomes the matching libvirt code in domain XENAPI', (t) => {
  const cases: [XenApiError, number, string][] = [
    [
      new XenApiError('SESSION_AUTHENTICATION_FAILED', ['root', 'Authentication failure']),
      ErrorCode.AUTH_FAILED,
      "authentication failed: XenAPI server xen1.example rejected the credentials of user 'root'",
    ],
    [
      new XenApiError('SESSION_INVALID', ['OpaqueRef:1']),
      ErrorCode.OPERATION_FAILED,
      'operation failed: the XenAPI session on xen1.example:443 is no longer valid (logged out, expired, or the server restarted); reopen the connection',
    ],
    [
      new XenApiError('HOST_IS_SLAVE', ['10.0.0.1']),
      ErrorCode.OPERATION_FAILED,
      'operation failed: XenAPI server xen1.example:443 is a pool member, not the pool master (the master is 10.0.0.1); connect to the pool master instead',
    ],
    [
      new XenApiError('HANDLE_INVALID', ['VM', 'OpaqueRef:9']),
      ErrorCode.NO_DOMAIN,
      "Domain not found: no domain with XenAPI reference 'OpaqueRef:9' (it was deleted)",
    ],
    [
      new XenApiError('HANDLE_INVALID', ['SR', 'OpaqueRef:9']),
      ErrorCode.OPERATION_FAILED,
      "operation failed: XenAPI object SR 'OpaqueRef:9' does not exist on xen1.example:443",
    ],
    [new XenApiError('UUID_INVALID', ['VM', 'abc']), ErrorCode.NO_DOMAIN, "Domain not found: no domain with matching uuid 'abc'"],
    [
      new XenApiError('MESSAGE_METHOD_UNKNOWN', ['VM.get_record']),
      ErrorCode.NO_SUPPORT,
      'this function is not supported by the connection driver: XenAPI server xen1.example:443 does not implement VM.get_record',
    ],
    [
      new XenApiError('MESSAGE_PARAMETER_COUNT_MISMATCH', ['VM.get_record', '2', '1']),
      ErrorCode.INTERNAL_ERROR,
      'internal error: XenAPI server xen1.example:443 expected 2 parameters for VM.get_record, got 1',
    ],
    [
      new XenApiError('RBAC_PERMISSION_DENIED', ['vm.power_op']),
      ErrorCode.ACCESS_DENIED,
      "access denied: XenAPI server xen1.example does not allow user 'root' to call VM.get_record (vm.power_op)",
    ],
    [
      new XenApiError('VM_BAD_POWER_STATE', ['OpaqueRef:1', 'running', 'halted']),
      ErrorCode.OPERATION_INVALID,
      'Requested operation is not valid: XenAPI refused VM.get_record: the domain is halted, the operation needs it running',
    ],
    [
      new XenApiError('OPERATION_NOT_ALLOWED', ['VM is locked']),
      ErrorCode.OPERATION_INVALID,
      'Requested operation is not valid: XenAPI refused VM.get_record: OPERATION_NOT_ALLOWED(VM is locked)',
    ],
    [
      new XenApiError('SR_FULL', ['OpaqueRef:2']),
      ErrorCode.INTERNAL_ERROR,
      'internal error: XenAPI call VM.get_record on xen1.example:443 failed: SR_FULL(OpaqueRef:2)',
    ],
  ];
  for (const [xenError, code, message] of cases) {
    const mapped = mapXenApiError(xenError, ctx);
    t.is(mapped.code, code, xenError.code);
    t.is(mapped.domain, ErrorDomain.XENAPI);
    t.is(mapped.message, message);
    t.is(mapped.cause, xenError);
    t.is(xenApiErrorCode(mapped), xenError.code);
  }
  t.is(xenApiErrorCode(new Error('x')), null);
});

test('mapXenApiError: a server cannot make the message huge; codes and parameters are cut to 200 characters, 8 parameters', (t) => {
  const long = 'x'.repeat(100_000);
  const error = new XenApiError(
    long,
    Array.from({ length: 1000 }, () => long),
  );
  const mapped = mapXenApiError(error, ctx);
  t.is(mapped.code, ErrorCode.INTERNAL_ERROR);
  const cut = `${'x'.repeat(200)}...`;
  t.is(mapped.message, `internal error: XenAPI call VM.get_record on xen1.example:443 failed: ${cut}(${Array(8).fill(cut).join(', ')})`);
  const state = mapXenApiError(new XenApiError('VM_BAD_POWER_STATE', ['OpaqueRef:1', long, long]), ctx);
  t.is(
    state.message,
    `Requested operation is not valid: XenAPI refused VM.get_record: the domain is ${cut}, the operation needs it ${cut}`,
  );
});

test('parseJsonRpcReply reads v2 and v1 results and errors', (t) => {
  t.deepEqual(parseJsonRpcReply('{"jsonrpc":"2.0","result":{"a":1},"id":1}'), { a: 1 });
  t.is(parseJsonRpcReply('{"result":"OpaqueRef:x","error":null,"id":1}'), 'OpaqueRef:x');
  const v2 = t.throws(
    () => parseJsonRpcReply('{"jsonrpc":"2.0","error":{"code":1,"message":"HANDLE_INVALID","data":["VM","OpaqueRef:1"]},"id":1}'),
    {
      instanceOf: XenApiError,
    },
  );
  t.deepEqual([v2.code, v2.params], ['HANDLE_INVALID', ['VM', 'OpaqueRef:1']]);
  const v2NoData = t.throws(() => parseJsonRpcReply('{"jsonrpc":"2.0","error":{"code":1,"message":"SESSION_INVALID"},"id":1}'), {
    instanceOf: XenApiError,
  });
  t.deepEqual([v2NoData.code, v2NoData.params], ['SESSION_INVALID', []]);
  const v1 = t.throws(() => parseJsonRpcReply('{"result":null,"error":["HOST_IS_SLAVE","10.0.0.1"],"id":1}'), { instanceOf: XenApiError });
  t.deepEqual([v1.code, v1.params], ['HOST_IS_SLAVE', ['10.0.0.1']]);
  t.throws(() => parseJsonRpcReply('<html>'), { message: 'the reply is not JSON' });
  t.throws(() => parseJsonRpcReply('{"id":1}'), { message: 'the reply has neither result nor error' });
  t.throws(() => parseJsonRpcReply('{"error":{"code":1},"id":1}'), { message: 'the error has no message' });
});

test('parseJsonRpcReply never lets an echoed secret into an error', (t) => {
  const error = t.throws(
    () => parseJsonRpcReply('{"result":null,"error":["SESSION_AUTHENTICATION_FAILED","root","login hunter2 refused"],"id":1}', ['hunter2']),
    {
      instanceOf: XenApiError,
    },
  );
  t.deepEqual(error.params, ['root', '<redacted>']);
  t.false(error.message.includes('hunter2'));
});

test('masterEndpoint: the master address replaces the host, keeping the port unless it names one', (t) => {
  const current: XenApiEndpoint = { scheme: 'https', host: 'member.example', port: 443, verifyCertificate: false };
  t.deepEqual(masterEndpoint(current, '10.0.0.1'), { ...current, host: '10.0.0.1' });
  t.deepEqual(masterEndpoint(current, 'master.example:8443'), { ...current, host: 'master.example', port: 8443 });
  t.deepEqual(masterEndpoint(current, '[2001:db8::1]:8443'), { ...current, host: '2001:db8::1', port: 8443 });
  t.deepEqual(masterEndpoint(current, '2001:db8::1'), { ...current, host: '2001:db8::1' });
});

test('parseVersion encodes major.minor.micro as libvirt does', (t) => {
  t.is(parseVersion('8.2.1'), 8_002_001n);
  t.is(parseVersion('8.2'), 8_002_000n);
  t.is(parseVersion('7'), 7_000_000n);
  t.is(parseVersion('8.3.0-beta'), 8_003_000n);
  t.is(catchVirError(() => parseVersion('unknown')).message, "internal error: cannot parse the XenAPI server version 'unknown'");
  t.is(catchVirError(() => parseVersion('1.1000')).code, ErrorCode.INTERNAL_ERROR);
});

test('uuids convert both ways; bad ones are refused', (t) => {
  const text = '6f8a1c2e-3b4d-4e5f-9a0b-1c2d3e4f5a6b';
  const bytes = uuidToBytes(text);
  t.is(bytes.length, 16);
  t.is(uuidToString(bytes), text);
  t.is(catchVirError(() => uuidToBytes('nope')).code, ErrorCode.INTERNAL_ERROR);
  t.is(catchVirError(() => uuidToString(Buffer.alloc(3))).code, ErrorCode.INVALID_ARG);
});

test('truncateUtf8 keeps whole characters within the byte limit', (t) => {
  t.is(truncateUtf8('abc', 31), 'abc');
  t.is(truncateUtf8('é'.repeat(20), 31), 'é'.repeat(15));
  t.is(Buffer.byteLength(truncateUtf8('x'.repeat(40), 31)), 31);
});

const vm = (over: Record<string, unknown>): VmRecord =>
  parseVmRecord('OpaqueRef:1', {
    uuid: '6f8a1c2e-3b4d-4e5f-9a0b-1c2d3e4f5a6b',
    name_label: 'vm1',
    name_description: '',
    power_state: 'Running',
    domid: 3,
    memory_static_max: '2147483648',
    memory_dynamic_max: 1073741824,
    VCPUs_max: '4',
    VCPUs_at_startup: 2,
    domain_type: 'pv',
    HVM_boot_policy: '',
    is_a_template: false,
    is_control_domain: false,
    actions_after_shutdown: 'destroy',
    actions_after_reboot: 'restart',
    actions_after_crash: 'coredump_and_restart',
    ...over,
  } as never);

test('VM records: ints as numbers or strings; power states map to libvirt states', (t) => {
  const r = vm({});
  t.is(r.memoryStaticMax, 2_147_483_648n);
  t.is(r.memoryDynamicMax, 1_073_741_824n);
  t.is(r.vcpusMax, 4);
  t.is(r.domid, 3);
  t.false(r.hvm);
  t.true(vm({ domain_type: '', HVM_boot_policy: 'BIOS order' }).hvm);
  t.is(domainState('Running'), DomainState.RUNNING);
  t.is(domainState('Paused'), DomainState.PAUSED);
  t.is(domainState('Halted'), DomainState.SHUTOFF);
  t.is(domainState('Suspended'), DomainState.PMSUSPENDED);
  t.is(domainState('Weird'), DomainState.NOSTATE);
});

test('matchesListFlags: each flag group narrows independently', (t) => {
  const running = vm({});
  const halted = vm({ power_state: 'Halted', domid: -1 });
  const suspended = vm({ power_state: 'Suspended', domid: -1 });
  const F = ListDomainsFlag;
  t.true(matchesListFlags(running, 0));
  t.true(matchesListFlags(running, F.ACTIVE));
  t.false(matchesListFlags(halted, F.ACTIVE));
  t.true(matchesListFlags(halted, F.INACTIVE | F.PERSISTENT));
  t.false(matchesListFlags(halted, F.TRANSIENT));
  t.true(matchesListFlags(running, F.RUNNING | F.SHUTOFF));
  t.false(matchesListFlags(running, F.SHUTOFF));
  t.true(matchesListFlags(suspended, F.OTHER));
  t.false(matchesListFlags(suspended, F.ACTIVE));
});

test('domainXml: escaped text, id only while active, current vcpus, lifecycle names', (t) => {
  t.is(
    domainXml(vm({ name_label: "a<b>&'c", name_description: 'x"y' })),
    [
      "<domain type='xen' id='3'>",
      '  <name>a&lt;b&gt;&amp;&apos;c</name>',
      '  <uuid>6f8a1c2e-3b4d-4e5f-9a0b-1c2d3e4f5a6b</uuid>',
      '  <description>x&quot;y</description>',
      "  <memory unit='KiB'>2097152</memory>",
      "  <currentMemory unit='KiB'>1048576</currentMemory>",
      "  <vcpu placement='static' current='2'>4</vcpu>",
      '  <os>',
      '    <type>xen</type>',
      '  </os>',
      '  <on_poweroff>destroy</on_poweroff>',
      '  <on_reboot>restart</on_reboot>',
      '  <on_crash>coredump-restart</on_crash>',
      '</domain>',
      '',
    ].join('\n'),
  );
  const halted = domainXml(vm({ power_state: 'Halted', domid: -1, actions_after_crash: 'something_new' }));
  t.true(halted.startsWith("<domain type='xen'>\n"));
  t.false(halted.includes('<on_crash>'));
});

async function withHttpServer(t: { teardown(fn: () => void): void }, handler: http.RequestListener): Promise<XenApiEndpoint> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  return { scheme: 'http', host: '127.0.0.1', port: (server.address() as AddressInfo).port, verifyCertificate: true };
}

test('transport: a kept-alive socket the server dropped is retried once on a fresh one; a fresh socket reset is not', async (t) => {
  let requests = 0;
  const reply = JSON.stringify({ jsonrpc: '2.0', result: 'OpaqueRef:ok', id: 1 });
  // The first request is answered and its socket kept; the second on that socket is reset unread
  // (the server's idle close racing our reuse); on a new socket it is answered.
  const sockets = new Set<unknown>();
  const endpoint = await withHttpServer(t, (req, res) => {
    requests++;
    if (sockets.has(req.socket)) return void req.socket.resetAndDestroy();
    sockets.add(req.socket);
    res.writeHead(200, { 'Content-Type': 'application/json' }).end(reply);
  });
  const transport = new XenApiTransport(endpoint);
  t.teardown(() => transport.close());
  t.is(await transport.call('VM.get_all', ['OpaqueRef:s']), 'OpaqueRef:ok');
  t.is(await transport.call('VM.start', ['OpaqueRef:s', 'OpaqueRef:vm', false, false]), 'OpaqueRef:ok');
  t.is(requests, 3, 'the reset request was sent once more');

  // A server that resets every request: one attempt per call on a fresh socket, then the error.
  let resets = 0;
  const hostile = await withHttpServer(t, (req) => {
    resets++;
    req.socket.resetAndDestroy();
  });
  const transport2 = new XenApiTransport(hostile);
  t.teardown(() => transport2.close());
  const e = await t.throwsAsync(transport2.call('VM.get_all', ['OpaqueRef:s']), { instanceOf: VirError });
  t.is(e.code, ErrorCode.SYSTEM_ERROR);
  t.regex(e.message, /^connection to XenAPI server 127\.0\.0\.1:\d+ failed: (read ECONNRESET|socket hang up)$/);
  t.is(resets, 1);
});

test('transport: an HTTP error status is HTTP_ERROR, a non-JSON body INTERNAL_ERROR', async (t) => {
  const failing = await withHttpServer(t, (_req, res) => res.writeHead(500, { 'Content-Type': 'text/html' }).end('<html>oops</html>'));
  const transport = new XenApiTransport(failing);
  t.teardown(() => transport.close());
  const status = await t.throwsAsync(transport.call('VM.get_all', ['OpaqueRef:s']), { instanceOf: VirError });
  t.is(status.code, ErrorCode.HTTP_ERROR);
  t.is(status.message, `XenAPI server 127.0.0.1:${failing.port} answered VM.get_all with HTTP 500 (Internal Server Error)`);

  const garbled = await withHttpServer(t, (_req, res) => res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"half":'));
  const transport2 = new XenApiTransport(garbled);
  t.teardown(() => transport2.close());
  const parse = await t.throwsAsync(transport2.call('VM.get_all', ['OpaqueRef:s']), { instanceOf: VirError });
  t.is(parse.code, ErrorCode.INTERNAL_ERROR);
  t.regex(parse.message, /sent an invalid JSON-RPC reply to VM\.get_all: the reply is not JSON/);
});

test('transport: requests are JSON-RPC 2.0 POSTs to /jsonrpc with a non-null id', async (t) => {
  const seen: { path: string | undefined; type: string | undefined; body: Record<string, unknown> }[] = [];
  const endpoint = await withHttpServer(t, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({ path: req.url, type: req.headers['content-type'], body: JSON.parse(Buffer.concat(chunks).toString()) });
      res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"jsonrpc":"2.0","result":[],"id":1}');
    });
  });
  const transport = new XenApiTransport(endpoint);
  t.teardown(() => transport.close());
  t.deepEqual(await transport.call('VM.get_all', ['OpaqueRef:s']), []);
  await transport.call('VM.get_all', ['OpaqueRef:s']);
  t.is(seen[0]?.path, '/jsonrpc');
  t.is(seen[0]?.type, 'application/json');
  t.like(seen[0]?.body, { jsonrpc: '2.0', method: 'VM.get_all', params: ['OpaqueRef:s'] });
  t.true(typeof seen[0]?.body['id'] === 'number' && seen[0].body['id'] !== seen[1]?.body['id']);
});
