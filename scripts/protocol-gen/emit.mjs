// Turns a parsed protocol file into TypeScript: constants, enums, one type and one codec per XDR
// type (built from core's XDR combinators), and for a program its procedure table, the typed API
// interface and the client class.

import { annotations } from './xdr-parser.mjs';

const RESERVED = new Set(
  (
    'break case catch class const continue debugger default delete do else enum export extends false finally for function if import in ' +
    'instanceof new null return super switch this throw true try typeof var void while with yield let static implements interface ' +
    'package private protected public await x'
  ).split(' '),
);

const camel = (snake) => snake.replace(/_+([A-Za-z0-9])/g, (_, c) => c.toUpperCase());
const pascal = (snake) => {
  const c = camel(snake);
  return c.charAt(0).toUpperCase() + c.slice(1);
};
/** DOMAIN_GET_XML_DESC -> domainGetXmlDesc */
const procMethod = (name) => camel(name.toLowerCase());

/**
 * `spec`: { file, prefix (of type names, e.g. 'remote_'), typePrefix ('Remote'), program?: {
 * enumName, procPrefix, objectName, apiPrefix } }; `resolveExternal(name)` gives the value of a
 * constant the file uses but does not define; `apiInfo(candidate)` finds the public API name
 * and its error domain.
 */
export function emitProtocol(defs, spec, { resolveExternal, apiInfo, stamp }) {
  const consts = new Map();
  const types = new Map();
  for (const d of defs) {
    if (d.kind === 'const') consts.set(d.name, d);
    else if (types.has(d.name)) throw new Error(`${spec.file}: ${d.name} is defined twice`);
    else types.set(d.name, d);
  }
  const enumMembers = new Map();
  for (const d of defs) if (d.kind === 'enum') for (const m of d.members) enumMembers.set(m.name, m);

  const constValue = (v, seen = new Set()) => {
    if (typeof v === 'number') return v;
    if (seen.has(v)) throw new Error(`${spec.file}: constant ${v} refers to itself`);
    seen.add(v);
    if (consts.has(v)) return constValue(consts.get(v).value, seen);
    if (enumMembers.has(v)) return constValue(enumMembers.get(v).value, seen);
    const ext = resolveExternal(v);
    if (ext === undefined) throw new Error(`${spec.file}: unknown constant ${v}`);
    return ext;
  };

  const stripped = (name) => (name.startsWith(spec.prefix) ? name.slice(spec.prefix.length) : name);
  const codecName = (name) => {
    const n = camel(stripped(name));
    const c = n.charAt(0).toLowerCase() + n.slice(1);
    return RESERVED.has(c) ? `${c}_` : c;
  };
  const typeName = (name) => {
    if (name.startsWith(spec.prefix)) return spec.typePrefix + pascal(stripped(name));
    return pascal(name);
  };

  // --- types and codecs ---------------------------------------------------------------------
  const refTarget = (name) => {
    const t = types.get(name);
    if (!t) throw new Error(`${spec.file}: unknown type ${name}`);
    return t;
  };
  const isEnum = (name) => refTarget(name).kind === 'enum';

  const SCALAR = {
    int: ['x.int', 'number'],
    uint: ['x.uint', 'number'],
    // char/short travel as 4-byte words (RFC 4506 has no narrower integers).
    char: ['x.int', 'number'],
    uchar: ['x.uint', 'number'],
    short: ['x.int', 'number'],
    ushort: ['x.uint', 'number'],
    hyper: ['x.hyper', 'bigint'],
    uhyper: ['x.uhyper', 'bigint'],
    bool: ['x.bool', 'boolean'],
    float: ['x.float', 'number'],
    double: ['x.double', 'number'],
  };

  /** The codec expression and TS type of an element type (no dimension). */
  function base(type) {
    const b = type.base;
    if (typeof b === 'string') {
      if (SCALAR[b]) return SCALAR[b];
      if (b === 'void') return ['x.xvoid', 'void'];
      throw new Error(`${spec.file}: ${b} needs a dimension`);
    }
    // Enums decode as plain ints, as libvirt's C XDR reads them; callers check the values.
    if (isEnum(b.ref)) return ['x.int', 'number'];
    return [codecName(b.ref), typeName(b.ref)];
  }

  function declCodec(decl) {
    const { type, dim } = decl;
    const size = dim && dim.size !== null ? constValue(dim.size) : null;
    if (type.base === 'opaque') return dim.kind === 'fixed' ? [`x.fixedOpaque(${size})`, 'Buffer'] : [`x.opaque(${size ?? ''})`, 'Buffer'];
    if (type.base === 'string') return [`x.string(${size ?? ''})`, 'string'];
    if (!dim) return base(type);
    if (type.base === 'char' || type.base === 'uchar') {
      // libvirt's `char x<N>` is an array of 4-byte chars (SASL data, security labels), and its
      // fixed `char x[N]` a NUL-padded text (the node model).
      if (dim.kind === 'variable') return [`x.charArray(${size ?? ''})`, 'Buffer'];
      if (dim.kind === 'fixed') return [`x.fixedCharString(${size})`, 'string'];
    }
    const [c, t] = base(type);
    if (dim.kind === 'optional') return [`x.optional(${c})`, `${t} | null`];
    const elem = t.includes('|') ? `(${t})` : t;
    if (dim.kind === 'fixed') return [`x.fixedArray(${c}, ${size})`, `${elem}[]`];
    return [`x.array(${c}${size !== null ? `, ${size}` : ''})`, `${elem}[]`];
  }

  const deps = (d) => {
    const refs = [];
    const add = (decl) => {
      if (decl && typeof decl.type.base === 'object' && !isEnum(decl.type.base.ref)) refs.push(decl.type.base.ref);
    };
    if (d.kind === 'typedef') add(d.decl);
    if (d.kind === 'struct') d.fields.forEach(add);
    if (d.kind === 'union') {
      d.arms.forEach((a) => add(a.decl));
      add(d.defaultArm);
    }
    return refs;
  };

  // Definitions in dependency order (file order otherwise), so each codec exists before use.
  const ordered = [];
  const state = new Map();
  const visit = (name) => {
    const s = state.get(name);
    if (s === 'done') return;
    if (s === 'visiting') throw new Error(`${spec.file}: ${name} is recursive, which the codecs do not support`);
    state.set(name, 'visiting');
    const d = refTarget(name);
    for (const r of deps(d)) visit(r);
    state.set(name, 'done');
    ordered.push(d);
  };
  for (const d of defs) if (d.kind !== 'const') visit(d.name);

  const out = [];
  const emit = (s = '') => out.push(s);
  // The stamp names the upstream release only: Debian's point releases of it share the same .x
  // files, and a comparison must not fail on a machine with a newer one.
  emit(`// Generated by scripts/protocol-gen/generate.mjs from ${stamp.source} of libvirt ${stamp.version}.`);
  emit(`// Do not edit: regenerate instead (see README, "The protocol, generated").`);
  emit();
  emit(`import * as x from '../../xdr/codec.js';`);
  if (spec.program) emit(`import type { AclRule, ProcedureCaller, ProcedureInfo } from '../procedures.js';`);
  emit();
  emit(`/** The libvirt release these definitions come from. */`);
  emit(`export const ${spec.constPrefix}LIBVIRT_VERSION = '${stamp.version}';`);
  emit();
  emit('// Constants and limits.');
  for (const d of defs) {
    if (d.kind !== 'const') continue;
    emit(`export const ${d.name} = ${constValue(d.value)};`);
  }

  emit();
  emit('// Enums: each as an object of its members (prefix dropped) and the type of its values.');
  for (const d of defs) {
    if (d.kind !== 'enum' || (spec.program && d.name === spec.program.enumName)) continue;
    const names = d.members.map((m) => m.name);
    const prefix = commonPrefix(names);
    const tn = typeName(d.name);
    emit(`export const ${tn} = {`);
    for (const m of d.members) emit(`  ${memberName(m.name, prefix)}: ${constValue(m.value)},`);
    emit('} as const;');
    emit(`export type ${tn} = (typeof ${tn})[keyof typeof ${tn}];`);
  }

  emit();
  emit('// Types and their codecs.');
  for (const d of ordered) {
    if (d.kind === 'enum') continue;
    const tn = typeName(d.name);
    const cn = codecName(d.name);
    if (d.kind === 'typedef') {
      const [c, t] = declCodec(d.decl);
      emit(`export type ${tn} = ${t};`);
      emit(`export const ${cn}: x.Codec<${tn}> = ${c};`);
    } else if (d.kind === 'struct') {
      emit(`export interface ${tn} {`);
      const codecs = [];
      for (const f of d.fields) {
        const [c, t] = declCodec(f);
        emit(`  ${f.name}: ${t};`);
        codecs.push(`  ${f.name}: ${c},`);
      }
      emit('}');
      emit(`export const ${cn}: x.Codec<${tn}> = x.struct({`);
      codecs.forEach((c) => emit(c));
      emit('});');
    } else if (d.kind === 'union') {
      const disc = d.discriminant;
      const discBase = disc.type.base;
      const intLike = discBase === 'int' || discBase === 'uint' || (typeof discBase === 'object' && isEnum(discBase.ref));
      if (!intLike || disc.dim) throw new Error(`${spec.file}: union ${d.name} needs an int or enum discriminant`);
      const variants = [];
      const arms = [];
      for (const a of d.arms) {
        const [c, t] = declCodec(a.decl);
        for (const k of a.cases) {
          const v = constValue(k);
          variants.push(`{ tag: ${v}; value: ${t === 'void' ? 'undefined' : t} }`);
          arms.push(`  ${v}: ${c},`);
        }
      }
      let dflt = '';
      if (d.defaultArm) {
        const [c, t] = declCodec(d.defaultArm);
        variants.push(`{ tag: number; value: ${t === 'void' ? 'undefined' : t} }`);
        dflt = `, ${c}`;
      }
      emit(`export type ${tn} =\n  | ${variants.join('\n  | ')};`);
      emit(`export const ${cn} = x.union({`);
      arms.forEach((a) => emit(a));
      emit(`}${dflt}) as unknown as x.Codec<${tn}>;`);
    }
  }

  if (spec.program) emitProgram(spec, defs, types, { emit, constValue, codecName, typeName, apiInfo });
  emit();
  return out.join('\n');
}

function commonPrefix(names) {
  if (names.length === 0) return '';
  let prefix = names[0];
  for (const n of names) while (!n.startsWith(prefix)) prefix = prefix.slice(0, -1);
  // Only whole words, and never so much that a member is left empty or starting with a digit.
  prefix = prefix.slice(0, prefix.lastIndexOf('_') + 1);
  while (prefix && names.some((n) => n.length === prefix.length || /^[0-9]/.test(n.slice(prefix.length)))) {
    prefix = prefix.slice(0, prefix.slice(0, -1).lastIndexOf('_') + 1);
  }
  return prefix;
}

function memberName(name, prefix) {
  return name.slice(prefix.length);
}

/** Parses `@acl`/`@aclfilter` values: object:permission[:flags[:param:value]]. */
function aclRule(value, constValue, where) {
  const [object, permission, flags, param, paramValue] = value.split(':');
  if (!object || !permission) throw new Error(`${where}: malformed ACL rule '${value}'`);
  const rule = { object, permission };
  if (flags) {
    const negate = flags.startsWith('!');
    const names = (negate ? flags.slice(1) : flags).split('|');
    let mask = 0;
    for (const n of names) mask = Number(BigInt(mask) | BigInt(constValue(n)));
    rule.flags = { names, mask, negate };
  }
  if (param !== undefined && param !== '') {
    if (paramValue === undefined) throw new Error(`${where}: ACL rule '${value}' names a parameter without a value`);
    const negate = paramValue.startsWith('!');
    const name = negate ? paramValue.slice(1) : paramValue;
    rule.param = { field: param, valueName: name, value: constValue(name), negate };
  }
  return rule;
}

/** The type of the field that carries an ACL object (`remote_nonnull_domain dom` for 'domain'). */
const OBJECT_TYPES = {
  domain: ['nonnull_domain', 'nonnull_domain_snapshot', 'nonnull_domain_checkpoint'],
  network: ['nonnull_network'],
  network_port: ['nonnull_network_port'],
  storage_pool: ['nonnull_storage_pool'],
  storage_vol: ['nonnull_storage_vol'],
  interface: ['nonnull_interface'],
  node_device: ['nonnull_node_device'],
  nwfilter: ['nonnull_nwfilter'],
  nwfilter_binding: ['nonnull_nwfilter_binding'],
  secret: ['nonnull_secret'],
};

function emitProgram(spec, defs, types, { emit, constValue, codecName, typeName, apiInfo }) {
  const procEnum = defs.find((d) => d.kind === 'enum' && d.name === spec.program.enumName);
  if (!procEnum) throw new Error(`${spec.file}: no enum ${spec.program.enumName}`);
  const { procPrefix, objectName } = spec.program;
  const lowerPrefix = spec.prefix;

  const structOf = (suffixName) => {
    const t = types.get(suffixName);
    return t && (t.kind === 'struct' || t.kind === 'typedef' || t.kind === 'union') ? t : null;
  };

  /** Path to the field of type `wanted` inside struct `t`, one level of nesting deep. */
  const findObject = (t, object) => {
    if (!t || t.kind !== 'struct' || !OBJECT_TYPES[object]) return null;
    const wanted = OBJECT_TYPES[object].map((s) => lowerPrefix + s);
    for (const f of t.fields) {
      if (f.dim || typeof f.type.base !== 'object') continue;
      const ref = f.type.base.ref;
      if (ref === wanted[0]) return [f.name];
      if (wanted.includes(ref)) {
        // A snapshot or checkpoint carries its domain as `dom`.
        const inner = types.get(ref);
        const domField = inner?.fields?.find((g) => g.type.base?.ref === wanted[0]);
        if (domField) return [f.name, domField.name];
      }
    }
    return null;
  };

  emit();
  emit(`// Procedures.`);
  emit(`export const ${objectName} = {`);
  for (const m of procEnum.members) emit(`  ${m.name.slice(procPrefix.length)}: ${constValue(m.value)},`);
  emit('} as const;');
  emit(`export type ${objectName} = (typeof ${objectName})[keyof typeof ${objectName}];`);

  const procs = [];
  for (const m of procEnum.members) {
    const name = m.name.slice(procPrefix.length);
    const lower = name.toLowerCase();
    const where = `${spec.file}: ${m.name}`;
    const notes = annotations(m.doc);
    const one = (key) => notes.filter((a) => a.name === key).map((a) => a.value)[0] ?? null;
    const argsDef = structOf(`${lowerPrefix}${lower}_args`);
    const retDef = structOf(`${lowerPrefix}${lower}_ret`);
    const msgDef = structOf(`${lowerPrefix}${lower}_msg`);
    const acl = notes.filter((a) => a.name === 'acl' && a.value !== 'none').map((a) => aclRule(a.value, constValue, where));
    const aclFilter = notes.filter((a) => a.name === 'aclfilter').map((a) => aclRule(a.value, constValue, where));
    const objects = new Set([...acl, ...aclFilter].map((r) => r.object));
    if (acl.some((r) => r.object !== acl[0].object)) throw new Error(`${where}: @acl rules check different objects`);
    const checked = acl[0]?.object ?? null;
    let object = null;
    if (checked && checked !== 'connect') {
      const inArgs = findObject(argsDef, checked);
      const inRet = inArgs ? null : findObject(retDef, checked);
      if (inArgs) object = { in: 'args', path: inArgs };
      else if (inRet) object = { in: 'ret', path: inRet };
    }
    const readStream = one('readstream');
    const writeStream = one('writestream');
    const sparse = one('sparseflag');
    const stream =
      readStream || writeStream
        ? {
            direction: readStream ? 'read' : 'write',
            param: Number(readStream ?? writeStream),
            sparseFlag: sparse ? { name: sparse, value: constValue(sparse) } : null,
          }
        : null;
    const known = new Set(['generate', 'priority', 'acl', 'aclfilter', 'readstream', 'writestream', 'sparseflag']);
    const other = notes.filter((a) => !known.has(a.name));
    const candidate = spec.program.apiPrefix + procMethod(name).replace(/^./, (c) => c.toUpperCase());
    const api = apiInfo(candidate);
    procs.push({
      number: constValue(m.value),
      name,
      method: procMethod(name),
      api: api.name,
      apiDomain: api.domain,
      readOnlyDenied: api.readOnlyDenied,
      args: argsDef ? argsDef.name : null,
      ret: retDef ? retDef.name : null,
      msg: msgDef ? msgDef.name : null,
      generate: one('generate'),
      priority: one('priority') ?? 'low',
      acl,
      aclFilter,
      object,
      objects,
      stream,
      other,
    });
  }

  const lit = (v) => JSON.stringify(v);
  const ruleLit = (r) => {
    const parts = [`object: ${lit(r.object)}`, `permission: ${lit(r.permission)}`];
    if (r.flags) parts.push(`flags: { names: ${lit(r.flags.names)}, mask: ${r.flags.mask}, negate: ${r.flags.negate} }`);
    if (r.param)
      parts.push(
        `param: { field: ${lit(r.param.field)}, valueName: ${lit(r.param.valueName)}, value: ${r.param.value}, negate: ${r.param.negate} }`,
      );
    return `{ ${parts.join(', ')} }`;
  };

  emit();
  emit(`/** Every procedure of the program, by number, with its codecs and libvirt's annotations. */`);
  emit(`export const ${spec.program.tableName}: readonly ProcedureInfo[] = [`);
  for (const p of procs) {
    const fields = [
      `number: ${p.number}`,
      `name: ${lit(p.name)}`,
      `method: ${lit(p.method)}`,
      `api: ${lit(p.api)}`,
      `apiErrorDomain: ${p.apiDomain}`,
      `readOnlyDenied: ${p.readOnlyDenied}`,
      `args: ${p.args ? codecName(p.args) : 'x.xvoid'}`,
      `ret: ${p.ret ? codecName(p.ret) : 'x.xvoid'}`,
      `message: ${p.msg ? codecName(p.msg) : 'null'}`,
      `generate: ${lit(p.generate)}`,
      `priority: ${lit(p.priority)}`,
      `acl: [${p.acl.map(ruleLit).join(', ')}] as readonly AclRule[]`,
      `aclFilter: [${p.aclFilter.map(ruleLit).join(', ')}] as readonly AclRule[]`,
      `object: ${p.object ? `{ in: ${lit(p.object.in)}, path: ${lit(p.object.path)} }` : 'null'}`,
      `stream: ${p.stream ? `{ direction: ${lit(p.stream.direction)}, param: ${p.stream.param}, sparseFlag: ${p.stream.sparseFlag ? `{ name: ${lit(p.stream.sparseFlag.name)}, value: ${p.stream.sparseFlag.value} }` : 'null'} }` : 'null'}`,
    ];
    if (p.other.length) fields.push(`annotations: ${lit(Object.fromEntries(p.other.map((a) => [a.name, a.value])))}`);
    emit(`  { ${fields.join(', ')} },`);
  }
  emit('];');

  const calls = procs.filter((p) => !p.msg);
  emit();
  emit(`/** One method per call of the program (events are MESSAGEs, not calls). */`);
  emit(`export interface ${spec.program.apiName} {`);
  for (const p of calls) {
    const args = p.args ? `args: ${typeName(p.args)}` : '';
    emit(`  /** ${p.api} (${procPrefix}${p.name} = ${p.number}) */`);
    emit(`  ${p.method}(${args}): Promise<${p.ret ? typeName(p.ret) : 'void'}>;`);
  }
  emit('}');

  emit();
  emit(`/** Calls every procedure of the program through a caller (an RPC connection). */`);
  emit(`export class ${spec.program.clientName} implements ${spec.program.apiName} {`);
  emit(`  constructor(protected readonly caller: ProcedureCaller) {}`);
  for (const p of calls) {
    const args = p.args ? `args: ${typeName(p.args)}` : '';
    const ret = p.ret ? typeName(p.ret) : 'void';
    emit(`  ${p.method}(${args}): Promise<${ret}> {`);
    emit(
      `    return this.caller.call(${p.number}, ${p.args ? codecName(p.args) : 'x.xvoid'}, ${p.args ? 'args' : 'undefined'}, ${p.ret ? codecName(p.ret) : 'x.xvoid'});`,
    );
    emit('  }');
  }
  emit('}');
}
