// The integer constants of libvirt's public C headers (enum members and `# define NAME (expr)`),
// which the protocol files and their annotations name without defining: VIR_UUID_BUFLEN, the
// typed parameter types, and the flags the @acl rules test.

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** Evaluates a C integer expression of numbers, names, | & << >> + - ~ and parentheses. */
export function evaluate(expr, lookup) {
  const tokens = expr.match(/0x[0-9A-Fa-f]+[uUlL]*|[0-9]+[uUlL]*|[A-Za-z_][A-Za-z0-9_]*|<<|>>|[()|&+\-~*]/g) ?? [];
  let p = 0;
  const primary = () => {
    const tok = tokens[p++];
    if (tok === undefined) throw new Error(`incomplete expression '${expr}'`);
    if (tok === '(') {
      const v = or();
      if (tokens[p++] !== ')') throw new Error(`unbalanced '(' in '${expr}'`);
      return v;
    }
    if (tok === '-') return -primary();
    if (tok === '~') return ~primary();
    if (/^[0-9]/.test(tok)) return Number(tok.replace(/[uUlL]+$/, ''));
    const v = lookup(tok);
    if (v === undefined) throw new Error(`unknown constant ${tok} in '${expr}'`);
    return v;
  };
  const mul = () => {
    let v = primary();
    while (tokens[p] === '*') {
      p++;
      v *= primary();
    }
    return v;
  };
  const add = () => {
    let v = mul();
    while (tokens[p] === '+' || tokens[p] === '-') v = tokens[p++] === '+' ? v + mul() : v - mul();
    return v;
  };
  const shift = () => {
    let v = add();
    while (tokens[p] === '<<' || tokens[p] === '>>') {
      const op = tokens[p++];
      const r = add();
      // Flags go up to bit 31; keep them positive numbers rather than JS's signed 32-bit shifts.
      v = op === '<<' ? v * 2 ** r : Math.floor(v / 2 ** r);
    }
    return v;
  };
  const and = () => {
    let v = shift();
    while (tokens[p] === '&') {
      p++;
      v = Number(BigInt(v) & BigInt(shift()));
    }
    return v;
  };
  const or = () => {
    let v = and();
    while (tokens[p] === '|') {
      p++;
      v = Number(BigInt(v) | BigInt(and()));
    }
    return v;
  };
  const v = or();
  if (p !== tokens.length) throw new Error(`cannot evaluate '${expr}'`);
  return v;
}

/** Reads every header under include/libvirt: name -> lazily evaluated value. */
export function readHeaderConstants(includeDir) {
  const raw = new Map();
  for (const file of readdirSync(includeDir).sort()) {
    if (!/\.h(\.in)?$/.test(file)) continue;
    const text = readFileSync(join(includeDir, file), 'utf8')
      .replace(/\/\*[\s\S]*?\*\//g, ' ')
      .replace(/\/\/[^\n]*/g, ' ');
    for (const m of text.matchAll(/^\s*#\s*define\s+(VIR_[A-Z0-9_]+)\s+(\([^\n]*\)|-?[0-9][0-9A-Fa-fxXuUlL]*)\s*$/gm)) {
      raw.set(m[1], m[2]);
    }
    for (const m of text.matchAll(/\benum\s*\w*\s*\{([^}]*)\}/g)) {
      // Preprocessor lines inside an enum guard sentinels (VIR_..._LAST); they still count.
      const body = m[1].replace(/^\s*#[^\n]*$/gm, '');
      let previous = null;
      for (const entry of body.split(',')) {
        const e = entry.trim();
        if (!e) continue;
        const em = /^([A-Za-z_][A-Za-z0-9_]*)\s*(?:=\s*([\s\S]+))?$/.exec(e);
        if (!em) continue;
        const expr = em[2] !== undefined ? em[2].trim() : previous === null ? '0' : `(${previous}) + 1`;
        raw.set(em[1], expr);
        previous = em[1];
      }
    }
  }
  const values = new Map();
  const resolving = new Set();
  const lookup = (name) => {
    if (values.has(name)) return values.get(name);
    const expr = raw.get(name);
    if (expr === undefined) return undefined;
    if (resolving.has(name)) throw new Error(`constant ${name} refers to itself`);
    resolving.add(name);
    const v = evaluate(expr, lookup);
    resolving.delete(name);
    values.set(name, v);
    return v;
  };
  return lookup;
}
