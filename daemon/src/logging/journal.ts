// The journal's native protocol: one datagram of FIELD=value lines; a value holding a newline
// is written as FIELD, newline, its length as a 64-bit little-endian number, the bytes, newline.

import type { LogRecord } from './sinks.js';

export type JournalField = [name: string, value: string];

/** syslog priorities for pino's levels. */
const SYSLOG_PRIORITY: Record<number, number> = { 10: 7, 20: 7, 30: 6, 40: 4, 50: 3, 60: 2 };

/** Record keys with a name of their own in the journal. */
const NAMED_FIELDS: Record<string, string> = { event: 'VIRTAUTH_EVENT', conn: 'VIRTAUTH_CLIENT_ID' };
const SKIPPED_KEYS = new Set(['level', 'time', 'msg', 'name', 'pid', 'hostname', 'src']);

/** A journal field name: upper-case letters, digits and '_', starting with a letter, 64 at most. */
export function journalFieldName(key: string): string {
  const name = `VIRTAUTH_${key
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .toUpperCase()
    .replace(/[^A-Z0-9_]/g, '_')}`;
  return name.slice(0, 64);
}

function text(value: unknown): string {
  return typeof value === 'string' ? value : (JSON.stringify(value) ?? String(value));
}

/** The fields of one record: the journal's own (MESSAGE, PRIORITY, CODE_*) and virtauth's. */
export function journalFieldsOf(record: LogRecord, identifier: string): JournalField[] {
  const fields: JournalField[] = [
    ['MESSAGE', text(record.msg ?? '')],
    ['PRIORITY', String(SYSLOG_PRIORITY[record.level as number] ?? 6)],
    ['SYSLOG_IDENTIFIER', identifier],
  ];
  const src = record.src as { file?: unknown; line?: unknown; func?: unknown } | undefined;
  if (src && typeof src === 'object') {
    if (typeof src.file === 'string') fields.push(['CODE_FILE', src.file]);
    if (typeof src.line === 'number') fields.push(['CODE_LINE', String(src.line)]);
    if (typeof src.func === 'string' && src.func) fields.push(['CODE_FUNC', src.func]);
  }
  for (const [key, value] of Object.entries(record)) {
    if (SKIPPED_KEYS.has(key) || value === undefined) continue;
    fields.push([NAMED_FIELDS[key] ?? journalFieldName(key), text(value)]);
  }
  return fields;
}

export function encodeJournalEntry(fields: readonly JournalField[]): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of fields) {
    if (!value.includes('\n')) {
      parts.push(Buffer.from(`${name}=${value}\n`, 'utf8'));
      continue;
    }
    const bytes = Buffer.from(value, 'utf8');
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(bytes.length));
    parts.push(Buffer.from(`${name}\n`, 'utf8'), length, bytes, Buffer.from('\n'));
  }
  return Buffer.concat(parts);
}

/** Parses entries in the same format, for tests and tools that read what was sent. */
export function decodeJournalEntry(data: Buffer): JournalField[] {
  const fields: JournalField[] = [];
  let at = 0;
  while (at < data.length) {
    const newline = data.indexOf(0x0a, at);
    if (newline < 0) throw new Error(`journal entry: field at byte ${at} has no end`);
    const head = data.subarray(at, newline).toString('utf8');
    const equals = head.indexOf('=');
    if (equals >= 0) {
      fields.push([head.slice(0, equals), head.slice(equals + 1)]);
      at = newline + 1;
      continue;
    }
    if (newline + 9 > data.length) throw new Error(`journal entry: binary field ${head} has no length`);
    const size = Number(data.readBigUInt64LE(newline + 1));
    const start = newline + 9;
    if (start + size + 1 > data.length || data[start + size] !== 0x0a) throw new Error(`journal entry: binary field ${head} is cut short`);
    fields.push([head, data.subarray(start, start + size).toString('utf8')]);
    at = start + size + 1;
  }
  return fields;
}
