// The client side of libvirt's wire: connect, negotiate authentication (AUTH_LIST first, as
// libvirt's remote driver does), open the hypervisor on the server, then forward every call.

import {
  AuthType,
  DomainEventId,
  ErrorCode,
  ErrorDomain,
  Feature,
  OpenFlag,
  REMOTE_PROGRAM,
  REMOTE_PROTOCOL_VERSION,
  RemoteClient,
  RemoteProc,
  RpcConnection,
  VirError,
  driverUriForServer,
  isRemoteUri,
  remote,
  uriParam,
  withNamedMethods,
  xdr,
  type AuthProvider,
  type ChannelBindingPolicy,
  type ConnectUri,
  type DomainLifecycleEvent,
  type Driver,
  type DriverConnection,
  type DriverOpenContext,
  type RemoteCaller,
  type TransportInfo,
} from '@virtauth/core';
import { openTransport } from './transport.js';

export type AuthSchemeName = 'none' | 'sasl' | 'polkit' | (string & {});

export interface RemoteDriverOptions {
  /** Providers available to the client (resolved lazily, so plugins registered later count). */
  providers: () => readonly AuthProvider[];
  /** Order in which the client prefers the auth schemes a server offers; default: by each provider's priority. */
  authPriority?: readonly AuthSchemeName[];
  /** Keepalive the client runs once the server says it supports it; false disables. */
  keepalive?: { interval: number; count: number } | false;
  channelBindingPolicy?: ChannelBindingPolicy;
  connectTimeoutMs?: number;
}

/** A provider without a priority of its own ranks below sasl and polkit and above none. */
const DEFAULT_SCHEME_PRIORITY = 100;

/**
 * The offered scheme this client prefers: registered providers with a client half by their
 * priority, ties in the server's order. `none` needs no client half.
 */
export function preferredScheme(providers: readonly AuthProvider[], offered: readonly number[]): number | undefined {
  const usable = offered
    .map((type, order) => ({ type, order, provider: providers.find((p) => p.type === type && (p.client || type === AuthType.NONE)) }))
    .filter((o) => o.provider !== undefined);
  usable.sort(
    (a, b) => (b.provider!.priority ?? DEFAULT_SCHEME_PRIORITY) - (a.provider!.priority ?? DEFAULT_SCHEME_PRIORITY) || a.order - b.order,
  );
  return usable[0]?.type;
}

function remoteError(code: number, detail: string): VirError {
  return new VirError({ code, domain: ErrorDomain.REMOTE, detail });
}

export class RemoteDriver implements Driver {
  readonly name = 'remote';

  constructor(private readonly opts: RemoteDriverOptions) {}

  accepts(uri: ConnectUri): boolean {
    return isRemoteUri(uri);
  }

  async open(uri: ConnectUri, ctx: DriverOpenContext): Promise<DriverConnection> {
    const { socket, info } = await openTransport(uri, {
      readOnly: ctx.readOnly,
      ...(ctx.signal ? { signal: ctx.signal } : {}),
      timeoutMs: this.opts.connectTimeoutMs ?? 30000,
      requestCredentials: ctx.requestCredentials,
      auth: ctx.auth,
      ...(ctx.relay ? { relayCredTypes: ctx.relay.credTypes } : {}),
    });
    const rpc = new RpcConnection(socket);
    socket.resume();
    const onAbort = () => rpc.close(toVirError(ctx.signal!.reason));
    ctx.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const caller: RemoteCaller = {
        call: (proc, args, value, ret) =>
          rpc.call(REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION, proc, args, value, ret, ctx.signal ? { signal: ctx.signal } : {}),
      };
      await this.authenticate(caller, uri, info, ctx);
      // The relay is enabled before CONNECT_OPEN, so the server's drivers can ask us during it.
      const relay = ctx.relay ? await ctx.relay.attach(rpc, { uri, transport: info }) : null;
      const keepalive = this.opts.keepalive ?? { interval: 5, count: 6 };
      if (keepalive) {
        const supported = await caller
          .call(
            RemoteProc.CONNECT_SUPPORTS_FEATURE,
            remote.connectSupportsFeatureArgs,
            { feature: Feature.PROGRAM_KEEPALIVE },
            remote.connectSupportsFeatureRet,
          )
          .then(
            (r) => r.supported === 1,
            () => false,
          );
        if (supported) rpc.startKeepalive(keepalive.interval, keepalive.count);
      }
      const name = driverUriForServer(uri);
      const flags = ctx.readOnly ? OpenFlag.READ_ONLY : 0;
      try {
        await caller.call(RemoteProc.CONNECT_OPEN, remote.connectOpenArgs, { name: name === '' ? null : name, flags }, xdr.xvoid);
      } finally {
        relay?.openFinished();
      }
      return new RemoteConnection(rpc, uri, info);
    } catch (e) {
      rpc.close(null);
      throw e;
    } finally {
      ctx.signal?.removeEventListener('abort', onAbort);
    }
  }

  /** AUTH_LIST, the choice of scheme, and the chosen provider's exchange. */
  private async authenticate(caller: RemoteCaller, uri: ConnectUri, transport: TransportInfo, ctx: DriverOpenContext): Promise<void> {
    let offered: number[];
    try {
      offered = (await caller.call(RemoteProc.AUTH_LIST, xdr.xvoid, undefined, remote.authListRet)).types;
    } catch (e) {
      // A server older than AUTH_LIST answers "unknown procedure": it has no auth to do.
      if (e instanceof VirError && e.code === ErrorCode.NO_SUPPORT) return;
      throw e;
    }
    const providers = this.opts.providers();
    const authParam = uriParam(uri, 'auth');
    let chosen: number;
    let mechanism: string | null = null;
    if (authParam !== null) {
      const lower = authParam.toLowerCase();
      let wanted: number | undefined;
      if (lower === 'sasl' || lower.startsWith('sasl.')) {
        wanted = AuthType.SASL;
        if (lower.startsWith('sasl.')) mechanism = authParam.slice(5);
      } else {
        wanted = providers.find((p) => p.name === lower && p.type !== AuthType.NONE)?.type;
      }
      if (wanted === undefined || !offered.includes(wanted)) {
        throw remoteError(ErrorCode.AUTH_FAILED, `requested authentication type ${authParam} rejected`);
      }
      chosen = wanted;
    } else {
      if (offered.length === 0) return;
      const pick = this.opts.authPriority
        ? this.opts.authPriority.map((n) => providers.find((p) => p.name === n)?.type).find((t) => t !== undefined && offered.includes(t))
        : preferredScheme(providers, offered);
      if (pick === undefined) {
        throw remoteError(ErrorCode.AUTH_FAILED, `unsupported authentication type ${offered[0]}`);
      }
      chosen = pick;
    }
    if (chosen === AuthType.NONE) return;
    const provider = providers.find((p) => p.type === chosen && p.client);
    if (!provider?.client) throw remoteError(ErrorCode.AUTH_FAILED, `unsupported authentication type ${chosen}`);
    await provider.client.authenticate({
      rpc: caller,
      uri,
      mechanism,
      transport,
      auth: ctx.auth,
      requestCredentials: ctx.requestCredentials,
      service: 'libvirt',
      host: uri.host || 'localhost',
      channelBindingPolicy: (uriParam(uri, 'channel_binding') as ChannelBindingPolicy | null) ?? this.opts.channelBindingPolicy ?? 'prefer',
      ...(ctx.signal ? { signal: ctx.signal } : {}),
    });
  }
}

function toVirError(reason: unknown): VirError {
  if (reason instanceof VirError) return reason;
  return new VirError({
    code: ErrorCode.AUTH_CANCELLED,
    domain: ErrorDomain.REMOTE,
    detail: reason instanceof Error ? reason.message : 'the open was cancelled',
  });
}

/**
 * An open connection to a remote daemon's hypervisor: every procedure of the remote program as a
 * method (the generated RemoteClient, e.g. `domainCreate({ dom })`), plus the named convenience
 * methods of DriverConnection built on them (withNamedMethods).
 */
export class RemoteConnection extends withNamedMethods(RemoteClient) implements DriverConnection {
  readonly driverName = 'remote';

  constructor(
    readonly rpc: RpcConnection,
    private readonly uri: ConnectUri,
    readonly transport: TransportInfo,
  ) {
    super({ call: (proc, args, value, ret) => rpc.call(REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION, proc, args, value, ret) });
  }

  override async getUri() {
    return this.uri.raw;
  }
  async getServerUri() {
    return (await this.connectGetUri()).uri;
  }
  override async isSecure() {
    // As libvirt's client: the server only knows its own side; a plain TCP link to it is never secure.
    const serverSays = (await this.connectIsSecure()).secure === 1;
    return serverSays && this.transport.secure;
  }

  /**
   * Registers for the server's domain lifecycle events (a callback id on the server, MESSAGEs
   * routed back by it); resolves with the function that deregisters.
   */
  async registerDomainLifecycle(listener: (event: DomainLifecycleEvent) => void): Promise<() => Promise<void>> {
    if (!this.eventListeners) {
      const listeners = new Map<number, (event: DomainLifecycleEvent) => void>();
      this.eventListeners = listeners;
      this.rpc.onProgramMessage(REMOTE_PROGRAM, (h, body) => {
        if (h.proc !== RemoteProc.DOMAIN_EVENT_CALLBACK_LIFECYCLE) return;
        const m = remote.domainEventCallbackLifecycleMsg.decode(body);
        listeners.get(m.callbackID)?.({ dom: m.msg.dom, event: m.msg.event, detail: m.msg.detail });
      });
    }
    const { callbackID } = await this.connectDomainEventCallbackRegisterAny({ eventID: DomainEventId.LIFECYCLE, dom: null });
    this.eventListeners.set(callbackID, listener);
    return async () => {
      if (!this.eventListeners?.delete(callbackID)) return;
      await this.connectDomainEventCallbackDeregisterAny({ callbackID });
    };
  }

  private eventListeners: Map<number, (event: DomainLifecycleEvent) => void> | null = null;

  async close() {
    if (this.rpc.closed) return;
    try {
      await this.connectClose();
    } catch (e) {
      // The stream ending during CONNECT_CLOSE is the close done: virt-ssh-helper may exit on
      // the daemon's hang-up before it has passed the reply on.
      if (!(e instanceof VirError && e.code === ErrorCode.SYSTEM_ERROR && e.domain === ErrorDomain.RPC && this.transport.kind === 'ssh'))
        throw e;
    } finally {
      this.rpc.close(null);
    }
  }
}
