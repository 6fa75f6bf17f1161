// The relay's audit trail as log lines, in exactly the format of the daemon's other lines,
// written straight to the log's destination before the outcome they record is sent anywhere.

import { fileURLToPath } from 'node:url';
import { pino, type Logger } from 'pino';
import { LOG_ROUTING, callerLocation, type LogRouting } from './logging/daemon-logging.js';

const THIS_FILE = fileURLToPath(import.meta.url);

type Destination = { write(line: string): unknown };

/**
 * A writer of info lines for `log`, or null when info lines are off. For audit records only:
 * they hold no credential value by construction (types, names, outcome, duration), and pino's
 * generic path (serializers, redaction) costs several times the relayed request a record
 * describes.
 */
export interface AuditLineWriter {
  (record: object): void;
  /**
   * Renders the record's first fields now and returns what writes the whole line later, with
   * `rest`'s fields after them: the same line as writing both at once, with the JSON of the first
   * part built ahead (e.g. while a relayed request waits for its answer).
   */
  prepare(first: object): (rest: object) => void;
}

export function auditLineWriter(log: Logger, msg: string): AuditLineWriter | null {
  if (!log.isLevelEnabled('info')) return null;
  // With log_filters or a journald output, the writer's caller decides and is recorded once,
  // as pino's methods would for each line.
  const routing = (log as unknown as Record<symbol, LogRouting | undefined>)[LOG_ROUTING];
  let source = '';
  if (routing?.wantsSource) {
    const src = callerLocation([THIS_FILE]);
    if (src && !routing.admits(log.levels.values['info']!, src.file)) return null;
    if (src) source = `,"src":${JSON.stringify(src)}`;
  }
  const internals = log as unknown as Record<symbol, unknown>;
  const destination = internals[pino.symbols.streamSym] as Destination | undefined;
  const bindings = internals[pino.symbols.chindingsSym];
  if (!destination || typeof destination.write !== 'function' || typeof bindings !== 'string') {
    const viaPino = (record: object) => log.info(record, msg);
    return Object.assign(viaPino, { prepare: (first: object) => (rest: object) => viaPino({ ...first, ...rest }) });
  }
  const head = `{"level":${log.levels.values['info']},"time":`;
  const tail = `,"msg":${JSON.stringify(msg)}}\n`;
  // A record's fields as they follow the bindings: ",..." or nothing for an empty object.
  const fields = (record: object) => {
    const body = JSON.stringify(record);
    return body.length > 2 ? `,${body.slice(1, -1)}` : '';
  };
  const write = (record: object) => {
    destination.write(head + Date.now() + bindings + source + fields(record) + tail);
  };
  return Object.assign(write, {
    prepare: (first: object) => {
      const firstFields = fields(first);
      return (rest: object) => destination.write(head + Date.now() + bindings + source + firstFields + fields(rest) + tail);
    },
  });
}
