// The access-control contract: who asks (subject), for which object, with which of libvirt's
// permissions. Access drivers answer allow or deny; the access manager (access/manager.ts) asks
// every configured driver, as libvirt's access manager does, and all must allow.

import type { ClientIdentity } from './auth.js';
import type { TransportKind } from './transport.js';

/** The client a decision is about: its identity and the connection it asks on. */
export interface AccessSubject {
  readonly identity: ClientIdentity;
  readonly transport: TransportKind;
  /** Whether the hypervisor connection is read-only (read-only socket or CONNECT_OPEN flag). */
  readonly readOnly: boolean;
  /** The hypervisor driver's name as libvirt's `connect_driver` attribute gives it (`QEMU`, `TEST`). */
  readonly connectDriver: string;
  readonly connectionId: number;
}

/**
 * An object a permission is checked on, with the attributes libvirt's polkit driver passes for it
 * (`connect_driver`, `domain_name`, `domain_uuid`, `pool_name`, ...).
 */
export interface AccessObject {
  /** libvirt's object type as the `@acl` annotations write it: `connect`, `domain`, `storage_pool`, ... */
  readonly type: string;
  /** What names the object for good (the UUID where there is one, else its name or key). */
  readonly id: string;
  readonly attributes: Readonly<Record<string, string>>;
}

export interface AccessRequest {
  readonly subject: AccessSubject;
  readonly object: AccessObject;
  /** A permission of the object's type, e.g. `start`, `getattr`, `search_domains`. */
  readonly permission: string;
  /** The procedure asking (e.g. `DOMAIN_CREATE`); absent when a list or an event is filtered. */
  readonly procedure?: string;
}

/**
 * An access driver. `check` may answer synchronously (a local policy) or not (a D-Bus service).
 * Throwing counts as a denial; the manager logs the error, the client only sees "access denied".
 */
export interface AccessDriver {
  /** The name `access_drivers` lists it by. */
  readonly name: string;
  check(request: AccessRequest): boolean | Promise<boolean>;
  /** Re-reads the driver's policy (SIGHUP); a driver keeps its old policy when the new one is bad. */
  reload?(): void | Promise<void>;
  close?(): void | Promise<void>;
}

/** Builds a configured access driver from the daemon's settings (registered under ACCESS_DRIVER_FACTORY). */
export interface AccessDriverFactory {
  readonly name: string;
  create(settings: ReadonlyMap<string, unknown>, log: AccessLogger): AccessDriver | Promise<AccessDriver>;
}

export interface AccessLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

/** One access-control audit record. It holds who, what and the outcome, never a credential. */
export interface AccessAuditRecord {
  event: 'access.denied' | 'access.allowed';
  conn: number;
  transport: TransportKind;
  method: string | null;
  user: string | null;
  uid: number | null;
  pid: number | null;
  x509Dn: string | null;
  oidcIssuer: string | null;
  oidcSubject: string | null;
  hops: string[] | null;
  procedure: string | null;
  object: string;
  objectId: string;
  objectName: string | null;
  permission: string;
  /** The driver that denied (for a denial); `readonly` when the read-only connection refused it. */
  driver: string | null;
}
