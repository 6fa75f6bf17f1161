// The REMOTE program as virtauthd serves it: authentication procedures delegated to providers,
// connection-level procedures (open, close, features, event callbacks) and the domain lists
// (filtered domain by domain) handled here, and every other procedure of libvirt's generated table
// dispatched to the driver method of the same name (`domainCreate` for DOMAIN_CREATE), or refused
// with libvirt's "not supported" error when the driver lacks it. A number the table does not know is refused as libvirtd does ("unknown
// procedure"), never forwarded: it has no codec, so nothing could check or decode it.

import {
  AccessManager,
  AuthType,
  DOMAIN_EVENT_ID_LAST,
  DomainEventId,
  ErrorCode,
  ErrorDomain,
  Feature,
  OpenFlag,
  REMOTE_PROGRAM,
  REMOTE_PROTOCOL_VERSION,
  RemoteProc,
  VirError,
  accessDenied,
  createSessionSlot,
  remote,
  remoteProcedureByNumber,
  remoteProcedures,
  unsupportedOperation,
  xdr,
  type AuthProvider,
  type Codec,
  type ObjectResolver,
  type DomainLifecycleEvent,
  type DriverConnection,
  type Procedure,
  type ProcedureInfo,
  type ProgramDefinition,
} from '@virtauth/core';
import type { ClientSession } from './session.js';

export interface RemoteProgramOptions {
  providers: readonly AuthProvider[];
  /** Opens the hypervisor connection for CONNECT_OPEN. */
  open(session: ClientSession, name: string | null, readOnly: boolean): Promise<DriverConnection>;
  keepaliveInterval: number;
  keepaliveCount: number;
  /** Access control for every call after authentication (default: read-only rule only). */
  access?: AccessManager;
}

export const authFailed = (): VirError =>
  new VirError({ code: ErrorCode.AUTH_FAILED, domain: ErrorDomain.RPC, detail: 'authentication failed' });

type Handler<A, R> = (s: ClientSession, args: A) => Promise<R> | R;

const procedure = (proc: number): ProcedureInfo => remoteProcedureByNumber.get(proc)!;

export function createRemoteProgram(opts: RemoteProgramOptions): ProgramDefinition<ClientSession> {
  const access = opts.access ?? new AccessManager([], { log: { info() {}, warn() {}, error() {}, debug() {} } });
  const procs = new Map<number, Procedure<any, any, ClientSession>>();
  const def = <A, R>(proc: number, args: Codec<A>, ret: Codec<R>, handle: Handler<A, R>, needsAuth = true) => {
    procs.set(proc, { args, ret, handle, needsAuth });
  };
  const byType = new Map<number, AuthProvider>();
  for (const p of opts.providers) byType.set(p.type, p);

  // --- authentication -------------------------------------------------------------------
  def(
    RemoteProc.AUTH_LIST,
    xdr.xvoid,
    remote.authListRet,
    async (s) => {
      if (s.authenticated) return { types: [AuthType.NONE] };
      const provider = byType.get(s.socketAuth);
      const override = await provider?.server?.onAuthList?.(s);
      return { types: override ?? [s.socketAuth] };
    },
    false,
  );

  // Each provider's procedures run only on a socket that requires that provider, before auth.
  for (const provider of opts.providers) {
    const server = provider.server;
    if (!server) continue;
    for (const [num, p] of Object.entries(server.procedures)) {
      def(
        Number(num),
        p.args,
        p.ret,
        async (s, args) => {
          if (s.authenticated || s.socketAuth !== provider.type) {
            s.log.warn(
              { event: 'auth.rejected', proc: Number(num), socketAuth: s.socketAuth },
              'authentication procedure not allowed on this connection',
            );
            throw authFailed();
          }
          return p.handle(s, args);
        },
        false,
      );
    }
  }
  // The libvirt auth procedures no registered provider answers still exist in the protocol.
  for (const num of [RemoteProc.AUTH_SASL_INIT, RemoteProc.AUTH_SASL_START, RemoteProc.AUTH_SASL_STEP, RemoteProc.AUTH_POLKIT]) {
    if (procs.has(num)) continue;
    const args =
      num === RemoteProc.AUTH_SASL_START
        ? remote.authSaslStartArgs
        : num === RemoteProc.AUTH_SASL_STEP
          ? remote.authSaslStepArgs
          : xdr.xvoid;
    def(
      num,
      args as Codec<unknown>,
      xdr.xvoid,
      () => {
        throw authFailed();
      },
      false,
    );
  }

  // --- connection -----------------------------------------------------------------------
  def(RemoteProc.CONNECT_OPEN, remote.connectOpenArgs, xdr.xvoid, async (s, { name, flags }) => {
    if (s.driverConn || s.opening)
      throw new VirError({ code: ErrorCode.INTERNAL_ERROR, domain: ErrorDomain.RPC, detail: 'connection already open' });
    const readOnly = s.readOnly || (flags & OpenFlag.READ_ONLY) !== 0;
    const conn = await opts.open(s, name, readOnly);
    try {
      // Rules name the hypervisor type (`QEMU`, `TEST`); asking costs a round trip on a remote
      // driver, so only when access drivers will read it.
      s.connectDriver = s.gatewayConnectDriver ?? (access.enabled ? await conn.getType() : conn.driverName);
      s.readOnlyOpen = readOnly;
      // libvirt's drivers check connect:getattr in their open; a client refused keeps no connection.
      await access.checkCall(procedure(RemoteProc.CONNECT_OPEN), { name, flags }, s.accessSubject, null);
    } catch (e) {
      await conn.close().catch(() => {});
      throw e;
    }
    s.driverConn = conn;
  });

  def(RemoteProc.CONNECT_CLOSE, xdr.xvoid, xdr.xvoid, async (s) => {
    dropEventCallbacks(s);
    const conn = s.driverConn;
    s.driverConn = null;
    await conn?.close();
    // The reply goes out first; then the daemon closes the socket, as libvirtd does.
    setImmediate(() => s.rpc.closeAfterFlush());
  });

  def(RemoteProc.CONNECT_SUPPORTS_FEATURE, remote.connectSupportsFeatureArgs, remote.connectSupportsFeatureRet, async (s, { feature }) => {
    if (feature === Feature.PROGRAM_KEEPALIVE) {
      s.rpc.startKeepalive(opts.keepaliveInterval, opts.keepaliveCount);
      return { supported: opts.keepaliveInterval > 0 ? 1 : 0 };
    }
    if (feature === Feature.REMOTE_CLOSE_CALLBACK || feature === Feature.REMOTE_EVENT_CALLBACK) return { supported: 1 };
    if (feature === Feature.REMOTE) return { supported: 1 };
    return { supported: (await s.conn().supportsFeature(feature)) ? 1 : 0 };
  });

  def(RemoteProc.CONNECT_REGISTER_CLOSE_CALLBACK, xdr.xvoid, xdr.xvoid, (s) => void s.conn());
  def(RemoteProc.CONNECT_UNREGISTER_CLOSE_CALLBACK, xdr.xvoid, xdr.xvoid, (s) => void s.conn());
  def(RemoteProc.CONNECT_GET_URI, xdr.xvoid, remote.connectGetUriRet, async (s) => ({ uri: await s.conn().getUri() }));
  def(RemoteProc.CONNECT_IS_SECURE, xdr.xvoid, remote.connectIsSecureRet, async (s) => {
    const conn = s.conn();
    // The client's link to us counts too: plain TCP is not secure whatever the hypervisor says.
    return { secure: s.transport.secure && (await conn.isSecure()) ? 1 : 0 };
  });

  // Lists show only the domains this client may see (each procedure's @aclfilter).
  const visibleDomains = async (s: ClientSession, proc: number, flags: number) =>
    access.filter(procedure(proc), await s.conn().listAllDomains(flags), s.accessSubject);
  def(
    RemoteProc.CONNECT_LIST_ALL_DOMAINS,
    remote.connectListAllDomainsArgs,
    remote.connectListAllDomainsRet,
    async (s, { need_results, flags }) => {
      const domains = await visibleDomains(s, RemoteProc.CONNECT_LIST_ALL_DOMAINS, flags);
      return { domains: need_results ? domains : [], ret: domains.length };
    },
  );
  def(RemoteProc.CONNECT_NUM_OF_DOMAINS, xdr.xvoid, remote.connectNumOfDomainsRet, async (s) => ({
    num: (await visibleDomains(s, RemoteProc.CONNECT_NUM_OF_DOMAINS, 1)).length,
  }));
  def(RemoteProc.CONNECT_LIST_DOMAINS, remote.connectListDomainsArgs, remote.connectListDomainsRet, async (s, { maxids }) => {
    if (maxids < 0 || maxids > remote.REMOTE_DOMAIN_LIST_MAX) throw rpcMax('maxids');
    return { ids: (await visibleDomains(s, RemoteProc.CONNECT_LIST_DOMAINS, 1)).map((d) => d.id).slice(0, maxids) };
  });
  def(RemoteProc.CONNECT_NUM_OF_DEFINED_DOMAINS, xdr.xvoid, remote.connectNumOfDefinedDomainsRet, async (s) => ({
    num: (await visibleDomains(s, RemoteProc.CONNECT_NUM_OF_DEFINED_DOMAINS, 2)).length,
  }));
  def(
    RemoteProc.CONNECT_LIST_DEFINED_DOMAINS,
    remote.connectListDefinedDomainsArgs,
    remote.connectListDefinedDomainsRet,
    async (s, { maxnames }) => {
      if (maxnames < 0 || maxnames > remote.REMOTE_DOMAIN_LIST_MAX) throw rpcMax('maxnames');
      return { names: (await visibleDomains(s, RemoteProc.CONNECT_LIST_DEFINED_DOMAINS, 2)).map((d) => d.name).slice(0, maxnames) };
    },
  );

  // --- domain events ----------------------------------------------------------------------
  def(
    RemoteProc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
    remote.connectDomainEventCallbackRegisterAnyArgs,
    remote.connectDomainEventCallbackRegisterAnyRet,
    (s, { eventID, dom }) => {
      const conn = s.conn();
      if (eventID < 0 || eventID >= DOMAIN_EVENT_ID_LAST) {
        throw new VirError({ code: ErrorCode.INTERNAL_ERROR, domain: ErrorDomain.RPC, detail: `unsupported event ID ${eventID}` });
      }
      if (!conn.subscribeDomainLifecycle)
        throw unsupportedOperation({ api: 'virConnectDomainEventRegisterAny', apiErrorDomain: ErrorDomain.DOMAIN });
      const callbacks = eventCallbacks(s);
      const callbackID = callbacks.nextId++;
      const register = procedure(RemoteProc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY);
      const send = (e: DomainLifecycleEvent) =>
        s.rpc.sendMessage(
          REMOTE_PROGRAM,
          REMOTE_PROTOCOL_VERSION,
          RemoteProc.DOMAIN_EVENT_CALLBACK_LIFECYCLE,
          remote.domainEventCallbackLifecycleMsg,
          {
            callbackID,
            msg: { dom: e.dom, event: e.event, detail: e.detail },
          },
          undefined,
          EVENT_SERIAL,
        );
      // Each event reaches only clients that may see its domain (the register's @aclfilter); the
      // checks are chained so events keep their order even when a driver answers asynchronously.
      let pending: Promise<void> = Promise.resolve();
      // Only lifecycle events happen in virtauth's drivers; other kinds register and stay silent,
      // as with libvirt's test driver.
      const unsubscribe =
        eventID === DomainEventId.LIFECYCLE
          ? conn.subscribeDomainLifecycle((e) => {
              if (dom && !dom.uuid.equals(e.dom.uuid)) return;
              if (!access.enabled) return void send(e);
              pending = pending
                .then(() => access.allowsEvent(register, e.dom, s.accessSubject))
                .then((allowed) => void (allowed && !s.rpc.closed && send(e)))
                .catch((err: Error) =>
                  s.log.warn({ event: 'access.event.failed', err: err.message }, 'event not delivered: its access check failed'),
                );
            })
          : () => {};
      callbacks.byId.set(callbackID, unsubscribe);
      return { callbackID };
    },
  );
  def(
    RemoteProc.CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY,
    remote.connectDomainEventCallbackDeregisterAnyArgs,
    xdr.xvoid,
    (s, { callbackID }) => {
      s.conn();
      const callbacks = eventCallbacks(s);
      const unsubscribe = callbacks.byId.get(callbackID);
      if (!unsubscribe)
        throw new VirError({ code: ErrorCode.RPC, domain: ErrorDomain.RPC, detail: `domain event callback ${callbackID} not registered` });
      callbacks.byId.delete(callbackID);
      unsubscribe();
    },
  );

  // --- everything else: the generated table -----------------------------------------------
  for (const info of remoteProcedures) {
    if (info.message) continue; // an event: the server sends it, a client never calls it
    const named = procs.get(info.number);
    const needsAuth = named?.needsAuth ?? true;
    const handle = dispatchToDriver(info, named);
    procs.set(info.number, {
      args: info.args,
      ret: info.ret,
      needsAuth,
      handle: needsAuth && info.number !== RemoteProc.CONNECT_OPEN ? checkedHandler(info, handle, access) : handle,
    });
  }

  return { prog: REMOTE_PROGRAM, vers: REMOTE_PROTOCOL_VERSION, procedures: procs };
}

/** libvirt 9.0's daemon sends its event MESSAGEs with serial 1 (clients ignore the serial). */
const EVENT_SERIAL = 1;

interface EventCallbacks {
  nextId: number;
  byId: Map<number, () => void>;
}

const EVENT_CALLBACKS = createSessionSlot<EventCallbacks>('remote.eventCallbacks');

function eventCallbacks(s: ClientSession): EventCallbacks {
  let callbacks = s.state.get(EVENT_CALLBACKS);
  if (!callbacks) {
    const created: EventCallbacks = { nextId: 1, byId: new Map() };
    s.state.set(EVENT_CALLBACKS, created);
    s.onClose(() => dropEventCallbacks(s));
    callbacks = created;
  }
  return callbacks;
}

function dropEventCallbacks(s: ClientSession): void {
  const callbacks = s.state.get(EVENT_CALLBACKS);
  if (!callbacks) return;
  for (const unsubscribe of callbacks.byId.values()) unsubscribe();
  callbacks.byId.clear();
}

/**
 * Serves a procedure from the generated table: the handler above for the procedures this program
 * answers itself (authentication, the connection, domain lists and event callbacks), else the
 * driver's method of the procedure's name, else libvirt's "not supported" error naming the API.
 */
function dispatchToDriver(info: ProcedureInfo, named: Procedure<any, any, ClientSession> | undefined): Handler<unknown, unknown> {
  // Domain lists are always served above, where they are filtered domain by domain: a driver's own
  // method (the remote driver has one per procedure) would hand back the unfiltered list.
  if (named) return named.handle;
  return (s, args) => {
    const conn = s.conn();
    // The read-only rule is checked with the access rules, before this handler runs.
    // A driver method answers a call, but cannot carry the STREAM packets that follow one
    // (console, screenshot, volume upload/download): refused rather than left hanging.
    if (info.stream) throw unsupportedOperation(info);
    const method = (conn as unknown as Record<string, unknown>)[info.method];
    if (typeof method === 'function') return (method as (a: unknown) => Promise<unknown>).call(conn, args);
    throw unsupportedOperation(info);
  };
}

/**
 * Runs a call through access control: the read-only rule and the `@acl` rules before it runs,
 * lookups checked against what they found, list replies of other object types filtered. Before
 * CONNECT_OPEN there is nothing to check against; the handler itself refuses then.
 */
function checkedHandler(info: ProcedureInfo, handle: Handler<unknown, unknown>, access: AccessManager): Handler<unknown, unknown> {
  const filtered = info.aclFilter.length > 0 && !DOMAIN_LISTS.has(info.number);
  const afterCall = async (s: ClientSession, args: unknown, ret: unknown): Promise<unknown> => {
    await access.checkResult(info, args, ret, s.accessSubject);
    return filtered ? filterListReply(info, ret, s, access) : ret;
  };
  const run = (s: ClientSession, args: unknown): unknown => {
    const ret = handle(s, args);
    if (!access.enabled || (info.object?.in !== 'ret' && !filtered)) return ret;
    return Promise.resolve(ret).then((r) => afterCall(s, args, r));
  };
  return (s, args) => {
    if (!s.driverConn) return handle(s, args);
    // Synchronous when the decision is (a cached one): no extra turn of the event loop per call.
    const pending = access.checkCall(info, args, s.accessSubject, driverResolver(s));
    return (pending ? pending.then(() => run(s, args)) : run(s, args)) as Promise<unknown>;
  };
}

/** The domain lists above filter themselves (they know the domains behind ids and names). */
const DOMAIN_LISTS: ReadonlySet<number> = new Set([
  RemoteProc.CONNECT_LIST_ALL_DOMAINS,
  RemoteProc.CONNECT_NUM_OF_DOMAINS,
  RemoteProc.CONNECT_LIST_DOMAINS,
  RemoteProc.CONNECT_NUM_OF_DEFINED_DOMAINS,
  RemoteProc.CONNECT_LIST_DEFINED_DOMAINS,
  RemoteProc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
]);

/**
 * Filters a list reply of objects (CONNECT_LIST_ALL_NETWORKS and the like: an array of object
 * structures and its count). A reply of bare names or a count cannot be filtered object by object,
 * so under access control it is refused rather than shown whole.
 */
export async function filterListReply(info: ProcedureInfo, ret: unknown, s: ClientSession, access: AccessManager): Promise<unknown> {
  if (ret === null || typeof ret !== 'object') throw accessDenied();
  const record = { ...(ret as Record<string, unknown>) };
  const lists = Object.entries(record).filter(([, v]) => Array.isArray(v));
  const objectList =
    lists.length === 1 && (lists[0]![1] as unknown[]).every((x) => x !== null && typeof x === 'object' && !Buffer.isBuffer(x));
  if (!objectList) {
    s.log.warn({ event: 'access.filter.unsupported', procedure: info.name }, 'list reply refused: its items cannot be checked one by one');
    throw accessDenied();
  }
  const [key, items] = lists[0]!;
  record[key] = await access.filter(info, items as unknown[], s.accessSubject);
  if (typeof record['ret'] === 'number') record['ret'] = (record[key] as unknown[]).length;
  return record;
}

/** Looks objects up in the connection's driver so rules see the real object, not the client's words. */
function driverResolver(s: ClientSession): ObjectResolver {
  return async (type, ref) => {
    if (type !== 'domain') return ref;
    return s.conn().lookupDomainByUuid((ref as { uuid: Buffer }).uuid);
  };
}

function rpcMax(what: string): VirError {
  return new VirError({ code: ErrorCode.RPC, domain: ErrorDomain.RPC, detail: `${what} > REMOTE_DOMAIN_LIST_MAX` });
}
