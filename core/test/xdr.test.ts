// The XDR codec: exact bytes for every combinator, the bounds and size checks, and property
// tests that hold our encoder byte-for-byte against @stellar/js-xdr as an independent oracle.

import test from 'ava';
import fc from 'fast-check';
import * as oracle from '@stellar/js-xdr';
import * as x from '../src/xdr/codec.js';
import { XdrError, XdrReader, type Codec } from '../src/xdr/codec.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const bytes = (h: string): Buffer => Buffer.from(h.replace(/\s+/g, ''), 'hex');
const isXdrError = { instanceOf: XdrError };

// ---------------------------------------------------------------------------------------------
// Primitive types

test('int encodes both ends of its range and rejects values outside it', (t) => {
  t.is(hex(x.encode(x.int, -0x80000000)), '80000000');
  t.is(hex(x.encode(x.int, 0x7fffffff)), '7fffffff');
  t.is(hex(x.encode(x.int, -1)), 'ffffffff');
  t.is(x.decode(x.int, bytes('80000000')), -0x80000000);
  t.is(x.decode(x.int, bytes('ffffffff')), -1);
  for (const bad of [0x80000000, -0x80000001, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    t.throws(() => x.encode(x.int, bad), isXdrError, `int ${bad}`);
  }
});

test('unsigned int covers 0..2^32-1 and rejects negatives and larger values', (t) => {
  t.is(hex(x.encode(x.uint, 0)), '00000000');
  t.is(hex(x.encode(x.uint, 0xffffffff)), 'ffffffff');
  t.is(x.decode(x.uint, bytes('ffffffff')), 0xffffffff);
  for (const bad of [-1, 0x100000000, 0.5]) t.throws(() => x.encode(x.uint, bad), isXdrError, `uint ${bad}`);
});

test('hyper and unsigned hyper cover their 64-bit ranges exactly', (t) => {
  const min = -(1n << 63n);
  const max = (1n << 63n) - 1n;
  t.is(hex(x.encode(x.hyper, min)), '8000000000000000');
  t.is(hex(x.encode(x.hyper, max)), '7fffffffffffffff');
  t.is(hex(x.encode(x.hyper, -2n)), 'fffffffffffffffe');
  t.is(x.decode(x.hyper, bytes('fffffffffffffffe')), -2n);
  t.throws(() => x.encode(x.hyper, max + 1n), isXdrError);
  t.throws(() => x.encode(x.hyper, min - 1n), isXdrError);

  t.is(hex(x.encode(x.uhyper, 0n)), '0000000000000000');
  t.is(hex(x.encode(x.uhyper, (1n << 64n) - 1n)), 'ffffffffffffffff');
  t.is(x.decode(x.uhyper, bytes('ffffffffffffffff')), (1n << 64n) - 1n);
  t.is(x.decode(x.uhyper, bytes('0000000100000000')), 1n << 32n);
  t.throws(() => x.encode(x.uhyper, -1n), isXdrError);
  t.throws(() => x.encode(x.uhyper, 1n << 64n), isXdrError);
});

test('bool is 0 or 1 on the wire and any other word is refused', (t) => {
  t.is(hex(x.encode(x.bool, true)), '00000001');
  t.is(hex(x.encode(x.bool, false)), '00000000');
  t.true(x.decode(x.bool, bytes('00000001')));
  t.false(x.decode(x.bool, bytes('00000000')));
  t.throws(() => x.decode(x.bool, bytes('00000002')), { instanceOf: XdrError, message: /neither 0 nor 1/ });
  t.throws(() => x.decode(x.bool, bytes('ffffffff')), isXdrError);
});

test('enum accepts exactly its declared values in both directions', (t) => {
  const color = x.enumeration([0, 1, 5, -3] as const, 'color');
  t.is(hex(x.encode(color, 5)), '00000005');
  t.is(hex(x.encode(color, -3)), 'fffffffd');
  t.is(x.decode(color, bytes('fffffffd')), -3);
  t.throws(() => x.encode(color, 2 as 0), { instanceOf: XdrError, message: /color value 2 is not defined/ });
  t.throws(() => x.decode(color, bytes('00000002')), { instanceOf: XdrError, message: /color value 2/ });
});

test('void takes no bytes', (t) => {
  t.is(x.encode(x.xvoid, undefined).length, 0);
  t.is(x.decode(x.xvoid, Buffer.alloc(0)), undefined);
});

// ---------------------------------------------------------------------------------------------
// Strings and opaque data

test('string: length word, UTF-8 bytes, zero padding to 4', (t) => {
  t.is(hex(x.encode(x.string(), '')), '00000000');
  t.is(hex(x.encode(x.string(), 'a')), '00000001' + '61000000');
  t.is(hex(x.encode(x.string(), 'abc')), '00000003' + '61626300');
  t.is(hex(x.encode(x.string(), 'abcd')), '00000004' + '61626364');
  t.is(hex(x.encode(x.string(), 'abcde')), '00000005' + '6162636465000000');
  // The length counts UTF-8 bytes, not UTF-16 units: é is two bytes.
  t.is(hex(x.encode(x.string(), 'é')), '00000002' + 'c3a90000');
  t.is(x.decode(x.string(), bytes('00000002 c3a90000')), 'é');
  t.is(x.decode(x.string(), bytes('00000005 6162636465000000')), 'abcde');
});

test('string maximum is enforced on encode and on decode, in bytes', (t) => {
  t.is(hex(x.encode(x.string(3), 'abc')), '00000003' + '61626300');
  t.throws(() => x.encode(x.string(3), 'abcd'), { instanceOf: XdrError, message: /4 bytes exceeds its maximum of 3/ });
  t.throws(() => x.encode(x.string(1), 'é'), isXdrError);
  t.throws(() => x.decode(x.string(3), bytes('00000004 61626364')), { instanceOf: XdrError, message: /length 4 exceeds its maximum of 3/ });
});

test('variable opaque: length word, raw bytes, padding; maximum enforced', (t) => {
  const o = x.opaque(6);
  t.is(hex(x.encode(o, Buffer.from([]))), '00000000');
  t.is(hex(x.encode(o, Buffer.from([1, 2, 3, 4, 5]))), '00000005' + '0102030405000000');
  t.deepEqual(x.decode(o, bytes('00000005 0102030405000000')), Buffer.from([1, 2, 3, 4, 5]));
  t.throws(() => x.encode(o, Buffer.alloc(7)), { instanceOf: XdrError, message: /7 bytes exceeds its maximum of 6/ });
  t.throws(() => x.decode(o, bytes('00000007 00000000 00000000')), { instanceOf: XdrError, message: /exceeds its maximum of 6/ });
});

test('decoded opaque data is a copy, not a view of the packet', (t) => {
  const packet = bytes('00000002 abcd0000');
  const out = x.decode(x.opaque(), packet);
  packet[4] = 0;
  t.deepEqual(out, Buffer.from([0xab, 0xcd]));
});

test('fixed opaque has no length word and exactly its size', (t) => {
  const uuid = x.fixedOpaque(16);
  const v = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
  t.is(hex(x.encode(uuid, v)), '00112233445566778899aabbccddeeff');
  t.deepEqual(x.decode(uuid, v), v);
  t.is(hex(x.encode(x.fixedOpaque(3), Buffer.from([9, 8, 7]))), '09080700');
  t.deepEqual(x.decode(x.fixedOpaque(3), bytes('09080700')), Buffer.from([9, 8, 7]));
  t.throws(() => x.encode(uuid, Buffer.alloc(15)), { instanceOf: XdrError, message: /exactly 16 bytes, got 15/ });
  t.throws(() => x.decode(uuid, Buffer.alloc(12)), isXdrError);
});

// ---------------------------------------------------------------------------------------------
// libvirt's char arrays

test('charArray writes one sign-extended word per byte, as x86 libvirt does', (t) => {
  const data = x.charArray(65536);
  t.is(hex(x.encode(data, Buffer.from([0x80]))), '00000001' + 'ffffff80');
  t.is(hex(x.encode(data, Buffer.from([0x00, 0x7f, 0xff, 0x61]))), '00000004' + '00000000' + '0000007f' + 'ffffffff' + '00000061');
  t.is(hex(x.encode(data, Buffer.alloc(0))), '00000000');
});

test('charArray decodes by the low 8 bits, so zero-extended peers are understood', (t) => {
  const data = x.charArray(65536);
  t.deepEqual(x.decode(data, bytes('00000001 00000080')), Buffer.from([0x80]));
  t.deepEqual(x.decode(data, bytes('00000001 ffffff80')), Buffer.from([0x80]));
  t.deepEqual(x.decode(data, bytes('00000002 000000ff ffffffff')), Buffer.from([0xff, 0xff]));
});

test('charArray maximum and element count are checked before allocating', (t) => {
  t.throws(() => x.encode(x.charArray(2), Buffer.alloc(3)), { instanceOf: XdrError, message: /exceeds its maximum of 2/ });
  t.throws(() => x.decode(x.charArray(2), bytes('00000003 00000001 00000002 00000003')), {
    instanceOf: XdrError,
    message: /exceeds its maximum/,
  });
  // 3 elements need 12 bytes; only 8 follow. A packed-opaque peer (3 bytes + pad) is refused too.
  t.throws(() => x.decode(x.charArray(100), bytes('00000003 00000001 00000002')), { instanceOf: XdrError, message: /runs past the end/ });
  t.throws(() => x.decode(x.charArray(100), bytes('00000003 61626300')), { instanceOf: XdrError, message: /runs past the end/ });
});

test('fixedCharString is NUL-padded text, one word per byte', (t) => {
  const model = x.fixedCharString(4);
  t.is(hex(x.encode(model, 'ab')), '00000061' + '00000062' + '00000000' + '00000000');
  t.is(hex(x.encode(model, '')), '00000000'.repeat(4));
  t.is(x.decode(model, bytes('00000061 00000062 00000000 00000063')), 'ab');
  // No NUL at all: the whole array is the text (libvirt always NUL-terminates, but tolerate it).
  t.is(x.decode(model, bytes('00000061 00000062 00000063 00000064')), 'abcd');
  t.is(x.decode(model, bytes('ffffffc3 ffffffa9 00000000 00000000')), 'é');
  t.is(hex(x.encode(model, 'é')), 'ffffffc3' + 'ffffffa9' + '00000000' + '00000000');
  // The text must leave room for the terminating NUL.
  t.throws(() => x.encode(model, 'abcd'), { instanceOf: XdrError, message: /does not fit char\[4\]/ });
  t.throws(() => x.decode(model, bytes('00000061 00000062 00000000')), isXdrError);
});

// ---------------------------------------------------------------------------------------------
// Composite types

test('variable array: count then elements; maximum enforced both ways', (t) => {
  const ints = x.array(x.int, 3);
  t.is(hex(x.encode(ints, [])), '00000000');
  t.is(hex(x.encode(ints, [1, -1, 2])), '00000003' + '00000001' + 'ffffffff' + '00000002');
  t.deepEqual(x.decode(ints, bytes('00000002 00000001 ffffffff')), [1, -1]);
  t.throws(() => x.encode(ints, [1, 2, 3, 4]), { instanceOf: XdrError, message: /4 elements exceeds its maximum of 3/ });
  t.throws(() => x.decode(ints, bytes('00000004 00000001 00000002 00000003 00000004')), {
    instanceOf: XdrError,
    message: /exceeds its maximum of 3/,
  });
});

test('fixed array: elements only, exactly its size', (t) => {
  const three = x.fixedArray(x.uint, 3);
  t.is(hex(x.encode(three, [1, 2, 3])), '00000001' + '00000002' + '00000003');
  t.deepEqual(x.decode(three, bytes('00000001 00000002 00000003')), [1, 2, 3]);
  t.throws(() => x.encode(three, [1, 2]), { instanceOf: XdrError, message: /exactly 3 elements, got 2/ });
  t.throws(() => x.decode(three, bytes('00000001 00000002')), isXdrError);
});

test('optional writes flag 1 or 0, and reads any non-zero flag as present', (t) => {
  const opt = x.optional(x.string(10));
  t.is(hex(x.encode(opt, null)), '00000000');
  t.is(hex(x.encode(opt, 'ab')), '00000001' + '00000002' + '61620000');
  t.is(x.decode(opt, bytes('00000000')), null);
  t.is(x.decode(opt, bytes('00000001 00000002 61620000')), 'ab');
  // go-libvirt writes the CONNECT_OPEN name flag as the word 0x01000000.
  t.is(x.decode(opt, bytes('01000000 00000002 61620000')), 'ab');
  t.is(x.decode(opt, bytes('ffffffff 00000002 61620000')), 'ab');
});

test('struct: fields in declaration order; a missing field is an error', (t) => {
  const dom = x.struct({ name: x.string(), uuid: x.fixedOpaque(16), id: x.int });
  const value = { name: 'vm1', uuid: Buffer.alloc(16, 0xaa), id: -1 };
  const wire = '00000003' + '766d3100' + 'aa'.repeat(16) + 'ffffffff';
  t.is(hex(x.encode(dom, value)), wire);
  t.deepEqual(x.decode(dom, bytes(wire)), value);
  t.throws(() => x.encode(dom, { name: 'vm1', id: 1 } as unknown as typeof value), {
    instanceOf: XdrError,
    message: /field 'uuid' is missing/,
  });
  t.is(dom.minSize, 4 + 16 + 4);
});

test('union: discriminant then the arm; default arm; unknown discriminant refused', (t) => {
  const u = x.union({ 0: x.xvoid, 1: x.int, 2: x.string() });
  t.is(hex(x.encode(u, { tag: 0, value: undefined })), '00000000');
  t.is(hex(x.encode(u, { tag: 1, value: 7 })), '00000001' + '00000007');
  t.is(hex(x.encode(u, { tag: 2, value: 'a' })), '00000002' + '00000001' + '61000000');
  t.deepEqual(x.decode(u, bytes('00000001 00000007')), { tag: 1, value: 7 });
  t.throws(() => x.decode(u, bytes('00000003 00000007')), { instanceOf: XdrError, message: /discriminant 3 has no arm/ });
  t.throws(() => x.encode(u, { tag: 9, value: 1 } as never), isXdrError);

  const withDefault = x.union({ 1: x.int }, x.uhyper);
  t.deepEqual(x.decode(withDefault, bytes('fffffff6 0000000000000005')), { tag: -10, value: 5n });
  t.is(hex(x.encode(withDefault, { tag: 4, value: 5n } as never)), '00000004' + '0000000000000005');
});

// ---------------------------------------------------------------------------------------------
// Malformed input

test('lengths that point past the end of the data are errors', (t) => {
  t.throws(() => x.decode(x.string(), bytes('00000005 61626364')), { instanceOf: XdrError, message: /string/ });
  t.throws(() => x.decode(x.opaque(), bytes('00000005 0102030405')), isXdrError); // padding missing
  t.throws(() => x.decode(x.int, bytes('000000')), { instanceOf: XdrError, message: /int needs 4 bytes at offset 0, only 3 left/ });
  t.throws(() => x.decode(x.hyper, bytes('00000000 000000')), isXdrError);
  t.throws(() => x.decode(x.optional(x.int), bytes('00000001')), isXdrError);
});

test('counts too large for the remaining bytes fail at once, with no huge allocation', (t) => {
  const cases: [Codec<unknown>, string][] = [
    [x.array(x.int), 'ffffffff 00000001'],
    [x.array(x.struct({ a: x.hyper, b: x.hyper })), '00100000' + '00'.repeat(64)],
    [x.string(), 'ffffffff 41414141'],
    [x.opaque(), 'fffffffc'],
    [x.charArray(0xffffffff), '7fffffff 00000001'],
    [x.array(x.array(x.int)), '00000002 7fffffff'],
  ];
  for (const [codec, h] of cases) {
    const started = process.hrtime.bigint();
    t.throws(() => x.decode(codec, bytes(h)), { instanceOf: XdrError, message: /runs past the end|needs/ }, h);
    t.true(process.hrtime.bigint() - started < 50_000_000n, `${h} was rejected quickly`);
  }
});

test('trailing bytes are refused by decode() but left to the caller by a reader', (t) => {
  t.throws(() => x.decode(x.int, bytes('00000001 00000002')), { instanceOf: XdrError, message: /4 trailing bytes/ });
  const r = new XdrReader(bytes('00000001 00000002'));
  t.is(x.int.decode(r), 1);
  t.is(r.remaining, 4);
});

test('a reader honours its start and end offsets', (t) => {
  const buf = bytes('ffffffff 00000007 ffffffff');
  const r = new XdrReader(buf, 4, 8);
  t.is(r.int(), 7);
  t.throws(() => r.int(), isXdrError);
});

test('the writer grows past its initial size and keeps earlier bytes', (t) => {
  const big = Buffer.alloc(10_000, 0x5a);
  const out = x.encode(x.struct({ head: x.int, body: x.opaque(), tail: x.int }), { head: 1, body: big, tail: 2 });
  t.is(out.length, 4 + 4 + 10_000 + 4);
  t.is(out.readInt32BE(0), 1);
  t.is(out.readUInt32BE(4), 10_000);
  t.true(out.subarray(8, 10_008).equals(big));
  t.is(out.readInt32BE(10_008), 2);
});

// ---------------------------------------------------------------------------------------------
// Random schemas, built both with our combinators and with the oracle's

type Schema =
  | { k: 'int' | 'uint' | 'hyper' | 'uhyper' | 'bool' }
  | { k: 'enum'; values: number[] }
  | { k: 'string' | 'opaque' | 'charArray'; max: number }
  | { k: 'fixedOpaque' | 'fixedCharString'; size: number }
  | { k: 'array'; elem: Schema; max: number }
  | { k: 'fixedArray'; elem: Schema; size: number }
  | { k: 'optional'; inner: Schema }
  | { k: 'struct'; fields: Schema[] }
  | { k: 'union'; arms: [number, Schema | null][]; defaultArm: Schema | null };

const INT32 = { min: -0x80000000, max: 0x7fffffff };
const smallMax = fc.integer({ min: 0, max: 12 });

const leafSchema: fc.Arbitrary<Schema> = fc.oneof(
  fc.constantFrom<Schema>({ k: 'int' }, { k: 'uint' }, { k: 'hyper' }, { k: 'uhyper' }, { k: 'bool' }),
  fc.uniqueArray(fc.integer(INT32), { minLength: 1, maxLength: 4 }).map((values): Schema => ({ k: 'enum', values })),
  fc.record({ k: fc.constantFrom('string' as const, 'opaque' as const, 'charArray' as const), max: smallMax }),
  fc.record({ k: fc.constantFrom('fixedOpaque' as const), size: fc.integer({ min: 0, max: 9 }) }),
  fc.record({ k: fc.constantFrom('fixedCharString' as const), size: fc.integer({ min: 1, max: 6 }) }),
);

function schemaArb(depth: number): fc.Arbitrary<Schema> {
  if (depth === 0) return leafSchema;
  const inner = schemaArb(depth - 1);
  // Array elements that encode to nothing (struct {}, opaque[0]) are refused by the oracle.
  const element = inner.filter((s) => ours(s).minSize > 0);
  return fc.oneof(
    { weight: 3, arbitrary: leafSchema },
    fc.record({ k: fc.constant('array' as const), elem: element, max: fc.integer({ min: 0, max: 4 }) }),
    fc.record({ k: fc.constant('fixedArray' as const), elem: element, size: fc.integer({ min: 0, max: 3 }) }),
    // An optional of an optional cannot tell "absent" from "present but absent" in either library.
    inner.filter((s) => s.k !== 'optional').map((s): Schema => ({ k: 'optional', inner: s })),
    fc.array(inner, { minLength: 0, maxLength: 4 }).map((fields): Schema => ({ k: 'struct', fields })),
    fc
      .record({
        tags: fc.uniqueArray(fc.integer({ min: -5, max: 20 }), { minLength: 1, maxLength: 4 }),
        armSchemas: fc.array(fc.option(inner, { nil: null }), { minLength: 4, maxLength: 4 }),
        defaultArm: fc.option(inner, { nil: null }),
        hasDefault: fc.boolean(),
      })
      .map(({ tags, armSchemas, defaultArm, hasDefault }): Schema => ({
        k: 'union',
        arms: tags.map((tag, i) => [tag, armSchemas[i] ?? null]),
        defaultArm: hasDefault ? (defaultArm ?? { k: 'int' }) : null,
      })),
  );
}

const fieldName = (i: number): string => `f${i}`;

function ours(s: Schema): Codec<any> {
  switch (s.k) {
    case 'int':
      return x.int;
    case 'uint':
      return x.uint;
    case 'hyper':
      return x.hyper;
    case 'uhyper':
      return x.uhyper;
    case 'bool':
      return x.bool;
    case 'enum':
      return x.enumeration(s.values);
    case 'string':
      return x.string(s.max);
    case 'opaque':
      return x.opaque(s.max);
    case 'charArray':
      return x.charArray(s.max);
    case 'fixedOpaque':
      return x.fixedOpaque(s.size);
    case 'fixedCharString':
      return x.fixedCharString(s.size);
    case 'array':
      return x.array(ours(s.elem), s.max);
    case 'fixedArray':
      return x.fixedArray(ours(s.elem), s.size);
    case 'optional':
      return x.optional(ours(s.inner));
    case 'struct':
      return x.struct(Object.fromEntries(s.fields.map((f, i) => [fieldName(i), ours(f)])));
    case 'union': {
      const arms: Record<number, Codec<any>> = {};
      for (const [tag, arm] of s.arms) arms[tag] = arm ? ours(arm) : x.xvoid;
      return s.defaultArm ? x.union(arms, ours(s.defaultArm)) : x.union(arms);
    }
  }
}

let oracleNames = 0;
type OracleType = oracle.XdrType<any>;

function theirs(s: Schema): OracleType {
  switch (s.k) {
    case 'int':
      return oracle.int32();
    case 'uint':
      return oracle.uint32();
    case 'hyper':
      return oracle.int64();
    case 'uhyper':
      return oracle.uint64();
    case 'bool':
      return oracle.bool();
    case 'enum':
      return oracle.enumType(`E${oracleNames++}`, Object.fromEntries(s.values.map((v, i) => [`m${i}`, v])));
    case 'string':
      return oracle.string(s.max);
    case 'opaque':
      return oracle.varOpaque(s.max);
    // libvirt's char arrays are, on the wire, arrays of int (one word per byte).
    case 'charArray':
      return oracle.array(oracle.int32(), s.max);
    case 'fixedOpaque':
      return oracle.opaque(s.size);
    case 'fixedCharString':
      return oracle.fixedArray(oracle.int32(), s.size);
    case 'array':
      return oracle.array(theirs(s.elem), s.max);
    case 'fixedArray':
      return oracle.fixedArray(theirs(s.elem), s.size);
    case 'optional':
      return oracle.option(theirs(s.inner));
    case 'struct':
      return oracle.struct(`S${oracleNames++}`, Object.fromEntries(s.fields.map((f, i) => [fieldName(i), theirs(f)])));
    case 'union':
      return oracle.union(`U${oracleNames++}`, {
        switchOn: oracle.int32(),
        cases: s.arms.map(([tag, arm], i) => oracle.case(`c${i}`, tag, arm ? oracle.field('value', theirs(arm)) : oracle.void())),
        ...(s.defaultArm ? { defaultArm: oracle.field('value', theirs(s.defaultArm)) } : {}),
      });
  }
}

const utf8Within = (max: number) => fc.string({ unit: 'binary', maxLength: max }).filter((v) => Buffer.byteLength(v, 'utf8') <= max);

function valueArb(s: Schema): fc.Arbitrary<any> {
  switch (s.k) {
    case 'int':
      return fc.integer(INT32);
    case 'uint':
      return fc.integer({ min: 0, max: 0xffffffff });
    case 'hyper':
      return fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n });
    case 'uhyper':
      return fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
    case 'bool':
      return fc.boolean();
    case 'enum':
      return fc.constantFrom(...s.values);
    case 'string':
      return utf8Within(s.max);
    case 'opaque':
    case 'charArray':
      return fc.uint8Array({ maxLength: s.max }).map((b) => Buffer.from(b));
    case 'fixedOpaque':
      return fc.uint8Array({ minLength: s.size, maxLength: s.size }).map((b) => Buffer.from(b));
    case 'fixedCharString':
      return utf8Within(s.size - 1).filter((v) => !v.includes('\0'));
    case 'array':
      return fc.array(valueArb(s.elem), { maxLength: s.max });
    case 'fixedArray':
      return fc.array(valueArb(s.elem), { minLength: s.size, maxLength: s.size });
    case 'optional':
      return fc.option(valueArb(s.inner), { nil: null });
    case 'struct':
      return fc.tuple(...s.fields.map(valueArb)).map((vals) => Object.fromEntries(vals.map((v, i) => [fieldName(i), v])));
    case 'union': {
      const known = new Set(s.arms.map(([tag]) => tag));
      const armValues = s.arms.map(([tag, arm]) =>
        arm ? valueArb(arm).map((value) => ({ tag, value })) : fc.constant({ tag, value: undefined }),
      );
      if (s.defaultArm) {
        const defaultTags = fc.integer(INT32).filter((tag) => !known.has(tag));
        armValues.push(fc.tuple(defaultTags, valueArb(s.defaultArm)).map(([tag, value]) => ({ tag, value })));
      }
      return fc.oneof(...armValues);
    }
  }
}

const signedByte = (b: number): number => (b << 24) >> 24;

/** Our value in the oracle's representation. */
function toOracle(s: Schema, v: any): any {
  switch (s.k) {
    case 'string':
      return new TextEncoder().encode(v);
    case 'opaque':
    case 'fixedOpaque':
      return new Uint8Array(v);
    case 'charArray':
      return [...(v as Buffer)].map(signedByte);
    case 'fixedCharString': {
      const padded = Buffer.alloc(s.size);
      Buffer.from(v, 'utf8').copy(padded);
      return [...padded].map(signedByte);
    }
    case 'array':
      return (v as unknown[]).map((e) => toOracle(s.elem, e));
    case 'fixedArray':
      return (v as unknown[]).map((e) => toOracle(s.elem, e));
    case 'optional':
      return v === null ? null : toOracle(s.inner, v);
    case 'struct':
      return Object.fromEntries(s.fields.map((f, i) => [fieldName(i), toOracle(f, v[fieldName(i)])]));
    case 'union': {
      const arm = s.arms.find(([tag]) => tag === v.tag);
      const armSchema = arm ? arm[1] : s.defaultArm;
      return armSchema ? { type: v.tag, value: toOracle(armSchema, v.value) } : { type: v.tag };
    }
    default:
      return v;
  }
}

const schemaWithValue = schemaArb(3).chain((schema) => valueArb(schema).map((value) => ({ schema, value })));

test('property: our encoding is byte-identical to the oracle for random schemas and values', (t) => {
  fc.assert(
    fc.property(schemaWithValue, ({ schema, value }) => {
      const mine = x.encode(ours(schema), value);
      const reference = theirs(schema).encode(toOracle(schema, value));
      return hex(mine) === hex(reference);
    }),
    { numRuns: 1500 },
  );
  t.pass();
});

test('property: decoding the oracle encoding gives back the value', (t) => {
  fc.assert(
    fc.property(schemaWithValue, ({ schema, value }) => {
      const reference = Buffer.from(theirs(schema).encode(toOracle(schema, value)));
      const decoded = x.decode(ours(schema), reference);
      // Compare through our own encoding: Buffers and -0 vs 0 make structural equality noisy.
      return hex(x.encode(ours(schema), decoded)) === hex(reference) && sameValue(decoded, value);
    }),
    { numRuns: 1500 },
  );
  t.pass();
});

function sameValue(a: unknown, b: unknown): boolean {
  if (Buffer.isBuffer(a) && Buffer.isBuffer(b)) return a.equals(b);
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((e, i) => sameValue(e, b[i]));
  if (a && b && typeof a === 'object' && typeof b === 'object') {
    const ka = Object.keys(a);
    const kb = Object.keys(b);
    return ka.length === kb.length && ka.every((k) => sameValue((a as any)[k], (b as any)[k]));
  }
  return a === b;
}

test('property: scalar values round-trip and match the oracle at their range edges', (t) => {
  const edges: [Schema, fc.Arbitrary<unknown>][] = [
    [{ k: 'int' }, fc.constantFrom(INT32.min, INT32.max, 0, -1)],
    [{ k: 'uint' }, fc.constantFrom(0, 0xffffffff, 0x80000000)],
    [{ k: 'hyper' }, fc.constantFrom(-(1n << 63n), (1n << 63n) - 1n, -1n, 0n)],
    [{ k: 'uhyper' }, fc.constantFrom(0n, (1n << 64n) - 1n, 1n << 63n)],
  ];
  for (const [schema, values] of edges) {
    fc.assert(fc.property(values, (v) => hex(x.encode(ours(schema), v)) === hex(theirs(schema).encode(v))));
  }
  t.pass();
});

// ---------------------------------------------------------------------------------------------
// Hostile input: only XdrError, and no allocation larger than the input

/** The largest fixed size a schema declares: the decoder may allocate that much regardless of input. */
function fixedAllowance(s: Schema): number {
  switch (s.k) {
    case 'fixedOpaque':
    case 'fixedCharString':
      return s.size;
    case 'array':
    case 'fixedArray':
      return fixedAllowance(s.elem);
    case 'optional':
      return fixedAllowance(s.inner);
    case 'struct':
      return Math.max(0, ...s.fields.map(fixedAllowance));
    case 'union':
      return Math.max(0, ...s.arms.map(([, a]) => (a ? fixedAllowance(a) : 0)), s.defaultArm ? fixedAllowance(s.defaultArm) : 0);
    default:
      return 0;
  }
}

/** Runs `fn` while recording every count the reader accepts and every Buffer it allocates. */
function watchAllocations<T>(fn: () => T): { counts: number[]; allocations: number[]; result: T } {
  const counts: number[] = [];
  const allocations: number[] = [];
  const originalCount = XdrReader.prototype.count;
  const originalAllocUnsafe = Buffer.allocUnsafe;
  const originalAlloc = Buffer.alloc;
  XdrReader.prototype.count = function (this: XdrReader, max: number, min: number, what: string) {
    const n = originalCount.call(this, max, min, what);
    counts.push(n);
    return n;
  };
  Buffer.allocUnsafe = ((size: number) => {
    allocations.push(size);
    return originalAllocUnsafe(size);
  }) as typeof Buffer.allocUnsafe;
  Buffer.alloc = ((size: number, ...rest: unknown[]) => {
    allocations.push(size);
    return (originalAlloc as (...a: unknown[]) => Buffer)(size, ...rest);
  }) as typeof Buffer.alloc;
  try {
    return { counts, allocations, result: fn() };
  } finally {
    XdrReader.prototype.count = originalCount;
    Buffer.allocUnsafe = originalAllocUnsafe;
    Buffer.alloc = originalAlloc;
  }
}

const hostileInput = schemaArb(3).chain((schema) =>
  fc.oneof(
    // Pure noise.
    fc.uint8Array({ maxLength: 96 }).map((b) => ({ schema, input: Buffer.from(b) })),
    // A valid encoding, then damaged: words overwritten, truncated or extended.
    fc
      .tuple(
        valueArb(schema),
        fc.array(fc.tuple(fc.nat(), fc.constantFrom(0xffffffff, 0x7fffffff, 0x80000000, 0x01000000, 0x10000, 0, 1, 2, 3)), {
          maxLength: 3,
        }),
        fc.integer({ min: -8, max: 8 }),
      )
      .map(([value, hits, lengthChange]) => {
        const good = x.encode(ours(schema), value);
        let input = Buffer.from(good);
        for (const [pos, word] of hits) if (input.length >= 4) input.writeUInt32BE(word, (pos % (input.length >> 2)) * 4);
        input =
          lengthChange < 0
            ? input.subarray(0, Math.max(0, input.length + lengthChange))
            : Buffer.concat([input, Buffer.alloc(lengthChange, 0xee)]);
        return { schema, input };
      }),
  ),
);

test('property: hostile bytes make decoders throw XdrError only, and never allocate past the input', (t) => {
  fc.assert(
    fc.property(hostileInput, ({ schema, input }) => {
      const codec = ours(schema);
      const { counts, allocations } = watchAllocations(() => {
        try {
          x.decode(codec, input);
        } catch (e) {
          if (!(e instanceof XdrError)) throw e;
        }
      });
      const limit = Math.max(input.length, fixedAllowance(schema));
      return counts.every((n) => n <= input.length) && allocations.every((n) => n <= limit);
    }),
    { numRuns: 3000 },
  );
  t.pass();
});

test('property: whatever the oracle accepts, we accept too', (t) => {
  // We are deliberately more lenient (any non-zero optional flag, unchecked padding), never stricter.
  fc.assert(
    fc.property(hostileInput, ({ schema, input }) => {
      let oracleAccepts = false;
      try {
        theirs(schema).decode(input);
        oracleAccepts = true;
      } catch {
        // The oracle refusing proves nothing about us.
      }
      if (!oracleAccepts) return true;
      x.decode(ours(schema), input);
      return true;
    }),
    { numRuns: 2000 },
  );
  t.pass();
});
