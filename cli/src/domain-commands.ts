// The domain verbs (start, shutdown, destroy, suspend, resume, define, undefine, event): each
// calls the generated API method of the open connection, printing what virsh prints, or with
// --json one JSON object per result (one per event) for scripts.

import { readFile } from 'node:fs/promises';
import {
  DomainEventType,
  ErrorCode,
  ErrorDomain,
  VirError,
  formatUuid,
  remoteOperation,
  unsupportedOperation,
  type DomainLifecycleEvent,
  type DomainRef,
} from '@virtauth/core';
import type { Connection } from './connect.js';
import { lookupDomain } from './commands.js';

const domainJson = (dom: DomainRef) => ({ name: dom.name, uuid: formatUuid(dom.uuid), id: dom.id });

function result(json: boolean, dom: DomainRef, action: string, text: string): string {
  return json ? `${JSON.stringify({ domain: domainJson(dom), action })}\n` : `${text}\n`;
}

type Verb = 'start' | 'shutdown' | 'destroy' | 'suspend' | 'resume' | 'undefine';

/** A verb on an existing domain, with virsh's wording of its success and failure. */
export async function domainVerbCommand(conn: Connection, verb: Verb, arg: string, json = false): Promise<string> {
  const dom = await lookupDomain(conn, arg);
  try {
    switch (verb) {
      case 'start':
        if (dom.id >= 0)
          throw new VirError({ code: ErrorCode.OPERATION_INVALID, domain: ErrorDomain.NONE, message: 'Domain is already active' });
        await remoteOperation(conn, 'domainCreate')({ dom });
        return result(json, dom, 'started', `Domain '${dom.name}' started`);
      case 'shutdown':
        await remoteOperation(conn, 'domainShutdown')({ dom });
        return result(json, dom, 'shutdown', `Domain '${dom.name}' is being shutdown`);
      case 'destroy':
        await remoteOperation(conn, 'domainDestroy')({ dom });
        return result(json, dom, 'destroyed', `Domain '${dom.name}' destroyed`);
      case 'suspend':
        await remoteOperation(conn, 'domainSuspend')({ dom });
        return result(json, dom, 'suspended', `Domain '${dom.name}' suspended`);
      case 'resume':
        await remoteOperation(conn, 'domainResume')({ dom });
        return result(json, dom, 'resumed', `Domain '${dom.name}' resumed`);
      case 'undefine':
        await remoteOperation(conn, 'domainUndefine')({ dom });
        return result(json, dom, 'undefined', `Domain '${dom.name}' has been undefined`);
    }
  } catch (e) {
    if (e instanceof VirError && e.message === 'Domain is already active') throw e;
    const failed = { start: 'start', shutdown: 'shutdown', destroy: 'destroy', suspend: 'suspend', resume: 'resume', undefine: 'undefine' }[
      verb
    ];
    throw new VirError({
      code: (e as VirError).code ?? ErrorCode.INTERNAL_ERROR,
      domain: (e as VirError).domain ?? ErrorDomain.NONE,
      message: `Failed to ${failed} domain '${dom.name}'\nerror: ${(e as Error).message}`,
      cause: e,
    });
  }
}

export async function defineCommand(conn: Connection, file: string, json = false): Promise<string> {
  const xml = await readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
    throw new VirError({
      code: ErrorCode.SYSTEM_ERROR,
      domain: ErrorDomain.NONE,
      message: `Failed to read file '${file}' to define domain: ${e.message}`,
    });
  });
  try {
    const { dom } = await remoteOperation(conn, 'domainDefineXml')({ xml });
    return result(json, dom, 'defined', `Domain '${dom.name}' defined from ${file}`);
  } catch (e) {
    throw new VirError({
      code: (e as VirError).code ?? ErrorCode.INTERNAL_ERROR,
      domain: (e as VirError).domain ?? ErrorDomain.NONE,
      message: `Failed to define domain from ${file}\nerror: ${(e as Error).message}`,
      cause: e,
    });
  }
}

// virsh's words for lifecycle events (virDomainEventType and each type's details).
const EVENT_NAMES = ['Defined', 'Undefined', 'Started', 'Suspended', 'Resumed', 'Stopped', 'Shutdown', 'PMSuspended', 'Crashed'];
const DETAIL_NAMES: Record<number, string[]> = {
  [DomainEventType.DEFINED]: ['Added', 'Updated', 'Renamed', 'Snapshot'],
  [DomainEventType.UNDEFINED]: ['Removed', 'Renamed'],
  [DomainEventType.STARTED]: ['Booted', 'Migrated', 'Restored', 'Snapshot', 'Event wakeup', 'Recreated'],
  [DomainEventType.SUSPENDED]: [
    'Paused',
    'Migrated',
    'I/O Error',
    'Watchdog',
    'Restored',
    'Snapshot',
    'API error',
    'Post-copy',
    'Post-copy Error',
  ],
  [DomainEventType.RESUMED]: ['Unpaused', 'Migrated', 'Snapshot', 'Post-copy', 'Post-copy Error'],
  [DomainEventType.STOPPED]: ['Shutdown', 'Destroyed', 'Crashed', 'Migrated', 'Saved', 'Failed', 'Snapshot', 'Recreated'],
  [DomainEventType.SHUTDOWN]: ['Finished', 'Finished after guest request', 'Finished after host request'],
  [DomainEventType.PMSUSPENDED]: ['Memory', 'Disk'],
  [DomainEventType.CRASHED]: ['Panicked', 'Crashloaded'],
};

export function formatLifecycleEvent(e: DomainLifecycleEvent, json: boolean): string {
  const event = EVENT_NAMES[e.event] ?? 'unknown';
  const detail = DETAIL_NAMES[e.event]?.[e.detail] ?? 'unknown';
  if (json)
    return `${JSON.stringify({ event: 'lifecycle', domain: domainJson(e.dom), type: event, detail, typeCode: e.event, detailCode: e.detail })}\n`;
  return `event 'lifecycle' for domain '${e.dom.name}': ${event} ${detail}\n`;
}

export interface EventOptions {
  domain?: string;
  loop?: boolean;
  /** Seconds to wait before giving up. */
  timeout?: number;
  json?: boolean;
}

/**
 * Waits for lifecycle events (one, or until interrupted or timed out with `loop`), writing each as
 * it arrives. Resolves with the closing line virsh prints.
 */
export async function eventCommand(
  conn: Connection,
  opts: EventOptions,
  write: (text: string) => void,
  interrupted: Promise<void>,
): Promise<string> {
  const filter = opts.domain ? await lookupDomain(conn, opts.domain) : null;
  let count = 0;
  let finish!: (why: string) => void;
  const done = new Promise<string>((resolve) => (finish = resolve));
  const onEvent = (e: DomainLifecycleEvent) => {
    if (filter && !filter.uuid.equals(e.dom.uuid)) return;
    count++;
    write(formatLifecycleEvent(e, opts.json ?? false));
    if (!opts.loop) finish('');
  };
  let unsubscribe: () => Promise<void> | void;
  const remote = conn as Connection & { registerDomainLifecycle?(l: (e: DomainLifecycleEvent) => void): Promise<() => Promise<void>> };
  if (remote.registerDomainLifecycle) unsubscribe = await remote.registerDomainLifecycle(onEvent);
  else if (conn.subscribeDomainLifecycle) unsubscribe = conn.subscribeDomainLifecycle(onEvent);
  else throw unsupportedOperation({ api: 'virConnectDomainEventRegisterAny', apiErrorDomain: ErrorDomain.DOMAIN });
  const timer = opts.timeout && opts.timeout > 0 ? setTimeout(() => finish('event loop timed out'), opts.timeout * 1000) : null;
  void interrupted.then(() => finish('event loop interrupted'));
  const why = await done;
  if (timer) clearTimeout(timer);
  await unsubscribe();
  if (opts.json) return '';
  return `${why ? `${why}\n` : ''}events received: ${count}\n`;
}
