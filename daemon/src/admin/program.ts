// libvirt's ADMIN program as virtauthd serves it, from the generated table: every procedure of
// admin_protocol.x has a handler here, keyed by the generated method name. Errors are libvirt's:
// the codes, domains and texts virt-admin prints for libvirtd.

import {
  ErrorCode,
  ErrorDomain,
  LIBVIRT_API_VERSION,
  VirError,
  admin,
  unsupportedOperation,
  type Procedure,
  type ProgramDefinition,
} from '@virtauth/core';
import { clientInfoParams, uintParam, type ClientFacts, type TypedParam } from './client-info.js';
import { validateUintParams } from './typed-params.js';
import type { LogControl } from '../log-control.js';

/** A client as the admin program sees it, whichever server it belongs to. */
export interface ManagedClient {
  readonly id: bigint;
  /** When it connected, ms since the epoch. */
  readonly connectedAt: number;
  facts(): ClientFacts;
  /** Ends the client's session, cancelling what it has in progress with `reason`. */
  disconnect(reason: VirError): void;
}

export interface ServerLimits {
  maxClients: number;
  clients: number;
  maxUnauthenticated: number;
  unauthenticated: number;
}

export interface WorkerPool {
  minWorkers: number;
  maxWorkers: number;
  prioWorkers: number;
  nWorkers: number;
  freeWorkers: number;
  jobQueueDepth: number;
}

/** A server of the daemon, as virt-admin lists and manages it. */
export interface ManagedServer {
  readonly name: string;
  clients(): ManagedClient[];
  limits(): ServerLimits;
  setLimits(change: { maxClients?: number; maxUnauthenticated?: number }): void;
  workerPool(): WorkerPool;
  /** Changes the pool, or throws what cannot be changed and why. */
  setWorkerPool(change: Partial<Pick<WorkerPool, 'minWorkers' | 'maxWorkers' | 'prioWorkers'>>): void;
  updateTlsFiles(): Promise<void>;
}

export interface AdminBackend {
  servers(): ManagedServer[];
  logs: LogControl;
  /** Sets the idle time after which the daemon exits (0: never), as libvirtd's --timeout. */
  setDaemonTimeout(seconds: number): void;
}

/** Per admin connection: the admin program needs nothing but a way to close after a reply. */
export interface AdminConnectionContext {
  closeAfterReply(): void;
}

/** libvirt's error for flags an admin call does not know, naming the function as libvirtd does. */
function checkFlags(flags: number, fn: string): void {
  if (flags === 0) return;
  throw new VirError({
    code: ErrorCode.INVALID_ARG,
    domain: ErrorDomain.ADMIN,
    message: `unsupported flags (0x${(flags >>> 0).toString(16)}) in function ${fn}`,
    str1: fn,
    str2: 'flags',
    int1: 0,
    int2: 0,
  });
}

const noServer = (name: string) =>
  new VirError({ code: ErrorCode.NO_SERVER, domain: ErrorDomain.RPC, detail: `No server named '${name}'` });
const noClient = (id: bigint) =>
  new VirError({ code: ErrorCode.NO_CLIENT, domain: ErrorDomain.RPC, detail: `No client with matching ID '${id}'` });

/** Why a client was disconnected, as its relayed requests and open in progress are told. */
export function adminDisconnectReason(id: bigint): VirError {
  return new VirError({
    code: ErrorCode.OPERATION_ABORTED,
    domain: ErrorDomain.ADMIN,
    detail: `client ${id} disconnected by an administrator (virt-admin client-disconnect)`,
  });
}

/** Unsigned typed parameters, in the order the object lists them. */
const uintParams = (values: Record<string, number>): TypedParam[] =>
  Object.entries(values).map(([field, value]) => uintParam(field, value));

type Handlers = {
  [M in keyof admin.AdminApi]: (ctx: AdminConnectionContext, args: Parameters<admin.AdminApi[M]>[0]) => Promise<unknown> | unknown;
};

export function createAdminProgram(backend: AdminBackend): ProgramDefinition<AdminConnectionContext> {
  const server = (name: string): ManagedServer => {
    const found = backend.servers().find((s) => s.name === name);
    if (!found) throw noServer(name);
    return found;
  };
  const client = (srv: ManagedServer, id: bigint): ManagedClient | undefined => srv.clients().find((c) => c.id === id);
  const wire = (srv: ManagedServer, c: ManagedClient): admin.AdminNonnullClient => ({
    srv: { name: srv.name },
    id: c.id,
    timestamp: BigInt(Math.floor(c.connectedAt / 1000)),
    transport: c.facts().transport,
  });

  const handlers: Handlers = {
    connectOpen: (_ctx, { flags }) => checkFlags(flags, 'adminDispatchConnectOpen'),
    connectClose: (ctx) => ctx.closeAfterReply(),
    connectGetLibVersion: () => ({ libVer: LIBVIRT_API_VERSION }),
    connectListServers: (_ctx, { need_results, flags }) => {
      checkFlags(flags, 'adminConnectListServers');
      const all = backend.servers();
      return { servers: need_results > 0 ? all.slice(0, admin.ADMIN_SERVER_LIST_MAX).map((s) => ({ name: s.name })) : [], ret: all.length };
    },
    connectLookupServer: (_ctx, { name, flags }) => {
      const srv = server(name);
      checkFlags(flags, 'adminConnectLookupServer');
      return { srv: { name: srv.name } };
    },
    serverGetThreadpoolParameters: (_ctx, { srv, flags }) => {
      const s = server(srv.name);
      checkFlags(flags, 'adminServerGetThreadpoolParameters');
      const p = s.workerPool();
      // libvirtd's order.
      return {
        params: uintParams({
          minWorkers: p.minWorkers,
          maxWorkers: p.maxWorkers,
          nWorkers: p.nWorkers,
          freeWorkers: p.freeWorkers,
          prioWorkers: p.prioWorkers,
          jobQueueDepth: p.jobQueueDepth,
        }),
      };
    },
    serverSetThreadpoolParameters: (_ctx, { srv, params, flags }) => {
      const s = server(srv.name);
      checkFlags(flags, 'adminServerSetThreadpoolParameters');
      const v = validateUintParams(params, ['minWorkers', 'maxWorkers', 'prioWorkers']);
      const current = s.workerPool();
      const min = v.get('minWorkers') ?? current.minWorkers;
      const max = v.get('maxWorkers') ?? current.maxWorkers;
      if (min > max || max === 0)
        throw new VirError({
          code: ErrorCode.INVALID_ARG,
          domain: ErrorDomain.NONE,
          detail: 'minWorkers cannot be larger than maxWorkers',
        });
      const change: Parameters<ManagedServer['setWorkerPool']>[0] = {};
      for (const key of ['minWorkers', 'maxWorkers', 'prioWorkers'] as const) {
        const value = v.get(key);
        if (value !== undefined) change[key] = value;
      }
      s.setWorkerPool(change);
    },
    serverListClients: (_ctx, { srv, need_results, flags }) => {
      const s = server(srv.name);
      checkFlags(flags, 'adminServerListClients');
      const all = s.clients();
      return { clients: need_results > 0 ? all.slice(0, admin.ADMIN_CLIENT_LIST_MAX).map((c) => wire(s, c)) : [], ret: all.length };
    },
    serverLookupClient: (_ctx, { srv, id, flags }) => {
      const s = server(srv.name);
      const c = client(s, id);
      if (!c) throw noClient(id);
      checkFlags(flags, 'adminServerLookupClient');
      return { clnt: wire(s, c) };
    },
    clientGetInfo: (_ctx, { clnt, flags }) => {
      const s = server(clnt.srv.name);
      const c = client(s, clnt.id);
      if (!c)
        throw new VirError({
          code: ErrorCode.NO_CLIENT,
          domain: ErrorDomain.ADMIN,
          detail: `no client with matching id '${clnt.id}' found`,
        });
      checkFlags(flags, 'adminClientGetInfo');
      const params: TypedParam[] = clientInfoParams(c.facts()).slice(0, admin.ADMIN_CLIENT_INFO_PARAMETERS_MAX);
      return { params };
    },
    clientClose: (_ctx, { clnt, flags }) => {
      const s = server(clnt.srv.name);
      const c = client(s, clnt.id);
      if (!c) throw noClient(clnt.id);
      checkFlags(flags, 'adminClientClose');
      c.disconnect(adminDisconnectReason(c.id));
    },
    serverGetClientLimits: (_ctx, { srv, flags }) => {
      const s = server(srv.name);
      checkFlags(flags, 'adminServerGetClientLimits');
      const l = s.limits();
      return {
        params: uintParams({
          nclients_max: l.maxClients,
          nclients: l.clients,
          nclients_unauth_max: l.maxUnauthenticated,
          nclients_unauth: l.unauthenticated,
        }),
      };
    },
    serverSetClientLimits: (_ctx, { srv, params, flags }) => {
      const s = server(srv.name);
      checkFlags(flags, 'adminServerSetClientLimits');
      const v = validateUintParams(params, ['nclients_max', 'nclients_unauth_max']);
      const change: Parameters<ManagedServer['setLimits']>[0] = {};
      const max = v.get('nclients_max');
      const unauth = v.get('nclients_unauth_max');
      if (max !== undefined) change.maxClients = max;
      if (unauth !== undefined) change.maxUnauthenticated = unauth;
      s.setLimits(change);
    },
    connectGetLoggingOutputs: (_ctx, { flags }) => {
      checkFlags(flags, 'adminConnectGetLoggingOutputs');
      const o = backend.logs.outputs();
      return { outputs: o.text, noutputs: o.count };
    },
    connectGetLoggingFilters: (_ctx, { flags }) => {
      checkFlags(flags, 'adminConnectGetLoggingFilters');
      const f = backend.logs.filters();
      return { filters: f.text, nfilters: f.count };
    },
    connectSetLoggingOutputs: (_ctx, { outputs, flags }) => {
      checkFlags(flags, 'adminConnectSetLoggingOutputs');
      backend.logs.setOutputs(outputs);
    },
    connectSetLoggingFilters: (_ctx, { filters, flags }) => {
      checkFlags(flags, 'adminConnectSetLoggingFilters');
      backend.logs.setFilters(filters);
    },
    serverUpdateTlsFiles: async (_ctx, { srv, flags }) => {
      const s = server(srv.name);
      checkFlags(flags, 'adminServerUpdateTlsFiles');
      await s.updateTlsFiles();
    },
    connectSetDaemonTimeout: (_ctx, { timeout, flags }) => {
      checkFlags(flags, 'adminConnectSetDaemonTimeout');
      backend.setDaemonTimeout(timeout);
    },
  };

  const procedures = new Map<number, Procedure<any, any, AdminConnectionContext>>();
  for (const info of admin.adminProcedures) {
    const handle = handlers[info.method as keyof Handlers] as ((ctx: AdminConnectionContext, args: unknown) => unknown) | undefined;
    procedures.set(info.number, {
      args: info.args,
      ret: info.ret,
      // The admin socket's permissions are its authentication, as for libvirt-admin-sock.
      needsAuth: false,
      handle: handle
        ? (ctx, args) => handle(ctx, args) as Promise<unknown>
        : () => {
            throw unsupportedOperation(info);
          },
    });
  }
  return { prog: admin.ADMIN_PROGRAM, vers: admin.ADMIN_PROTOCOL_VERSION, procedures };
}
