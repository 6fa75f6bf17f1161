// Access control of a connection passed through to its upstream (uri_upstream_list). The calls'
// bytes are forwarded as the client encoded them; only what a check needs is decoded: the object
// argument and the flags of a call, the object a lookup found, the items of a list reply, the
// object an event is about. With no access driver configured and a read-write connection nothing
// is decoded and no hook is installed at all.

import {
  ErrorCode,
  ErrorDomain,
  RemoteProc,
  VirError,
  aclObject,
  formatUuid,
  remoteProcedureByNumber,
  remoteProcedures,
  xdr,
  type AccessManager,
  type ProcedureInfo,
} from '@virtauth/core';
import type { CallCheck, EventCheck, ForwardedCall, ForwardedReply, ReplyCheck } from '@virtauth/drivers';
import { filterListReply } from './remote-program.js';
import type { ClientSession } from './session.js';

export interface GatewayChecks {
  checkCall: CallCheck;
  checkReply?: ReplyCheck;
  checkEvent?: EventCheck;
}

/** The register procedure whose `@aclfilter` decides who sees an event, by the event's name. */
const EVENT_FILTERS: readonly [prefix: string, register: number][] = [
  ['DOMAIN_EVENT_', RemoteProc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY],
  ['NETWORK_EVENT_', RemoteProc.CONNECT_NETWORK_EVENT_REGISTER_ANY],
  ['STORAGE_POOL_EVENT_', RemoteProc.CONNECT_STORAGE_POOL_EVENT_REGISTER_ANY],
  ['NODE_DEVICE_EVENT_', RemoteProc.CONNECT_NODE_DEVICE_EVENT_REGISTER_ANY],
  ['SECRET_EVENT_', RemoteProc.CONNECT_SECRET_EVENT_REGISTER_ANY],
];

/** What a call check reads of the arguments: the object field, the flags, a conditioning field, the XML of a define. */
function neededFields(info: ProcedureInfo): Set<string> {
  const wanted = new Set<string>();
  if (info.object?.in === 'args' && info.object.path[0]) wanted.add(info.object.path[0]);
  for (const rule of info.acl) {
    if (rule.flags) wanted.add('flags');
    if (rule.param) wanted.add(rule.param.field);
  }
  // A define or create from XML is checked on the object the document describes.
  if (info.object?.in === 'ret' && info.readOnlyDenied && info.acl.some((r) => r.object !== 'connect')) {
    wanted.add('xml');
    wanted.add('xmlDesc');
  }
  return wanted;
}

const neededByProc = new Map(remoteProcedures.map((p) => [p.number, neededFields(p)]));

/** libvirtd's answer to arguments it cannot decode; the call is then not forwarded. */
function undecodable(info: ProcedureInfo, e: unknown): VirError {
  return new VirError({
    code: ErrorCode.RPC,
    domain: ErrorDomain.RPC,
    detail: `Unable to decode message payload: ${info.name} arguments: ${(e as Error).message}`,
  });
}

/** The part of a call's arguments the checks read, or nothing when they read none. */
export function decodeForCheck(info: ProcedureInfo, args: Buffer): Record<string, unknown> {
  const wanted = neededByProc.get(info.number)!;
  if (wanted.size === 0) return {};
  try {
    return xdr.decodeStructFields(info.args, args, wanted) ?? {};
  } catch (e) {
    throw undecodable(info, e);
  }
}

function decodeWhole(codec: xdr.Codec<unknown>, payload: Buffer, what: string): unknown {
  try {
    return codec.decode(new xdr.XdrReader(payload));
  } catch (e) {
    throw new VirError({
      code: ErrorCode.RPC,
      domain: ErrorDomain.RPC,
      detail: `Unable to decode message payload: ${what}: ${(e as Error).message}`,
    });
  }
}

/** The object an event is about: a domain, network, pool, device or secret, at the top or in `msg`. */
function eventObject(message: unknown): unknown {
  if (message === null || typeof message !== 'object') return null;
  const record = message as Record<string, unknown>;
  const inner = record['msg'] && typeof record['msg'] === 'object' ? (record['msg'] as Record<string, unknown>) : record;
  for (const value of Object.values(inner)) if (value !== null && typeof value === 'object' && !Buffer.isBuffer(value)) return value;
  return null;
}

const uuidKey = (ref: unknown): string | null => {
  const uuid = ref !== null && typeof ref === 'object' ? (ref as { uuid?: unknown }).uuid : undefined;
  return Buffer.isBuffer(uuid) ? (formatUuid(uuid) ?? null) : null;
};

/**
 * The checks of one gateway connection, or undefined when there is nothing to check (no access
 * driver and a read-write connection: the fast path decodes nothing).
 *
 * Rules see a domain as the upstream named it, never as the client does: a client names a domain
 * by name and UUID and libvirtd finds it by UUID, so a client could pair a visible name with a
 * hidden UUID. The gateway cannot ask the upstream itself (the connection's serials are the
 * client's), so it remembers the domains the upstream showed this client (lookups, lists, events
 * it was allowed to see) and checks a call on that record; a UUID the upstream never showed this
 * client is denied.
 */
export function gatewayChecks(session: ClientSession, access: AccessManager): GatewayChecks | undefined {
  const subject = session.accessSubject;
  if (!access.enabled) {
    if (!subject.readOnly) return undefined;
    // Read-only without drivers: the read-only rule alone, which needs no argument.
    return { checkCall: (call) => void access.checkCall(procedureOf(call), {}, subject, null) };
  }
  const knownDomains = new Map<string, unknown>();
  const remember = (type: string, ref: unknown): void => {
    const key = type === 'domain' ? uuidKey(ref) : null;
    if (key) knownDomains.set(key, ref);
  };
  /**
   * Puts the domain as the upstream showed it in place of the client's words, in the decoded
   * arguments themselves, so the check stays synchronous (and a cached decision cheap).
   */
  const asKnown = (info: ProcedureInfo, decoded: Record<string, unknown>): Record<string, unknown> => {
    const path = info.object?.in === 'args' ? info.object.path : null;
    if (!path || info.acl.find((r) => r.object !== 'connect')?.object !== 'domain') return decoded;
    let holder: Record<string, unknown> | null = decoded;
    for (const key of path.slice(0, -1)) {
      const next: unknown = holder?.[key];
      holder = next !== null && typeof next === 'object' ? (next as Record<string, unknown>) : null;
    }
    const last = path[path.length - 1]!;
    if (!holder) return decoded;
    // A UUID never shown to this client becomes no object, which every rule denies (and audits).
    holder[last] = knownDomains.get(uuidKey(holder[last]) ?? '') ?? null;
    return decoded;
  };
  /** Decoded arguments of calls whose reply is checked, by serial until the reply. */
  const awaitingReply = new Map<number, Record<string, unknown>>();

  const checkCall: CallCheck = (call) => {
    const info = procedureOf(call);
    let decoded: Record<string, unknown> | undefined;
    const args = () => (decoded ??= asKnown(info, decodeForCheck(info, call.args)));
    const pending = access.checkCall(info, args, subject, null);
    const keep = () => {
      if (replyChecked(info)) awaitingReply.set(call.serial, args());
    };
    if (pending) return pending.then(keep);
    keep();
  };

  const checkReply: ReplyCheck = (reply: ForwardedReply) => {
    const args = awaitingReply.get(reply.serial);
    if (args === undefined) return undefined;
    awaitingReply.delete(reply.serial);
    if (reply.error) return undefined;
    const info = remoteProcedureByNumber.get(reply.proc)!;
    const ret = decodeWhole(info.ret, reply.payload, `${info.name} reply`);
    if (info.object?.in === 'ret') {
      const found = aclObject(info, args, ret);
      const pending = access.checkResult(info, args, ret, subject);
      const type = info.acl.find((r) => r.object !== 'connect')?.object ?? '';
      if (pending) return pending.then(() => remember(type, found));
      remember(type, found);
      return undefined;
    }
    return filterListReply(info, ret, session, access).then((filtered) => {
      const rule = info.aclFilter[0];
      const list = Object.values(filtered as Record<string, unknown>).find(Array.isArray) as unknown[] | undefined;
      if (rule) for (const item of list ?? []) remember(rule.object, item);
      return Buffer.from(xdr.encode(info.ret, filtered));
    });
  };

  const checkEvent: EventCheck = ({ proc, payload }) => {
    const info = remoteProcedureByNumber.get(proc);
    const family = info ? EVENT_FILTERS.find(([prefix]) => info.name.startsWith(prefix)) : undefined;
    // Events about no object (CONNECT_EVENT_CONNECTION_CLOSED) are the connection's own.
    if (!info?.message) return false;
    if (!family) return info.name.startsWith('CONNECT_EVENT_');
    const register = remoteProcedureByNumber.get(family[1])!;
    const ref = eventObject(decodeWhole(info.message, payload, `${info.name} event`));
    return access.allowsEvent(register, ref, subject).then((allowed) => {
      if (allowed) remember(register.aclFilter[0]?.object ?? '', ref);
      return allowed;
    });
  };

  return { checkCall, checkReply, checkEvent };
}

/** A procedure of the remote program by number. */
export function procedureInfo(proc: number): ProcedureInfo {
  return remoteProcedureByNumber.get(proc)!;
}

function procedureOf(call: ForwardedCall): ProcedureInfo {
  const info = remoteProcedureByNumber.get(call.proc);
  // The pass-through refuses numbers past the table's end; a gap in it is refused here.
  if (!info) throw new VirError({ code: ErrorCode.RPC, domain: ErrorDomain.RPC, detail: `unknown procedure: ${call.proc}` });
  return info;
}

/**
 * Replies access control reads: lookups (checked on what they found) and lists it filters; not
 * event registrations, whose `@aclfilter` is about the events, not a list they return.
 */
const REPLY_CHECKED: ReadonlySet<number> = new Set(
  remoteProcedures
    .filter((p) => p.object?.in === 'ret' || (p.aclFilter.length > 0 && !/EVENT.*REGISTER/.test(p.name)))
    .map((p) => p.number),
);
const replyChecked = (info: ProcedureInfo): boolean => REPLY_CHECKED.has(info.number);
