// Server half of AUTH_POLKIT: ask polkit whether the unix-socket client's process may use the
// socket's action, with libvirtd's outcomes and error texts.

import {
  AuthType,
  ErrorCode,
  ErrorDomain,
  RemoteProc,
  VirError,
  remote,
  xdr,
  type ServerAuthContext,
  type ServerAuthProcedure,
  type ServerAuthProvider,
} from '@virtauth/core';
import { DbusPolkitAuthority, type PolkitAuthorityClient, type PolkitAuthorityOptions } from './authority.js';
import { processStartTime } from './process-start-time.js';
import { DEFAULT_POLKIT_ACTION_RO, DEFAULT_POLKIT_ACTION_RW } from './settings.js';

export interface PolkitServerOptions extends PolkitAuthorityOptions {
  /** Action for clients of read-write sockets (default org.libvirt.unix.manage). */
  actionRw?: string;
  /** Action for clients of read-only sockets (default org.libvirt.unix.monitor). */
  actionRo?: string;
  /** The polkit Authority to ask; by default one on the system bus, through dbus-next. */
  authority?: PolkitAuthorityClient;
  /** Where process start times are read (tests point it elsewhere); default /proc. */
  procRoot?: string;
}

function polkitError(code: number, detail: string): VirError {
  return new VirError({ code, domain: ErrorDomain.POLKIT, detail });
}

export class PolkitServer implements ServerAuthProvider {
  readonly actionRw: string;
  readonly actionRo: string;
  private readonly authority: PolkitAuthorityClient;
  readonly procedures: Readonly<Record<number, ServerAuthProcedure>>;

  constructor(private readonly opts: PolkitServerOptions = {}) {
    this.actionRw = opts.actionRw ?? DEFAULT_POLKIT_ACTION_RW;
    this.actionRo = opts.actionRo ?? DEFAULT_POLKIT_ACTION_RO;
    this.authority = opts.authority ?? new DbusPolkitAuthority(opts);
    this.procedures = {
      [RemoteProc.AUTH_POLKIT]: { args: xdr.xvoid, ret: remote.authPolkitRet, handle: (ctx: ServerAuthContext) => this.authPolkit(ctx) },
    };
  }

  /** The action a client of this connection's socket needs. */
  actionFor(ctx: ServerAuthContext): string {
    return ctx.readOnly ? this.actionRo : this.actionRw;
  }

  /** Root is not asked (libvirtd does the same): it is authenticated by AUTH_LIST itself. */
  async onAuthList(ctx: ServerAuthContext): Promise<number[] | null> {
    const peer = ctx.transport.peer;
    if (ctx.transport.kind !== 'unix' || peer?.uid !== 0) return null;
    ctx.log.info({ event: 'auth.polkit.root_bypass', pid: peer.pid }, 'root client authenticated without asking polkit');
    ctx.markAuthenticated({
      method: 'none',
      unixUid: peer.uid,
      unixGid: peer.gid,
      unixPid: peer.pid,
      polkit: { action: this.actionFor(ctx), result: 'root' },
    });
    return [AuthType.NONE];
  }

  private async authPolkit(ctx: ServerAuthContext): Promise<{ complete: number }> {
    const peer = ctx.transport.peer;
    if (ctx.transport.kind !== 'unix') {
      throw polkitError(
        ErrorCode.AUTH_FAILED,
        'polkit authentication is only possible on unix sockets (configure auth_tcp/auth_tls as "sasl" or "none")',
      );
    }
    if (!peer) {
      // The daemon logged why when the client connected (no SO_PEERCRED on this platform, or the addon is not built).
      throw polkitError(
        ErrorCode.AUTH_FAILED,
        "the client's peer credentials (SO_PEERCRED) are unavailable, so polkit cannot identify it; see the daemon log",
      );
    }
    const action = this.actionFor(ctx);
    // The host reads the start time at accept: if the pid now names another process (the client
    // exited and the pid was reused), polkit must not be asked about that one.
    const current = await processStartTime(peer.pid, this.opts.procRoot);
    const startTime = peer.startTime !== undefined ? peer.startTime : current;
    if (startTime === null || current !== startTime) {
      ctx.log.warn(
        { event: 'auth.polkit.client_gone', pid: peer.pid, uid: peer.uid, action },
        'client process exited before its polkit check',
      );
      // libvirtd's code, domain and opening words; virsh would retry a POLKIT-domain failure.
      throw new VirError({
        code: ErrorCode.INTERNAL_ERROR,
        domain: ErrorDomain.NONE,
        detail: `Cannot find start time for pid ${peer.pid}: the client process exited before polkit could check it`,
      });
    }
    let result;
    try {
      result = await this.authority.checkAuthorization({ pid: peer.pid, startTime, uid: peer.uid }, action, true);
    } catch (e) {
      ctx.log.warn({ event: 'auth.polkit.error', pid: peer.pid, uid: peer.uid, action, err: (e as Error).message }, 'polkit check failed');
      throw e;
    }
    const logFields = { pid: peer.pid, uid: peer.uid, action };
    if (result.isAuthorized) {
      ctx.log.info({ event: 'auth.polkit.allowed', ...logFields }, 'polkit authorized the client');
      ctx.markAuthenticated({
        method: 'polkit',
        unixUid: peer.uid,
        unixGid: peer.gid,
        unixPid: peer.pid,
        polkit: { action, result: 'authorized' },
      });
      return { complete: 1 };
    }
    ctx.log.warn({ event: 'auth.polkit.denied', challenge: result.isChallenge, ...logFields }, 'polkit did not authorize the client');
    if (result.details['polkit.dismissed'] === 'true') throw polkitError(ErrorCode.AUTH_CANCELLED, 'user cancelled authentication process');
    if (result.isChallenge) throw polkitError(ErrorCode.AUTH_UNAVAILABLE, `no polkit agent available to authenticate action '${action}'`);
    throw polkitError(ErrorCode.AUTH_FAILED, 'access denied by policy');
  }

  close(): void {
    this.authority.close();
  }
}
