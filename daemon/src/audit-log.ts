// The relay's audit trail as log lines, in exactly the format of the daemon's other lines,
// written straight to the log's destination before the outcome they record is sent anywhere.

import { pino, type Logger } from 'pino';

type Destination = { write(line: string): unknown };

/**
 * A writer of info lines for `log`, or null when info lines are off. For audit records only:
 * they hold no credential value by construction (types, names, outcome, duration), and pino's
 * generic path (serializers, redaction) costs several times the relayed request a record
 * describes.
 */
export function auditLineWriter(log: Logger, msg: string): ((record: object) => void) | null {
  if (!log.isLevelEnabled('info')) return null;
  const internals = log as unknown as Record<symbol, unknown>;
  const destination = internals[pino.symbols.streamSym] as Destination | undefined;
  const bindings = internals[pino.symbols.chindingsSym];
  if (!destination || typeof destination.write !== 'function' || typeof bindings !== 'string') {
    return (record) => log.info(record, msg);
  }
  const head = `{"level":${log.levels.values['info']},"time":`;
  const tail = `,"msg":${JSON.stringify(msg)}}\n`;
  return (record) => {
    const body = JSON.stringify(record);
    destination.write(head + Date.now() + bindings + (body.length > 2 ? `,${body.slice(1, -1)}` : '') + tail);
  };
}
