// The daemon's audit records (relayed credential requests, access decisions) as info lines of its
// log, in exactly the format of its other lines. A record is taken when its outcome is known and
// written with the others of the next few milliseconds, in one go: rendered one by one between
// packets, on every hop of a relayed request, records cost that request more than the packets
// did. What is kept when, see docs/security.md ("Audit records").

import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { writeLinesTogether } from './logging/descriptor-output.js';
import { LOG_ROUTING, callerLocation, type LogRouting, type SourceLocation } from './logging/daemon-logging.js';

const THIS_FILE = fileURLToPath(import.meta.url);

/** Longest a record is held before it is written (ms). */
export const AUDIT_BATCH_MS = 10;
/** Records held at most; the next one writes them all at once. */
export const MAX_HELD_AUDIT_RECORDS = 256;

interface HeldRecord {
  log: Logger;
  record: object;
  msg: string;
}

let held: HeldRecord[] = [];
let timer: NodeJS.Timeout | null = null;
let exitHookInstalled = false;

/**
 * Writes every audit record held, now, in the order they were taken. The daemon calls it when
 * it stops; a process that exits any other way (process.exit, an uncaught exception) calls it
 * from its `exit` event.
 */
export function flushAuditRecords(): void {
  if (timer !== null) clearTimeout(timer);
  timer = null;
  const batch = held;
  held = [];
  writeLinesTogether(() => {
    for (const { log, record, msg } of batch) log.info(record, msg);
  });
}

function hold(record: HeldRecord): void {
  held.push(record);
  if (held.length >= MAX_HELD_AUDIT_RECORDS) {
    flushAuditRecords();
    return;
  }
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', flushAuditRecords);
  }
  if (timer === null) {
    timer = setTimeout(flushAuditRecords, AUDIT_BATCH_MS);
    timer.unref();
  }
}

/**
 * A writer of audit records as info lines of `log`, or null when info lines are off. For audit
 * records only: they hold no credential value by construction (types, names, outcome,
 * duration), so they skip redaction, which costs several times the relayed request a record
 * describes. A record is taken as it is: the caller does not change it afterwards.
 */
export type AuditLineWriter = (record: object) => void;

export function auditLineWriter(log: Logger, msg: string): AuditLineWriter | null {
  if (!log.isLevelEnabled('info')) return null;
  // With log_filters or a journald output, the writer's caller decides and is recorded once, as
  // pino's methods would for each line (the line itself is written from a timer).
  const routing = (log as unknown as Record<symbol, LogRouting | undefined>)[LOG_ROUTING];
  let src: SourceLocation | null = null;
  if (routing?.wantsSource) {
    src = callerLocation([THIS_FILE]);
    if (src && !routing.admits(log.levels.values['info']!, src.file)) return null;
  }
  const auditLog = log.child({}, { redact: [] });
  return (record) => hold({ log: auditLog, record: src ? { ...record, src } : record, msg });
}
