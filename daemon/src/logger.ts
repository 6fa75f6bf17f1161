// Structured logs with secrets redacted by path, whatever a caller puts in them.

import { readlinkSync } from 'node:fs';
import { pino, type Logger } from 'pino';
import { PinoLogControl, type LogControl } from './log-control.js';

/** Field names whose values never reach a log line. */
export const REDACTED_PATHS = [
  'password', '*.password', 'passphrase', '*.passphrase', 'secret', '*.secret',
  'token', '*.token', 'result', '*.result', 'results', '*.results', 'data', '*.data',
  'credentials[*].result', '*.credentials[*].result', 'authorization', '*.authorization',
];

const controls = new WeakMap<Logger, LogControl>();

/** Where a descriptor writes, in log_outputs terms (`stderr`, `file:/path`). */
function describeFd(fd: number): string {
  if (fd === 2) return 'stderr';
  try {
    const target = readlinkSync(`/proc/self/fd/${fd}`);
    if (target.startsWith('/')) return `file:${target}`;
  } catch {
    // Not Linux, or the descriptor is a pipe: stderr is the nearest libvirt term.
  }
  return 'stderr';
}

export function createLogger(level: number, destination: NodeJS.WritableStream | number = 2): Logger {
  const priority = level >= 1 && level <= 4 ? level : 2;
  const target = typeof destination === 'number' ? pino.destination({ fd: destination, sync: true }) : (destination as unknown as { write(line: string): unknown });
  const control = new PinoLogControl({ priority, target, description: typeof destination === 'number' ? describeFd(destination) : 'stderr' });
  const logger = pino(
    {
      level: control.pinoLevel(),
      base: { name: 'virtauthd' },
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      hooks: {
        logMethod(args, method, lvl) {
          if (control.admits(args, lvl)) method.apply(this, args);
        },
      },
      onChild: (child) => control.track(child),
    },
    control.destination,
  );
  control.track(logger);
  controls.set(logger, control);
  return logger;
}

/** The run-time control of a logger made by createLogger (null for a logger made elsewhere). */
export function logControlOf(logger: Logger): LogControl | null {
  return controls.get(logger) ?? null;
}
