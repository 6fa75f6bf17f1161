// A parser for the XDR language (RFC 4506 section 6) as libvirt writes its protocol files, with
// the doc comments kept: libvirt annotates each procedure in a `/** ... */` comment before it.

export class ParseError extends Error {
  constructor(message, file, line) {
    super(`${file}:${line}: ${message}`);
    this.name = 'ParseError';
  }
}

const PUNCTUATION = new Set(['{', '}', '(', ')', '[', ']', '<', '>', ';', ',', '=', '*', ':']);

/** Splits a .x file into tokens; a comment is attached to the token after it as `doc`. */
export function tokenize(text, file) {
  const tokens = [];
  let i = 0;
  let line = 1;
  let doc = null;
  const n = text.length;
  while (i < n) {
    const c = text[i];
    if (c === '\n') {
      line++;
      i++;
      continue;
    }
    if (c === ' ' || c === '\t' || c === '\r' || c === '\f') {
      i++;
      continue;
    }
    // `%...` lines pass C through rpcgen; they carry nothing for the wire.
    if (c === '%' && (i === 0 || text[i - 1] === '\n')) {
      while (i < n && text[i] !== '\n') i++;
      continue;
    }
    if (c === '/' && text[i + 1] === '*') {
      const end = text.indexOf('*/', i + 2);
      if (end < 0) throw new ParseError('unterminated comment', file, line);
      const body = text.slice(i, end + 2);
      doc = body;
      for (const ch of body) if (ch === '\n') line++;
      i = end + 2;
      continue;
    }
    if (c === '/' && text[i + 1] === '/') {
      while (i < n && text[i] !== '\n') i++;
      continue;
    }
    if (/[A-Za-z_]/.test(c)) {
      let j = i + 1;
      while (j < n && /[A-Za-z0-9_]/.test(text[j])) j++;
      tokens.push({ kind: 'ident', value: text.slice(i, j), line, doc });
      doc = null;
      i = j;
      continue;
    }
    if (/[0-9-]/.test(c)) {
      const m = /^-?(0x[0-9A-Fa-f]+|[0-9]+)/.exec(text.slice(i, i + 24));
      if (!m) throw new ParseError(`unexpected character '${c}'`, file, line);
      tokens.push({ kind: 'number', value: Number(m[0].startsWith('-') ? -Number(m[0].slice(1)) : Number(m[0])), line, doc });
      doc = null;
      i += m[0].length;
      continue;
    }
    if (PUNCTUATION.has(c)) {
      tokens.push({ kind: 'punct', value: c, line, doc: null });
      i++;
      continue;
    }
    throw new ParseError(`unexpected character '${c}'`, file, line);
  }
  tokens.push({ kind: 'eof', value: '', line, doc: null });
  return tokens;
}

/**
 * Parses a whole specification into definitions, in file order:
 *   { kind: 'const', name, value }             value: number or identifier
 *   { kind: 'typedef', name, decl }
 *   { kind: 'enum', name, members: [{ name, value, doc }] }
 *   { kind: 'struct', name, fields: [decl] }
 *   { kind: 'union', name, discriminant: decl, arms: [{ cases: [value], decl }], defaultArm: decl|null }
 * A decl is { name, type, dim }: type { base } with base one of the XDR scalars, 'opaque',
 * 'string', 'void' or { ref: name }; dim null | { kind: 'fixed'|'variable'|'optional', size }.
 */
export function parse(text, file) {
  const t = tokenize(text, file);
  let p = 0;
  const peek = () => t[p];
  const next = () => t[p++];
  const fail = (msg, tok = peek()) => {
    throw new ParseError(`${msg} (found '${tok.value}')`, file, tok.line);
  };
  const expect = (value) => {
    const tok = next();
    if (tok.value !== value) fail(`expected '${value}'`, tok);
    return tok;
  };
  const ident = () => {
    const tok = next();
    if (tok.kind !== 'ident') fail('expected a name', tok);
    return tok.value;
  };
  const value = () => {
    const tok = next();
    if (tok.kind === 'number') return tok.value;
    if (tok.kind === 'ident') return tok.value;
    return fail('expected a number or a constant', tok);
  };

  function typeSpecifier() {
    const tok = next();
    if (tok.kind !== 'ident') fail('expected a type', tok);
    switch (tok.value) {
      case 'unsigned': {
        const after = peek();
        if (after.kind === 'ident' && ['int', 'hyper', 'char', 'short', 'long'].includes(after.value)) {
          next();
          return { base: after.value === 'long' ? 'uint' : `u${after.value}` };
        }
        return { base: 'uint' };
      }
      case 'int':
      case 'hyper':
      case 'char':
      case 'short':
      case 'float':
      case 'double':
      case 'bool':
        return { base: tok.value };
      case 'long':
        return { base: 'int' };
      case 'quadruple':
        return fail('quadruple is not supported', tok);
      case 'struct':
      case 'union':
      case 'enum': {
        // `struct name x;` refers to a declared type; inline bodies are not used by libvirt.
        if (peek().value === '{') fail(`inline ${tok.value} bodies are not supported`);
        return { base: { ref: ident() } };
      }
      default:
        return { base: { ref: tok.value } };
    }
  }

  function declaration() {
    if (peek().value === 'void') {
      next();
      return { name: null, type: { base: 'void' }, dim: null };
    }
    const first = peek();
    if (first.value === 'opaque' || first.value === 'string') {
      next();
      const name = ident();
      const open = next();
      if (first.value === 'string' && open.value !== '<') fail('a string needs <N> or <>', open);
      if (open.value === '[') {
        const size = value();
        expect(']');
        return { name, type: { base: 'opaque' }, dim: { kind: 'fixed', size } };
      }
      if (open.value !== '<') fail("expected '[' or '<'", open);
      const size = peek().value === '>' ? null : value();
      expect('>');
      return { name, type: { base: first.value }, dim: { kind: 'variable', size } };
    }
    const type = typeSpecifier();
    if (peek().value === '*') {
      next();
      return { name: ident(), type, dim: { kind: 'optional', size: null } };
    }
    const name = ident();
    if (peek().value === '[') {
      next();
      const size = value();
      expect(']');
      return { name, type, dim: { kind: 'fixed', size } };
    }
    if (peek().value === '<') {
      next();
      const size = peek().value === '>' ? null : value();
      expect('>');
      return { name, type, dim: { kind: 'variable', size } };
    }
    return { name, type, dim: null };
  }

  const defs = [];
  while (peek().kind !== 'eof') {
    const head = next();
    const doc = head.doc;
    switch (head.value) {
      case 'const': {
        const name = ident();
        expect('=');
        defs.push({ kind: 'const', name, value: value(), doc, line: head.line });
        expect(';');
        break;
      }
      case 'typedef': {
        const decl = declaration();
        if (!decl.name) fail('typedef of void');
        defs.push({ kind: 'typedef', name: decl.name, decl, doc, line: head.line });
        expect(';');
        break;
      }
      case 'enum': {
        const name = ident();
        expect('{');
        const members = [];
        while (peek().value !== '}') {
          const tok = next();
          if (tok.kind !== 'ident') fail('expected an enum member', tok);
          expect('=');
          members.push({ name: tok.value, value: value(), doc: tok.doc, line: tok.line });
          if (peek().value === ',') next();
        }
        expect('}');
        expect(';');
        defs.push({ kind: 'enum', name, members, doc, line: head.line });
        break;
      }
      case 'struct': {
        const name = ident();
        expect('{');
        const fields = [];
        while (peek().value !== '}') {
          const decl = declaration();
          if (!decl.name) fail('a struct field cannot be void');
          fields.push(decl);
          expect(';');
        }
        expect('}');
        expect(';');
        defs.push({ kind: 'struct', name, fields, doc, line: head.line });
        break;
      }
      case 'union': {
        const name = ident();
        expect('switch');
        expect('(');
        const discriminant = declaration();
        expect(')');
        expect('{');
        const arms = [];
        let defaultArm = null;
        while (peek().value !== '}') {
          const tok = next();
          if (tok.value === 'case') {
            const cases = [value()];
            expect(':');
            while (peek().value === 'case') {
              next();
              cases.push(value());
              expect(':');
            }
            arms.push({ cases, decl: declaration() });
            expect(';');
          } else if (tok.value === 'default') {
            expect(':');
            defaultArm = declaration();
            expect(';');
          } else {
            fail("expected 'case' or 'default'", tok);
          }
        }
        expect('}');
        expect(';');
        defs.push({ kind: 'union', name, discriminant, arms, defaultArm, doc, line: head.line });
        break;
      }
      case 'program':
        fail('program definitions are not used by libvirt and not supported', head);
        break;
      default:
        fail('expected a definition', head);
    }
  }
  return defs;
}

/**
 * The `@name: value` annotations of a doc comment, in order (a name may repeat, like @acl).
 */
export function annotations(doc) {
  const out = [];
  if (!doc) return out;
  for (const raw of doc.split('\n')) {
    const m = /^\s*\/?\*+\s*@(\w+)\s*:\s*(\S+)\s*$/.exec(raw);
    if (m) out.push({ name: m[1], value: m[2] });
  }
  return out;
}
