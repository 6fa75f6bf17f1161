// XDR (RFC 4506) codec: a growable writer, a bounds-checked reader, and typed combinators.
// Declaring a message once as a Codec<T> gives both directions from one description, so an
// encoder and a decoder cannot disagree.

export class XdrError extends Error {
  override readonly name = 'XdrError';
}

const pad4 = (n: number): number => (4 - (n & 3)) & 3;

export class XdrWriter {
  private buf: Buffer;
  private view: DataView;
  offset: number;

  constructor(initialSize = 256, reserve = 0) {
    this.buf = Buffer.allocUnsafe(Math.max(initialSize, reserve + 16));
    this.view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
    this.offset = reserve;
  }

  private ensure(n: number): void {
    const need = this.offset + n;
    if (need <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < need) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.offset);
    this.buf = next;
    this.view = new DataView(next.buffer, next.byteOffset, next.byteLength);
  }

  int(v: number): void {
    this.ensure(4);
    this.view.setInt32(this.offset, v);
    this.offset += 4;
  }

  uint(v: number): void {
    this.ensure(4);
    this.view.setUint32(this.offset, v);
    this.offset += 4;
  }

  hyper(v: bigint): void {
    this.ensure(8);
    this.view.setBigInt64(this.offset, v);
    this.offset += 8;
  }

  uhyper(v: bigint): void {
    this.ensure(8);
    this.view.setBigUint64(this.offset, v);
    this.offset += 8;
  }

  float(v: number): void {
    this.ensure(4);
    this.view.setFloat32(this.offset, v);
    this.offset += 4;
  }

  double(v: number): void {
    this.ensure(8);
    this.view.setFloat64(this.offset, v);
    this.offset += 8;
  }

  /** Raw bytes followed by zero padding to a multiple of 4. */
  bytes(src: Uint8Array): void {
    const n = src.length;
    const p = pad4(n);
    this.ensure(n + p);
    this.buf.set(src, this.offset);
    this.offset += n;
    for (let i = 0; i < p; i++) this.buf[this.offset++] = 0;
  }

  /** A string's UTF-8 bytes with its length prefix, written without an intermediate buffer. */
  utf8(s: string, max: number): void {
    const n = s.length;
    // Short ASCII strings (names, URIs, mechanisms) are the common case: copy them byte by byte
    // rather than pay Buffer's UTF-8 machinery twice.
    if (n <= 64) {
      const p = pad4(n);
      this.ensure(4 + n + p);
      const buf = this.buf;
      const start = this.offset + 4;
      let i = 0;
      for (; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c > 0x7f) break;
        buf[start + i] = c;
      }
      if (i === n) {
        if (n > max) throw new XdrError(`string of ${n} bytes exceeds its maximum of ${max}`);
        this.view.setUint32(this.offset, n);
        this.offset = start + n;
        for (let k = 0; k < p; k++) buf[this.offset++] = 0;
        return;
      }
    }
    const byteLen = Buffer.byteLength(s, 'utf8');
    if (byteLen > max) throw new XdrError(`string of ${byteLen} bytes exceeds its maximum of ${max}`);
    const p = pad4(byteLen);
    this.ensure(4 + byteLen + p);
    this.view.setUint32(this.offset, byteLen);
    this.offset += 4;
    this.buf.write(s, this.offset, byteLen, 'utf8');
    this.offset += byteLen;
    for (let i = 0; i < p; i++) this.buf[this.offset++] = 0;
  }

  /** The bytes written so far (a view, not a copy). */
  finish(): Buffer {
    return this.buf.subarray(0, this.offset);
  }

  setUint32At(offset: number, v: number): void {
    this.view.setUint32(offset, v);
  }
}

export class XdrReader {
  private readonly view: DataView;
  offset: number;
  readonly end: number;

  constructor(
    readonly buf: Buffer,
    offset = 0,
    end = buf.length,
  ) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.offset = offset;
    this.end = end;
  }

  get remaining(): number {
    return this.end - this.offset;
  }

  private need(n: number, what: string): void {
    if (this.offset + n > this.end) {
      throw new XdrError(`${what} needs ${n} bytes at offset ${this.offset}, only ${this.end - this.offset} left`);
    }
  }

  int(): number {
    this.need(4, 'int');
    const v = this.view.getInt32(this.offset);
    this.offset += 4;
    return v;
  }

  uint(): number {
    this.need(4, 'unsigned int');
    const v = this.view.getUint32(this.offset);
    this.offset += 4;
    return v;
  }

  hyper(): bigint {
    this.need(8, 'hyper');
    const v = this.view.getBigInt64(this.offset);
    this.offset += 8;
    return v;
  }

  uhyper(): bigint {
    this.need(8, 'unsigned hyper');
    const v = this.view.getBigUint64(this.offset);
    this.offset += 8;
    return v;
  }

  float(): number {
    this.need(4, 'float');
    const v = this.view.getFloat32(this.offset);
    this.offset += 4;
    return v;
  }

  double(): number {
    this.need(8, 'double');
    const v = this.view.getFloat64(this.offset);
    this.offset += 8;
    return v;
  }

  /** n raw bytes plus padding; returns a copy so the packet buffer can be released. */
  bytes(n: number): Buffer {
    const total = n + pad4(n);
    this.need(total, 'opaque data');
    const out = Buffer.allocUnsafe(n);
    const buf = this.buf;
    const start = this.offset;
    // Short fields (UUIDs, small opaques) copy faster byte by byte than through the native copy.
    if (n <= 64) for (let i = 0; i < n; i++) out[i] = buf[start + i]!;
    else buf.copy(out, 0, start, start + n);
    this.offset += total;
    return out;
  }

  utf8(n: number): string {
    const total = n + pad4(n);
    this.need(total, 'string');
    const buf = this.buf;
    const start = this.offset;
    this.offset += total;
    if (n <= 64) {
      // Short ASCII text (the common case) skips the UTF-8 decoder.
      for (let i = start; i < start + n; i++) if (buf[i]! > 0x7f) return buf.toString('utf8', start, start + n);
      return buf.toString('latin1', start, start + n);
    }
    return buf.toString('utf8', start, start + n);
  }

  /** Checks a variable-length count before anything is allocated for it. */
  count(max: number, minElementSize: number, what: string): number {
    const n = this.uint();
    if (n > max) throw new XdrError(`${what} length ${n} exceeds its maximum of ${max}`);
    if (n * minElementSize > this.end - this.offset) {
      throw new XdrError(`${what} length ${n} runs past the end of the data`);
    }
    return n;
  }
}

export interface Codec<T> {
  encode(w: XdrWriter, v: T): void;
  decode(r: XdrReader): T;
  /** Smallest encoded size, used to reject array counts that cannot fit before allocating. */
  readonly minSize: number;
}

export type Infer<C> = C extends Codec<infer T> ? T : never;

const INT32_MIN = -0x80000000;
const INT32_MAX = 0x7fffffff;

function checkInt(v: number, lo: number, hi: number, what: string): void {
  if (!Number.isInteger(v) || v < lo || v > hi) throw new XdrError(`${what} value ${v} is out of range`);
}

export const int: Codec<number> = {
  minSize: 4,
  encode(w, v) {
    checkInt(v, INT32_MIN, INT32_MAX, 'int');
    w.int(v);
  },
  decode: (r) => r.int(),
};

export const uint: Codec<number> = {
  minSize: 4,
  encode(w, v) {
    checkInt(v, 0, 0xffffffff, 'unsigned int');
    w.uint(v);
  },
  decode: (r) => r.uint(),
};

export const hyper: Codec<bigint> = {
  minSize: 8,
  encode(w, v) {
    if (v < -(1n << 63n) || v >= 1n << 63n) throw new XdrError(`hyper value ${v} is out of range`);
    w.hyper(v);
  },
  decode: (r) => r.hyper(),
};

export const uhyper: Codec<bigint> = {
  minSize: 8,
  encode(w, v) {
    if (v < 0n || v >= 1n << 64n) throw new XdrError(`unsigned hyper value ${v} is out of range`);
    w.uhyper(v);
  },
  decode: (r) => r.uhyper(),
};

export const bool: Codec<boolean> = {
  minSize: 4,
  encode: (w, v) => w.int(v ? 1 : 0),
  decode(r) {
    const v = r.int();
    if (v !== 0 && v !== 1) throw new XdrError(`bool value ${v} is neither 0 nor 1`);
    return v === 1;
  },
};

/** IEEE 754 single precision (XDR `float`); NaN and infinities travel as they are. */
export const float: Codec<number> = {
  minSize: 4,
  encode(w, v) {
    if (typeof v !== 'number') throw new XdrError(`float value ${String(v)} is not a number`);
    w.float(v);
  },
  decode: (r) => r.float(),
};

/** IEEE 754 double precision (XDR `double`, libvirt's typed parameter VIR_TYPED_PARAM_DOUBLE). */
export const double: Codec<number> = {
  minSize: 8,
  encode(w, v) {
    if (typeof v !== 'number') throw new XdrError(`double value ${String(v)} is not a number`);
    w.double(v);
  },
  decode: (r) => r.double(),
};

/** XDR `void`: nothing on the wire. */
export const xvoid: Codec<void> = {
  minSize: 0,
  encode() {},
  decode() {},
};

/** An enum as a plain int restricted to the declared values. */
export function enumeration<E extends number>(values: readonly E[], name = 'enum'): Codec<E> {
  const allowed = new Set<number>(values);
  return {
    minSize: 4,
    encode(w, v) {
      if (!allowed.has(v)) throw new XdrError(`${name} value ${v} is not defined`);
      w.int(v);
    },
    decode(r) {
      const v = r.int();
      if (!allowed.has(v)) throw new XdrError(`${name} value ${v} is not defined`);
      return v as E;
    },
  };
}

export function string(max = 0xffffffff): Codec<string> {
  return {
    minSize: 4,
    encode: (w, v) => w.utf8(v, max),
    decode: (r) => r.utf8(r.count(max, 1, 'string')),
  };
}

export function opaque(max = 0xffffffff): Codec<Buffer> {
  return {
    minSize: 4,
    encode(w, v) {
      if (v.length > max) throw new XdrError(`opaque of ${v.length} bytes exceeds its maximum of ${max}`);
      w.uint(v.length);
      w.bytes(v);
    },
    decode: (r) => r.bytes(r.count(max, 1, 'opaque')),
  };
}

export function fixedOpaque(size: number): Codec<Buffer> {
  return {
    minSize: size + pad4(size),
    encode(w, v) {
      if (v.length !== size) throw new XdrError(`fixed opaque needs exactly ${size} bytes, got ${v.length}`);
      w.bytes(v);
    },
    decode: (r) => r.bytes(size),
  };
}

/**
 * libvirt's `char x<N>`: an XDR array of `char`, one 4-byte word per byte. Written sign-extended
 * (as x86 libvirt does), read by the low 8 bits (so zero-extended peers are understood too).
 */
export function charArray(max: number): Codec<Buffer> {
  return {
    minSize: 4,
    encode(w, v) {
      if (v.length > max) throw new XdrError(`char array of ${v.length} bytes exceeds its maximum of ${max}`);
      w.uint(v.length);
      for (let i = 0; i < v.length; i++) w.int((v[i]! << 24) >> 24);
    },
    decode(r) {
      const n = r.count(max, 4, 'char array');
      const out = Buffer.allocUnsafe(n);
      for (let i = 0; i < n; i++) out[i] = r.int() & 0xff;
      return out;
    },
  };
}

/** libvirt's fixed `char x[N]` (e.g. NODE_GET_INFO's model), NUL-padded text. */
export function fixedCharString(size: number): Codec<string> {
  return {
    minSize: size * 4,
    encode(w, v) {
      const b = Buffer.from(v, 'utf8');
      if (b.length >= size) throw new XdrError(`text of ${b.length} bytes does not fit char[${size}]`);
      for (let i = 0; i < size; i++) w.int(i < b.length ? (b[i]! << 24) >> 24 : 0);
    },
    decode(r) {
      if (r.remaining < size * 4) throw new XdrError(`char[${size}] needs ${size * 4} bytes, only ${r.remaining} left`);
      const b = Buffer.allocUnsafe(size);
      for (let i = 0; i < size; i++) b[i] = r.int() & 0xff;
      const nul = b.indexOf(0);
      return b.toString('utf8', 0, nul < 0 ? size : nul);
    },
  };
}

export function array<T>(elem: Codec<T>, max = 0xffffffff): Codec<T[]> {
  if (elem.minSize === 0) throw new XdrError('array elements must encode to at least one byte');
  const min = elem.minSize;
  return {
    minSize: 4,
    encode(w, v) {
      if (v.length > max) throw new XdrError(`array of ${v.length} elements exceeds its maximum of ${max}`);
      w.uint(v.length);
      for (const e of v) elem.encode(w, e);
    },
    decode(r) {
      const n = r.count(max, min, 'array');
      const out = new Array<T>(n);
      for (let i = 0; i < n; i++) out[i] = elem.decode(r);
      return out;
    },
  };
}

export function fixedArray<T>(elem: Codec<T>, size: number): Codec<T[]> {
  if (elem.minSize === 0) throw new XdrError('array elements must encode to at least one byte');
  return {
    minSize: elem.minSize * size,
    encode(w, v) {
      if (v.length !== size) throw new XdrError(`fixed array needs exactly ${size} elements, got ${v.length}`);
      for (const e of v) elem.encode(w, e);
    },
    decode(r) {
      const out = new Array<T>(size);
      for (let i = 0; i < size; i++) out[i] = elem.decode(r);
      return out;
    },
  };
}

/**
 * Optional data (`T *x`). libvirt's C XDR treats any non-zero flag as present, and go-libvirt
 * relies on it, so decoding accepts any non-zero word; encoding always writes exactly 1.
 */
export function optional<T>(inner: Codec<T>): Codec<T | null> {
  return {
    minSize: 4,
    encode(w, v) {
      if (v === null || v === undefined) {
        w.uint(0);
      } else {
        w.uint(1);
        inner.encode(w, v);
      }
    },
    decode: (r) => (r.uint() === 0 ? null : inner.decode(r)),
  };
}

type Fields = Record<string, Codec<any>>;

/** Each struct codec's fields, for decoding a prefix of one (decodeStructFields). */
const structFields = new WeakMap<Codec<unknown>, readonly [string, Codec<unknown>][]>();

export type StructOf<F extends Fields> = { [K in keyof F]: Infer<F[K]> };

/**
 * A struct: fields in declaration order. The encoder and decoder are generated per struct so each
 * field access is a fixed property, and decoded objects share one hidden class. They are compiled
 * on first use: a protocol declares hundreds of structs, and a process uses few of them.
 */
export function struct<F extends Fields>(fields: F): Codec<StructOf<F>> {
  const entries = Object.entries(fields) as [string, Codec<unknown>][];
  const codecs = entries.map(([, c]) => c);
  const codec: Codec<StructOf<F>> = {
    minSize: codecs.reduce((sum, c) => sum + c.minSize, 0),
    encode(w, v) {
      compile();
      codec.encode(w, v);
    },
    decode(r) {
      compile();
      return codec.decode(r);
    },
  };
  const compile = (): void => {
    const key = (name: string) => JSON.stringify(name);
    const enc = entries
      .map(([name], i) => `x = v[${key(name)}]; if (x === undefined) missing(${key(name)}); c[${i}].encode(w, x);`)
      .join('\n');
    const dec = `return { ${entries.map(([name], i) => `${key(name)}: c[${i}].decode(r)`).join(', ')} };`;
    const missing = (name: string): never => {
      throw new XdrError(`struct field '${name}' is missing`);
    };
    // Field names come from our own declarations, never from input.
    (codec as { encode: Codec<StructOf<F>>['encode'] }).encode = new Function(
      'c',
      'missing',
      `return function encodeStruct(w, v) { let x;\n${enc}\n};`,
    )(codecs, missing);
    (codec as { decode: Codec<StructOf<F>>['decode'] }).decode = new Function('c', `return function decodeStruct(r) { ${dec} };`)(codecs);
  };
  structFields.set(codec, entries);
  return codec;
}

/**
 * Decodes a struct's leading fields up to the last of `wanted` and stops there: XDR has no
 * offsets, so what precedes a field is read to reach it, but nothing after it is. For a check
 * that needs one argument of a large call. Null when `codec` is not a struct.
 */
export function decodeStructFields(codec: Codec<unknown>, buf: Buffer, wanted: ReadonlySet<string>): Record<string, unknown> | null {
  const entries = structFields.get(codec);
  if (!entries) return null;
  let last = -1;
  entries.forEach(([name], i) => {
    if (wanted.has(name)) last = i;
  });
  const out: Record<string, unknown> = {};
  const r = new XdrReader(buf);
  for (let i = 0; i <= last; i++) out[entries[i]![0]] = entries[i]![1].decode(r);
  return out;
}

type Arms = Record<number, Codec<any>>;
export type UnionOf<A extends Arms> = { [K in keyof A & number]: { tag: K; value: Infer<A[K]> } }[keyof A & number];

/** A discriminated union on an int; `defaultArm` covers XDR's `default:` case. */
export function union<A extends Arms>(arms: A, defaultArm?: Codec<any>): Codec<UnionOf<A>> {
  return {
    minSize: 4,
    encode(w, v) {
      checkInt(v.tag, INT32_MIN, INT32_MAX, 'union discriminant');
      const arm = (arms as Arms)[v.tag] ?? defaultArm;
      if (!arm) throw new XdrError(`union discriminant ${v.tag} has no arm`);
      w.int(v.tag);
      arm.encode(w, v.value);
    },
    decode(r) {
      const tag = r.int();
      const arm = (arms as Arms)[tag] ?? defaultArm;
      if (!arm) throw new XdrError(`union discriminant ${tag} has no arm`);
      return { tag, value: arm.decode(r) } as UnionOf<A>;
    },
  };
}

/** Encodes a value on its own, for tests and one-off use. */
export function encode<T>(codec: Codec<T>, v: T): Buffer {
  const w = new XdrWriter();
  codec.encode(w, v);
  return Buffer.from(w.finish());
}

/** Decodes a whole buffer; trailing bytes are an error here (the RPC layer tolerates them). */
export function decode<T>(codec: Codec<T>, buf: Buffer): T {
  const r = new XdrReader(buf);
  const v = codec.decode(r);
  if (r.remaining !== 0) throw new XdrError(`${r.remaining} trailing bytes after the value`);
  return v;
}
