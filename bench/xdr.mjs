// XDR throughput: our codec (core) against @stellar/js-xdr on two typical libvirt messages.
//   node bench/xdr.mjs [seconds-per-case]
// Needs the compiled core (npx tsc -b core). The oracle is handed its strings already as UTF-8
// bytes (its string type takes bytes), so its figures exclude the text conversion ours does.

import * as o from '@stellar/js-xdr';
import { remote } from '../core/dist/src/index.js'; // generated from remote_protocol.x

const secondsPerCase = Number(process.argv[2] ?? 1);

// CONNECT_LIST_ALL_DOMAINS reply with 100 domains.
const domains = Array.from({ length: 100 }, (_, i) => ({
  name: `guest-${String(i).padStart(3, '0')}.lab.example`,
  uuid: Buffer.from(Array.from({ length: 16 }, (_, j) => (i * 16 + j) & 0xff)),
  id: i % 3 === 0 ? -1 : i + 1,
}));
const listValue = { domains, ret: domains.length };
const oracleList = o.struct('ListAllDomainsRet', {
  domains: o.array(o.struct('NonnullDomain', { name: o.string(4194304), uuid: o.opaque(16), id: o.int32() }), 16384),
  ret: o.uint32(),
});
const utf8 = new TextEncoder();
const oracleListValue = {
  domains: domains.map((d) => ({ name: utf8.encode(d.name), uuid: new Uint8Array(d.uuid), id: d.id })),
  ret: domains.length,
};

// AUTH_SASL_START args carrying 100 bytes of SASL data as libvirt's char<65536> (one word per byte).
const saslData = Buffer.from(Array.from({ length: 100 }, (_, i) => (i * 37 + 11) & 0xff));
const saslValue = { mech: 'SCRAM-SHA-256', nil: 0, data: saslData };
const oracleSasl = o.struct('SaslStartArgs', { mech: o.string(4194304), nil: o.int32(), data: o.array(o.int32(), 65536) });
const oracleSaslValue = { mech: utf8.encode('SCRAM-SHA-256'), nil: 0, data: [...saslData].map((b) => (b << 24) >> 24) };

const { encode, decode } = await import('../core/dist/src/xdr/codec.js');

function measure(fn) {
  // Warm up, then count whole batches for the time budget.
  for (let i = 0; i < 2000; i++) fn();
  const budget = BigInt(Math.round(secondsPerCase * 1e9));
  const started = process.hrtime.bigint();
  let ops = 0;
  let elapsed;
  do {
    for (let i = 0; i < 200; i++) fn();
    ops += 200;
    elapsed = process.hrtime.bigint() - started;
  } while (elapsed < budget);
  return (ops * 1e9) / Number(elapsed);
}

const cases = [
  {
    name: 'LIST_ALL_DOMAINS ret, 100 domains',
    ours: { codec: remote.connectListAllDomainsRet, value: listValue },
    theirs: { schema: oracleList, value: oracleListValue },
  },
  {
    name: 'AUTH_SASL_START args, 100 data bytes',
    ours: { codec: remote.authSaslStartArgs, value: saslValue },
    theirs: { schema: oracleSasl, value: oracleSaslValue },
  },
];

const fmt = (n) => Math.round(n).toLocaleString('en-US').padStart(11);
console.log(`node ${process.version}, ${secondsPerCase}s per measurement`);
for (const c of cases) {
  const ourBytes = encode(c.ours.codec, c.ours.value);
  const theirBytes = c.theirs.schema.encode(c.theirs.value);
  if (!Buffer.from(theirBytes).equals(ourBytes)) throw new Error(`${c.name}: the two encodings differ`);
  console.log(`\n${c.name} (${ourBytes.length} bytes on the wire)`);
  console.log(`  ${'ops/s'.padStart(30)}${'ours'.padStart(11)}${'js-xdr'.padStart(12)}   ratio`);
  const rows = [
    ['encode', () => encode(c.ours.codec, c.ours.value), () => c.theirs.schema.encode(c.theirs.value)],
    ['decode', () => decode(c.ours.codec, ourBytes), () => c.theirs.schema.decode(theirBytes)],
    [
      'encode+decode',
      () => decode(c.ours.codec, encode(c.ours.codec, c.ours.value)),
      () => c.theirs.schema.decode(c.theirs.schema.encode(c.theirs.value)),
    ],
  ];
  for (const [label, ours, theirs] of rows) {
    const a = measure(ours);
    const b = measure(theirs);
    console.log(`  ${label.padStart(30)}${fmt(a)} ${fmt(b)}   ${(a / b).toFixed(2)}x`);
  }
}
