// Structured logs with secrets redacted by path, whatever a caller puts in them.

import { pino, type Logger } from 'pino';
import { DescriptorOutput } from './logging/descriptor-output.js';

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

export function createLogger(level: number, destination: NodeJS.WritableStream | number = 2): Logger {
  return pino(
    { level: LEVELS[level] ?? 'info', base: { name: 'virtauthd' }, redact: { paths: REDACTED_PATHS, censor: '[redacted]' } },
    typeof destination === 'number' ? new DescriptorOutput(destination) : (destination as pino.DestinationStream),
  );
}
