// libvirt's configuration file syntax (libvirtd.conf and friends), shared by every component
// that reads a deployment's settings.

import { ErrorCode, ErrorDomain, VirError } from './errors.js';

export type ConfValue = number | string | string[];

function confError(file: string, line: number, why: string): VirError {
  return new VirError({ code: ErrorCode.CONF_SYNTAX, domain: ErrorDomain.CONF, detail: `${file}:${line}: ${why}` });
}

/**
 * Parses libvirt's config syntax: `key = value` where value is an integer, a "string" (or
 * 'string'), or a [ list, of, strings ] that may span lines; `#` starts a comment. `lines`, when
 * given, receives the line each setting was found on, for messages about it.
 */
export function parseConf(text: string, file = 'config', lines?: Map<string, number>): Map<string, ConfValue> {
  const out = new Map<string, ConfValue>();
  let i = 0;
  let line = 1;
  const n = text.length;
  const skipBlank = (newlines: boolean) => {
    while (i < n) {
      const c = text[i]!;
      if (c === '#') {
        while (i < n && text[i] !== '\n') i++;
      } else if (c === ' ' || c === '\t' || c === '\r') {
        i++;
      } else if (c === '\n' && newlines) {
        line++;
        i++;
      } else break;
    }
  };
  const readString = (): string => {
    const quote = text[i]!;
    i++;
    let s = '';
    while (i < n && text[i] !== quote) {
      if (text[i] === '\n') throw confError(file, line, 'unterminated string');
      s += text[i++];
    }
    if (i >= n) throw confError(file, line, 'unterminated string');
    i++;
    return s;
  };
  while (i < n) {
    skipBlank(true);
    if (i >= n) break;
    const keyMatch = /^[A-Za-z_][A-Za-z0-9_]*/.exec(text.slice(i, i + 256));
    if (!keyMatch) throw confError(file, line, `expected a setting name, found '${text[i]}'`);
    const key = keyMatch[0];
    lines?.set(key, line);
    i += key.length;
    skipBlank(false);
    if (text[i] !== '=') throw confError(file, line, `expected '=' after '${key}'`);
    i++;
    skipBlank(false);
    let value: ConfValue;
    const c = text[i];
    if (c === '"' || c === "'") {
      value = readString();
    } else if (c === '[') {
      i++;
      const list: string[] = [];
      for (;;) {
        skipBlank(true);
        if (text[i] === ']') {
          i++;
          break;
        }
        if (text[i] !== '"' && text[i] !== "'") throw confError(file, line, `list '${key}' may only hold strings`);
        list.push(readString());
        skipBlank(true);
        if (text[i] === ',') i++;
        else if (text[i] !== ']') throw confError(file, line, `expected ',' or ']' in list '${key}'`);
      }
      value = list;
    } else {
      const m = /^-?\d+/.exec(text.slice(i, i + 32));
      if (!m) throw confError(file, line, `value of '${key}' must be a number, a "string" or a [list]`);
      value = Number(m[0]);
      i += m[0].length;
    }
    skipBlank(false);
    if (i < n && text[i] !== '\n') throw confError(file, line, `unexpected text after the value of '${key}'`);
    out.set(key, value);
  }
  return out;
}

/**
 * Settings a plugin reads from a daemon's config file, declared so the daemon knows them: a key
 * that neither the daemon nor a declaration knows is refused at start as a likely typo.
 */
export interface ConfigKeyDeclaration {
  /** Who reads the keys, for messages (e.g. `sasl`, `polkit`). */
  owner: string;
  keys: readonly string[];
}
