// The generated protocol modules: regenerated from libvirt's .x files and compared with the
// committed ones whenever the source is present (CI fetches it, so there it must be), the
// generator's handling of each XDR construct and annotation, and the tables it produced.

import test from 'ava';
import fc from 'fast-check';
import * as oracle from '@stellar/js-xdr';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as x from '../src/xdr/codec.js';
import * as remote from '../src/protocol/generated/remote.js';
import * as admin from '../src/protocol/generated/admin.js';
import * as virnet from '../src/protocol/generated/virnet.js';
import { aclObject, applicableAclRules, indexProcedures, unsupportedOperation } from '../src/protocol/procedures.js';
import {
  DOMAIN_EVENT_ID_LAST,
  DomainEventId,
  DomainEventType,
  DomainState,
  DomainXmlFlag,
  ListDomainsFlag,
} from '../src/protocol/remote.js';
import { ErrorCode, ErrorDomain } from '../src/errors.js';

const repositoryRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const generatorUrl = pathToFileURL(join(repositoryRoot, 'scripts', 'protocol-gen', 'generate.mjs')).href;
const parserUrl = pathToFileURL(join(repositoryRoot, 'scripts', 'protocol-gen', 'xdr-parser.mjs')).href;
const emitUrl = pathToFileURL(join(repositoryRoot, 'scripts', 'protocol-gen', 'emit.mjs')).href;

const generator = await import(generatorUrl);
const sourceDir: string | null = generator.findSourceDir();
const inCi = process.env['CI'] === 'true';

if (sourceDir || inCi) {
  test("regenerating from libvirt's .x files gives the committed modules byte for byte", (t) => {
    if (!sourceDir) {
      t.fail(`libvirt's source is missing (CI=true): run scripts/fetch-libvirt-protocol.sh (.ci/run does)`);
      return;
    }
    const files: { path: string; content: string }[] = generator.generate(sourceDir);
    t.is(files.length, 3);
    for (const f of files) {
      const committed = readFileSync(join(repositoryRoot, f.path), 'utf8');
      t.true(committed === f.content, `${f.path} differs from what ${sourceDir} gives: run node scripts/protocol-gen/generate.mjs`);
    }
  });
} else {
  test.skip('regenerate and compare: libvirt source absent, run scripts/fetch-libvirt-protocol.sh', () => {});
}

const SAMPLE = `
%#include "ignored.h"
const SAMPLE_MAX = 8;
const SAMPLE_ALIAS = SAMPLE_MAX;
enum sample_color { SAMPLE_COLOR_RED = 1, SAMPLE_COLOR_DARK_BLUE = 7 };
typedef string sample_name<SAMPLE_MAX>;
typedef sample_name *sample_maybe_name;
typedef opaque sample_uuid[16];
struct sample_thing {
    sample_name name;
    sample_uuid uuid;
    unsigned hyper size;
    hyper delta;
    bool on;
    float f;
    double d;
    unsigned prog;
    sample_color color;
    int ids<SAMPLE_ALIAS>;
    int fixed[2];
    opaque blob<>;
    char label<4>;
    char model[8];
    sample_maybe_name alias;
    sample_thing_inner *inner;
};
struct sample_thing_inner { int n; };
union sample_value switch (int type) {
 case 1:
     int i;
 case 2:
 case 3:
     sample_name s;
 default:
     void;
};
/* Procedures. */
enum sample_procedure {
    /**
     * @generate: both
     * @priority: high
     * @acl: thing:write
     * @acl: thing:save:!EXT_A|EXT_B
     * @acl: thing:secure:EXT_B
     * @acl: thing:agent::source:EXT_SRC
     * @aclfilter: thing:getattr
     * @readstream: 1
     * @sparseflag: EXT_B
     */
    SAMPLE_PROC_THING_GET = 1
};
struct sample_thing_get_args { sample_thing thing; unsigned int flags; unsigned int source; };
struct sample_thing_get_ret { sample_value v; };
`;

test('the generator handles every XDR construct libvirt uses and its annotations', async (t) => {
  const { parse } = await import(parserUrl);
  const { emitProtocol } = await import(emitUrl);
  const external: Record<string, number> = { EXT_A: 1, EXT_B: 2, EXT_SRC: 4 };
  const ts: string = emitProtocol(
    parse(SAMPLE, 'sample.x'),
    {
      file: 'sample.x',
      prefix: 'sample_',
      typePrefix: 'Sample',
      constPrefix: 'SAMPLE_',
      program: {
        enumName: 'sample_procedure',
        procPrefix: 'SAMPLE_PROC_',
        objectName: 'SampleProc',
        tableName: 'sampleProcedures',
        apiName: 'SampleApi',
        clientName: 'SampleClient',
        apiPrefix: 'vir',
      },
    },
    {
      resolveExternal: (n: string) => external[n],
      apiInfo: (c: string) => ({ name: c, domain: 0, readOnlyDenied: false }),
      stamp: { source: 'sample.x', version: '1.2.3', debianVersion: '1.2.3-1' },
    },
  );
  for (const line of [
    'export const SAMPLE_ALIAS = 8;',
    "export const SAMPLE_LIBVIRT_VERSION = '1.2.3';",
    'export const SampleColor = {\n  RED: 1,\n  DARK_BLUE: 7,\n} as const;',
    'export const name: x.Codec<SampleName> = x.string(8);',
    'export const maybeName: x.Codec<SampleMaybeName> = x.optional(name);',
    'export const uuid: x.Codec<SampleUuid> = x.fixedOpaque(16);',
    '  size: x.uhyper,',
    '  delta: x.hyper,',
    '  on: x.bool,',
    '  f: x.float,',
    '  d: x.double,',
    '  prog: x.uint,',
    '  color: x.int,',
    '  ids: x.array(x.int, 8),',
    '  fixed: x.fixedArray(x.int, 2),',
    '  blob: x.opaque(),',
    '  label: x.charArray(4),',
    '  model: x.fixedCharString(8),',
    '  inner: x.optional(thingInner),',
    '  | { tag: 2; value: SampleName }',
    '  | { tag: number; value: undefined };',
    '}, x.xvoid) as unknown as x.Codec<SampleValue>;',
    'flags: { names: ["EXT_A","EXT_B"], mask: 3, negate: true }',
    'flags: { names: ["EXT_B"], mask: 2, negate: false }',
    'param: { field: "source", valueName: "EXT_SRC", value: 4, negate: false }',
    'aclFilter: [{ object: "thing", permission: "getattr" }]',
    'stream: { direction: "read", param: 1, sparseFlag: { name: "EXT_B", value: 2 } }',
    'priority: "high"',
    '  thingGet(args: SampleThingGetArgs): Promise<SampleThingGetRet>;',
    '    return this.caller.call(1, thingGetArgs, args, thingGetRet);',
  ]) {
    t.true(ts.includes(line), `missing: ${line}`);
  }
  // The inner struct is declared after its user in the file, but its codec comes first.
  t.true(ts.indexOf('export const thingInner') < ts.indexOf('export const thing:'));
});

test('the generator refuses what it cannot represent rather than guessing', async (t) => {
  const { parse } = await import(parserUrl);
  const { emitProtocol } = await import(emitUrl);
  const spec = { file: 'bad.x', prefix: 'b_', typePrefix: 'B', constPrefix: 'B_' };
  const opts = {
    resolveExternal: () => undefined,
    apiInfo: (c: string) => ({ name: c, domain: 0, readOnlyDenied: false }),
    stamp: { source: 'bad.x', version: '0', debianVersion: '0' },
  };
  t.throws(() => parse('struct a { int x }', 'bad.x'), { message: /bad.x:1: expected ';'/ });
  t.throws(() => parse('program P { } = 1;', 'bad.x'), { message: /program definitions/ });
  t.throws(() => parse('struct a { quadruple q; };', 'bad.x'), { message: /quadruple/ });
  t.throws(() => emitProtocol(parse('struct a { int x<UNKNOWN_MAX>; };', 'bad.x'), spec, opts), {
    message: /unknown constant UNKNOWN_MAX/,
  });
  t.throws(() => emitProtocol(parse('struct a { b y; };', 'bad.x'), spec, opts), { message: /unknown type b/ });
  t.throws(() => emitProtocol(parse('struct a { a *next; };', 'bad.x'), spec, opts), { message: /recursive/ });
});

test('the remote table has every libvirt 9.0 procedure with its annotations', (t) => {
  t.is(remote.REMOTE_LIBVIRT_VERSION, '9.0.0');
  const byNumber = indexProcedures(remote.remoteProcedures);
  t.is(remote.remoteProcedures.length, 443);
  t.is(byNumber.size, 443);
  t.is(Math.max(...byNumber.keys()), remote.RemoteProc.DOMAIN_FD_ASSOCIATE);

  const create = byNumber.get(remote.RemoteProc.DOMAIN_CREATE)!;
  t.like(create, { name: 'DOMAIN_CREATE', method: 'domainCreate', api: 'virDomainCreate', priority: 'low' });
  t.deepEqual(create.acl, [{ object: 'domain', permission: 'start' }]);
  t.deepEqual(create.object, { in: 'args', path: ['dom'] });

  const xml = byNumber.get(remote.RemoteProc.DOMAIN_GET_XML_DESC)!;
  const dom = { name: 'd', uuid: Buffer.alloc(16), id: 1 };
  t.deepEqual(
    applicableAclRules(xml, { dom, flags: 0 }).map((r) => r.permission),
    ['read'],
  );
  t.deepEqual(
    applicableAclRules(xml, { dom, flags: 1 | 8 }).map((r) => r.permission),
    ['read', 'read_secure', 'read_secure'],
  );
  t.is(aclObject(xml, { dom, flags: 0 }), dom);

  // `!CONFIG|LIVE`: save is needed when neither flag is set, or when CONFIG is.
  const meta = byNumber.get(remote.RemoteProc.DOMAIN_SET_METADATA)!;
  const perms = (flags: number) => applicableAclRules(meta, { flags }).map((r) => r.permission);
  t.deepEqual(perms(0), ['write', 'save']);
  t.deepEqual(perms(1), ['write']);
  t.deepEqual(perms(2), ['write', 'save']);
  t.deepEqual(perms(3), ['write', 'save']);

  const list = byNumber.get(remote.RemoteProc.CONNECT_LIST_ALL_DOMAINS)!;
  t.deepEqual(list.aclFilter, [{ object: 'domain', permission: 'getattr' }]);
  t.is(list.priority, 'high');

  const download = byNumber.get(remote.RemoteProc.STORAGE_VOL_DOWNLOAD)!;
  t.deepEqual(download.stream, { direction: 'read', param: 1, sparseFlag: { name: 'VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM', value: 1 } });
  t.deepEqual(byNumber.get(remote.RemoteProc.DOMAIN_SCREENSHOT)!.stream?.direction, 'read');

  const snapshotDelete = byNumber.get(remote.RemoteProc.DOMAIN_SNAPSHOT_DELETE)!;
  t.deepEqual(snapshotDelete.object, { in: 'args', path: ['snap', 'dom'] });
  t.deepEqual(byNumber.get(remote.RemoteProc.DOMAIN_LOOKUP_BY_NAME)!.object, { in: 'ret', path: ['dom'] });

  const addresses = byNumber.get(remote.RemoteProc.DOMAIN_INTERFACE_ADDRESSES)!;
  t.true(addresses.acl.some((r) => r.param?.field === 'source' && r.param.valueName === 'VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT'));

  const lifecycle = byNumber.get(remote.RemoteProc.DOMAIN_EVENT_CALLBACK_LIFECYCLE)!;
  t.is(lifecycle.message, remote.domainEventCallbackLifecycleMsg);
  t.deepEqual(lifecycle.acl, []);

  for (const p of remote.remoteProcedures) t.true(p.api.startsWith('vir'), p.name);
  t.is(byNumber.get(remote.RemoteProc.DOMAIN_GET_OS_TYPE)!.api, 'virDomainGetOSType');
  t.is(unsupportedOperation(create).message, 'this function is not supported by the connection driver: virDomainCreate');
});

test('the admin and virnet modules come from the same release', (t) => {
  t.is(admin.ADMIN_PROGRAM, 0x06900690);
  t.is(admin.adminProcedures.length, 19);
  t.is(indexProcedures(admin.adminProcedures).get(admin.AdminProc.CLIENT_GET_INFO)!.api, 'virAdmClientGetInfo');
  t.is(virnet.VIR_NET_MESSAGE_MAX, 33554432);
  t.deepEqual(virnet.VirNetMessageType, { CALL: 0, REPLY: 1, MESSAGE: 2, STREAM: 3, CALL_WITH_FDS: 4, REPLY_WITH_FDS: 5, STREAM_HOLE: 6 });
  const hole = x.encode(virnet.streamHole, { length: 1n << 40n, flags: 0 });
  t.is(hole.toString('hex'), '000001000000000000000000');
});

test('the generated client calls each procedure by its number with its codecs', async (t) => {
  const seen: { proc: number; args: unknown }[] = [];
  const client = new remote.RemoteClient({
    call: async (proc, argsCodec, args, retCodec) => {
      seen.push({ proc, args: x.decode(argsCodec, x.encode(argsCodec, args)) });
      return x.decode(
        retCodec,
        retCodec === remote.connectGetHostnameRet ? x.encode(remote.connectGetHostnameRet, { hostname: 'h' }) : Buffer.alloc(0),
      ) as never;
    },
  });
  const dom = { name: 'vm', uuid: Buffer.alloc(16, 1), id: -1 };
  await client.domainCreate({ dom });
  t.deepEqual(await client.connectGetHostname(), { hostname: 'h' });
  t.deepEqual(seen, [
    { proc: 9, args: { dom } },
    { proc: 59, args: undefined },
  ]);
});

// Generated codecs against @stellar/js-xdr, declared independently from libvirt's definitions.
const o = oracle;
const oNonnullDomain = o.struct('NonnullDomain', { name: o.string(4194304), uuid: o.opaque(16), id: o.int32() });
const TYPED_ARMS: [number, oracle.XdrType<any>][] = [
  [1, o.int32()],
  [2, o.uint32()],
  [3, o.int64()],
  [4, o.uint64()],
  [5, o.double()],
  [6, o.int32()],
  [7, o.string(4194304)],
];
const oTypedParamValue = o.union('TypedParamValue', {
  switchOn: o.int32(),
  cases: TYPED_ARMS.map(([tag, arm]) => o.case(`t${tag}`, tag, o.field('value', arm))),
});
const oTypedParam = o.struct('TypedParam', { field: o.string(4194304), value: oTypedParamValue });
const utf8 = new TextEncoder();

const text = fc.string({ maxLength: 20 });
const domainArb = fc.record({
  name: text,
  uuid: fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => Buffer.from(b)),
  id: fc.integer({ min: -0x80000000, max: 0x7fffffff }),
});
const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const typedValueArb: fc.Arbitrary<remote.RemoteTypedParamValue> = fc.oneof(
  fc.record({ tag: fc.constant(1 as const), value: fc.integer({ min: -0x80000000, max: 0x7fffffff }) }),
  fc.record({ tag: fc.constant(2 as const), value: fc.integer({ min: 0, max: 0xffffffff }) }),
  fc.record({ tag: fc.constant(3 as const), value: fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n }) }),
  fc.record({ tag: fc.constant(4 as const), value: u64 }),
  fc.record({ tag: fc.constant(5 as const), value: fc.double({ noNaN: true }) }),
  fc.record({ tag: fc.constant(6 as const), value: fc.integer({ min: 0, max: 1 }) }),
  fc.record({ tag: fc.constant(7 as const), value: text }),
);
const oracleDomain = (d: { name: string; uuid: Buffer; id: number }) => ({
  name: utf8.encode(d.name),
  uuid: new Uint8Array(d.uuid),
  id: d.id,
});
const oracleTyped = (v: remote.RemoteTypedParamValue) => ({ type: v.tag, value: v.tag === 7 ? utf8.encode(v.value) : v.value });

interface OracleCase {
  name: string;
  codec: x.Codec<any>;
  oracle: oracle.XdrType<any>;
  arb: fc.Arbitrary<any>;
  toOracle(v: any): any;
}

const cases: OracleCase[] = [
  {
    name: 'remote_connect_list_all_domains_ret',
    codec: remote.connectListAllDomainsRet,
    oracle: o.struct('ListAllRet', { domains: o.array(oNonnullDomain, 16384), ret: o.uint32() }),
    arb: fc.record({ domains: fc.array(domainArb, { maxLength: 5 }), ret: fc.integer({ min: 0, max: 0xffffffff }) }),
    toOracle: (v: remote.RemoteConnectListAllDomainsRet) => ({ domains: v.domains.map(oracleDomain), ret: v.ret }),
  },
  {
    name: 'remote_domain_get_info_ret',
    codec: remote.domainGetInfoRet,
    oracle: o.struct('GetInfoRet', {
      state: o.uint32(),
      maxMem: o.uint64(),
      memory: o.uint64(),
      nrVirtCpu: o.uint32(),
      cpuTime: o.uint64(),
    }),
    arb: fc.record({
      state: fc.integer({ min: 0, max: 7 }),
      maxMem: u64,
      memory: u64,
      nrVirtCpu: fc.integer({ min: 0, max: 0xffff }),
      cpuTime: u64,
    }),
    toOracle: (v: remote.RemoteDomainGetInfoRet) => v,
  },
  {
    name: 'remote_domain_get_scheduler_parameters_flags_ret (typed parameters: a union with a double arm)',
    codec: remote.domainGetSchedulerParametersFlagsRet,
    oracle: o.struct('SchedRet', { params: o.array(oTypedParam, 16) }),
    arb: fc.record({ params: fc.array(fc.record({ field: text, value: typedValueArb }), { maxLength: 4 }) }),
    toOracle: (v: remote.RemoteDomainGetSchedulerParametersFlagsRet) => ({
      params: v.params.map((p) => ({ field: utf8.encode(p.field), value: oracleTyped(p.value) })),
    }),
  },
  {
    name: 'virNetStreamHole',
    codec: virnet.streamHole,
    oracle: o.struct('Hole', { length: o.int64(), flags: o.uint32() }),
    arb: fc.record({ length: fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n }), flags: fc.integer({ min: 0, max: 0xffffffff }) }),
    toOracle: (v: virnet.VirNetStreamHole) => v,
  },
];

for (const c of cases) {
  test(`property: generated ${c.name} encodes as js-xdr does and decodes its bytes back`, (t) => {
    fc.assert(
      fc.property(c.arb, (v) => {
        const mine = x.encode(c.codec, v);
        const theirs = Buffer.from(c.oracle.encode(c.toOracle(v)));
        if (!mine.equals(theirs)) return false;
        return x.encode(c.codec, x.decode(c.codec, theirs)).equals(mine);
      }),
      { numRuns: 400 },
    );
    t.pass();
  });
}

// The constants core writes by hand (they live in libvirt's C headers, not in the .x files) must
// equal the headers' values.
if (sourceDir || inCi) {
  test("hand-written libvirt constants equal the values in libvirt's public headers", async (t) => {
    if (!sourceDir) {
      t.fail("libvirt's source is missing (CI=true): run scripts/fetch-libvirt-protocol.sh");
      return;
    }
    const { readHeaderConstants } = await import(pathToFileURL(join(repositoryRoot, 'scripts', 'protocol-gen', 'c-constants.mjs')).href);
    const lookup: (name: string) => number | undefined = readHeaderConstants(join(sourceDir, 'include', 'libvirt'));
    const groups: [string, Record<string, number>][] = [
      ['VIR_ERR_', ErrorCode],
      ['VIR_FROM_', ErrorDomain],
      ['VIR_DOMAIN_', DomainState],
      ['VIR_CONNECT_LIST_DOMAINS_', ListDomainsFlag],
      ['VIR_DOMAIN_XML_', DomainXmlFlag],
      ['VIR_DOMAIN_EVENT_ID_', DomainEventId],
      ['VIR_DOMAIN_EVENT_', DomainEventType],
    ];
    for (const [prefix, values] of groups) {
      for (const [name, value] of Object.entries(values))
        t.is<number | undefined, number | undefined>(value, lookup(prefix + name), prefix + name);
    }
    t.is<number | undefined, number | undefined>(DOMAIN_EVENT_ID_LAST, lookup('VIR_DOMAIN_EVENT_ID_LAST'));
  });
}

test("property: hostile bytes for any procedure's arguments, reply or event only ever raise XdrError", (t) => {
  const codecs = [...remote.remoteProcedures, ...admin.adminProcedures].flatMap((p) => [p.args, p.ret, ...(p.message ? [p.message] : [])]);
  fc.assert(
    fc.property(fc.nat({ max: codecs.length - 1 }), fc.uint8Array({ maxLength: 256 }), (i, bytes) => {
      try {
        x.decode(codecs[i]!, Buffer.from(bytes));
      } catch (e) {
        if (!(e instanceof x.XdrError)) throw e;
      }
    }),
    { numRuns: 5000 },
  );
  // A length word far beyond the input is refused before anything is allocated for it.
  const huge = Buffer.from('7fffffff', 'hex');
  t.throws(() => x.decode(remote.domainDefineXmlArgs, huge), { instanceOf: x.XdrError, message: /exceeds its maximum|runs past the end/ });
  t.throws(() => x.decode(remote.connectListAllDomainsRet, Buffer.from('00004000', 'hex')), {
    instanceOf: x.XdrError,
    message: /runs past the end/,
  });
});

test('every number from 1 to the last procedure is defined, and the streams are the annotated ones', (t) => {
  const numbers = remote.remoteProcedures.map((p) => p.number).sort((a, b) => a - b);
  t.deepEqual(
    numbers,
    Array.from({ length: numbers.length }, (_, i) => i + 1),
  );
  t.deepEqual(
    remote.remoteProcedures.filter((p) => p.stream).map((p) => p.number),
    [148, 201, 208, 209, 211, 215, 296],
  );
});
