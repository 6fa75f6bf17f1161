// The shape of the generated procedure tables (protocol/generated/*.ts) and what the daemon and
// clients do with them: find a procedure by number, decide which ACL rules a call triggers, and
// answer for an operation a driver lacks as libvirt does.

import type { Codec } from '../xdr/codec.js';
import { ErrorCode, VirError } from '../errors.js';

/**
 * One `@acl` or `@aclfilter` rule: `object:permission`, optionally only when the call's flags
 * match (`flags`), or when an argument has a given value (`param`).
 */
export interface AclRule {
  /** `connect`, `domain`, `network`, `storage_pool`, `storage_vol`, ... */
  readonly object: string;
  /** A permission of that object, e.g. `getattr`, `start`, `read_secure`. */
  readonly permission: string;
  /**
   * The rule applies when all of `mask` is set in the call's flags, or with `negate` when none
   * of it is (libvirt's `!A|B`).
   */
  readonly flags?: { readonly names: readonly string[]; readonly mask: number; readonly negate: boolean };
  /** The rule applies when argument `field` equals `value` (or, with `negate`, differs). */
  readonly param?: { readonly field: string; readonly valueName: string; readonly value: number; readonly negate: boolean };
}

export interface ProcedureInfo {
  readonly number: number;
  /** The procedure's name without the program prefix, e.g. `DOMAIN_CREATE`. */
  readonly name: string;
  /** The method of the generated API and client, e.g. `domainCreate`. */
  readonly method: string;
  /** The public libvirt function, e.g. `virDomainCreate`, named in "not supported" errors. */
  readonly api: string;
  /** The error domain libvirt reports that function's errors in (virErrorDomain). */
  readonly apiErrorDomain: number;
  /** Whether libvirt's API refuses the call on a read-only connection (it changes something). */
  readonly readOnlyDenied: boolean;
  readonly args: Codec<any>;
  readonly ret: Codec<any>;
  /** For an event (a MESSAGE the server sends), its payload; null for calls. */
  readonly message: Codec<any> | null;
  /** libvirt's `@generate`: which side its own code generator writes (none|client|server|both). */
  readonly generate: string | null;
  /** `@priority`: high procedures never block on a hypervisor. */
  readonly priority: 'low' | 'high' | string;
  readonly acl: readonly AclRule[];
  readonly aclFilter: readonly AclRule[];
  /** Where the object the ACL rules check travels: a field path in the args or in the reply. */
  readonly object: { readonly in: 'args' | 'ret'; readonly path: readonly string[] } | null;
  /** `@readstream`/`@writestream` (direction from the client's side) and `@sparseflag`. */
  readonly stream: {
    readonly direction: 'read' | 'write';
    readonly param: number;
    readonly sparseFlag: { readonly name: string; readonly value: number } | null;
  } | null;
  /** Annotations the generator does not interpret, kept as written. */
  readonly annotations?: Readonly<Record<string, string>>;
}

/** What a generated client calls through: an RPC connection bound to one program. */
export interface ProcedureCaller {
  call<A, R>(proc: number, argsCodec: Codec<A>, args: A, retCodec: Codec<R>): Promise<R>;
}

/** A table indexed by procedure number. */
export function indexProcedures(table: readonly ProcedureInfo[]): ReadonlyMap<number, ProcedureInfo> {
  return new Map(table.map((p) => [p.number, p]));
}

/** The ACL rules a call with these arguments must pass (rules whose conditions hold). */
export function applicableAclRules(info: ProcedureInfo, args: unknown): AclRule[] {
  const record = (args ?? {}) as Record<string, unknown>;
  const flags = typeof record['flags'] === 'number' ? (record['flags'] as number) : 0;
  return info.acl.filter((rule) => {
    if (rule.flags) {
      const set = Number(BigInt(flags >>> 0) & BigInt(rule.flags.mask));
      if (rule.flags.negate ? set !== 0 : set !== rule.flags.mask) return false;
    }
    if (rule.param) {
      const v = record[rule.param.field];
      if (rule.param.negate ? v === rule.param.value : v !== rule.param.value) return false;
    }
    return true;
  });
}

/** The object an ACL rule checks, taken from the call's args or its reply. */
export function aclObject(info: ProcedureInfo, args: unknown, ret?: unknown): unknown {
  if (!info.object) return null;
  let v: unknown = info.object.in === 'args' ? args : ret;
  for (const key of info.object.path) {
    if (v === null || typeof v !== 'object') return null;
    v = (v as Record<string, unknown>)[key];
  }
  return v ?? null;
}

/** libvirt's answer to a call that changes something, made on a read-only connection. */
export function readOnlyDenied(info: Pick<ProcedureInfo, 'api' | 'apiErrorDomain'>): VirError {
  return new VirError({ code: ErrorCode.OPERATION_DENIED, domain: info.apiErrorDomain, detail: `read only access prevents ${info.api}` });
}

/** libvirt's answer when the connection's driver lacks the operation. */
export function unsupportedOperation(info: Pick<ProcedureInfo, 'api' | 'apiErrorDomain'>): VirError {
  return new VirError({ code: ErrorCode.NO_SUPPORT, domain: info.apiErrorDomain, detail: info.api });
}
