// libvirt's REMOTE program. Every number, type, codec and procedure comes from libvirt's own
// remote_protocol.x (./generated/remote.ts); what follows is what the .x file leaves to libvirt's
// C headers and code: the API level we report, feature numbers and flag values the daemon and the
// drivers interpret, and the C-string helpers for `char<>` fields.

import { RemoteAuthType, remoteProcedures } from './generated/remote.js';
import { indexProcedures, type ProcedureInfo } from './procedures.js';

export * from './generated/remote.js';

/** The remote program's procedures by number. */
export const remoteProcedureByNumber: ReadonlyMap<number, ProcedureInfo> = indexProcedures(remoteProcedures);

/** The libvirt API level virtauth implements, reported as the daemon's library version. */
export const LIBVIRT_API_VERSION = 9000000n;

/** `remote_auth_type`; the daemon's per-socket setting uses the same numbers. */
export const AuthType = RemoteAuthType;
export type AuthType = RemoteAuthType;

/** Procedures a client may call before it has authenticated (libvirtd relaxes exactly these). */
export const PRE_AUTH_PROCS: ReadonlySet<number> = new Set([66, 67, 68, 69, 70]);

/** CONNECT_SUPPORTS_FEATURE numbers (VIR_DRV_FEATURE_*, libvirt's internal header). */
export const Feature = {
  MIGRATION_V1: 1,
  REMOTE: 2,
  MIGRATION_V2: 3,
  MIGRATION_P2P: 4,
  MIGRATION_DIRECT: 5,
  MIGRATION_V3: 6,
  MIGRATE_CHANGE_PROTECTION: 7,
  FD_PASSING: 8,
  TYPED_PARAM_STRING: 9,
  PROGRAM_KEEPALIVE: 10,
  XML_MIGRATABLE: 11,
  MIGRATION_OFFLINE: 12,
  MIGRATION_PARAMS: 13,
  REMOTE_EVENT_CALLBACK: 14,
  REMOTE_CLOSE_CALLBACK: 15,
  NETWORK_UPDATE_HAS_CORRECT_ORDER: 16,
} as const;

/** CONNECT_OPEN's flags as the remote driver sends them. */
export const OpenFlag = { READ_ONLY: 1, USER: 2, AUTOSTART: 4 } as const;

/** `virDomainState`. */
export const DomainState = { NOSTATE: 0, RUNNING: 1, BLOCKED: 2, PAUSED: 3, SHUTDOWN: 4, SHUTOFF: 5, CRASHED: 6, PMSUSPENDED: 7 } as const;

/** `virConnectListAllDomainsFlags`. */
export const ListDomainsFlag = {
  ACTIVE: 1,
  INACTIVE: 2,
  PERSISTENT: 4,
  TRANSIENT: 8,
  RUNNING: 16,
  PAUSED: 32,
  SHUTOFF: 64,
  OTHER: 128,
} as const;

/** `virDomainXMLFlags`. */
export const DomainXmlFlag = { SECURE: 1, INACTIVE: 2, UPDATE_CPU: 4, MIGRATABLE: 8 } as const;

/** `virDomainEventID`: the event kinds a client can register for (0 .. LAST-1 in libvirt 9.0). */
export const DomainEventId = {
  LIFECYCLE: 0,
  REBOOT: 1,
  RTC_CHANGE: 2,
  WATCHDOG: 3,
  IO_ERROR: 4,
  GRAPHICS: 5,
  IO_ERROR_REASON: 6,
  CONTROL_ERROR: 7,
  BLOCK_JOB: 8,
  DISK_CHANGE: 9,
  TRAY_CHANGE: 10,
  PMWAKEUP: 11,
  PMSUSPEND: 12,
  BALLOON_CHANGE: 13,
  PMSUSPEND_DISK: 14,
  DEVICE_REMOVED: 15,
  BLOCK_JOB_2: 16,
  TUNABLE: 17,
  AGENT_LIFECYCLE: 18,
  DEVICE_ADDED: 19,
  MIGRATION_ITERATION: 20,
  JOB_COMPLETED: 21,
  DEVICE_REMOVAL_FAILED: 22,
  METADATA_CHANGE: 23,
  BLOCK_THRESHOLD: 24,
  MEMORY_FAILURE: 25,
  MEMORY_DEVICE_SIZE_CHANGE: 26,
} as const;
export const DOMAIN_EVENT_ID_LAST = 27;

/** `virDomainEventType`, the `event` of a lifecycle event. */
export const DomainEventType = {
  DEFINED: 0,
  UNDEFINED: 1,
  STARTED: 2,
  SUSPENDED: 3,
  RESUMED: 4,
  STOPPED: 5,
  SHUTDOWN: 6,
  PMSUSPENDED: 7,
  CRASHED: 8,
} as const;

/** A C string as libvirt puts it in a `char<>` array: the bytes and the terminating NUL. */
export function cString(s: string): Buffer {
  return Buffer.concat([Buffer.from(s, 'utf8'), Buffer.alloc(1)]);
}

/** The text of a `char<>` array holding a C string (up to the first NUL). */
export function fromCString(b: Buffer): string {
  const nul = b.indexOf(0);
  return b.toString('utf8', 0, nul < 0 ? b.length : nul);
}
