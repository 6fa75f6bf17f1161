// Structured logs with secrets redacted by path, whatever a caller puts in them.

import { pino, type Logger } from 'pino';
import { BufferedLogOutput, LOG_FLUSH } from './logging/buffered-output.js';

/** Field names whose values never reach a log line. */
export const REDACTED_PATHS = [
  'password',
  '*.password',
  'passphrase',
  '*.passphrase',
  'secret',
  '*.secret',
  'token',
  '*.token',
  'result',
  '*.result',
  'results',
  '*.results',
  'data',
  '*.data',
  'credentials[*].result',
  '*.credentials[*].result',
  'authorization',
  '*.authorization',
];

const LEVELS: Record<number, string> = { 1: 'debug', 2: 'info', 3: 'warn', 4: 'error' };

/** A logger writing to a stream as it is, or to a descriptor in batches (flushLog writes them now). */
export function createLogger(level: number, destination: NodeJS.WritableStream | number = 2): Logger {
  const output = typeof destination === 'number' ? new BufferedLogOutput(destination) : null;
  const logger = pino(
    { level: LEVELS[level] ?? 'info', base: { name: 'virtauthd' }, redact: { paths: REDACTED_PATHS, censor: '[redacted]' } },
    output ?? (destination as pino.DestinationStream),
  );
  if (output) (logger as unknown as Record<symbol, unknown>)[LOG_FLUSH] = output.flush;
  return logger;
}
