// CONNECT_OPEN: which URIs a client may open, which driver opens them (or the gateway's
// upstream), the context the driver gets, and how much of a failure a client is told.

import type { Logger } from 'pino';
import type { DependencyContainer } from 'tsyringe';
import {
  AccessManager,
  DRIVER,
  ErrorCode,
  ErrorDomain,
  RemoteProc,
  VirError,
  makeCredentialRequester,
  parseUri,
  selectDriver,
  type ConnectUri,
  type CredentialSource,
  type DriverConnection,
  type DriverOpenContext,
} from '@virtauth/core';
import type { CallCheck } from '@virtauth/drivers';
import type { DaemonConfig } from '../config.js';
import { allChecks, startPassThrough, upstreamFor } from '../gateway.js';
import { gatewayChecks, procedureInfo } from '../gateway-access.js';
import type { ClientSession } from '../session.js';
import type { UriAllowList } from '../uri-allow-list.js';
import { storedCredentials, type CredentialSourcesReader } from './credential-sources.js';

/** What a CONNECT_OPEN is opening, and the daemon's own credential sources for it. */
export interface OpenTarget {
  uri: string;
  driver: string;
  /** What the driver really opens when it differs from `uri` (a gateway's upstream route). */
  upstreamUri?: string;
  sources: readonly CredentialSource[];
}

/** The part of a daemon extension that takes part in opening a driver. */
export interface OpenHooks {
  /** Adds to the context a driver is opened with, for this client (e.g. relayed credentials). */
  decorateOpenContext?(session: ClientSession, ctx: DriverOpenContext, target: OpenTarget): DriverOpenContext | Promise<DriverOpenContext>;
  /** Called when a CONNECT_OPEN has finished, whether it succeeded or not. */
  openFinished?(session: ClientSession): void;
  /**
   * For a client passed through to an upstream (uri_upstream_list): a check every call passes
   * before it is forwarded, e.g. access control decoding the call's object and flags.
   */
  forwardedCallCheck?(session: ClientSession): CallCheck | undefined;
}

export interface DriverOpeningOptions {
  config: DaemonConfig;
  container: DependencyContainer;
  access: AccessManager;
  /** uri_allowed_list as it is now (a reload replaces it). */
  uriAllowList: () => UriAllowList;
  extensions: readonly OpenHooks[];
  credentialSources: CredentialSourcesReader;
  processName: string;
  log: Logger;
}

export class DriverOpening {
  constructor(private readonly opts: DriverOpeningOptions) {}

  /** Finds the driver for a CONNECT_OPEN name, as virConnectOpen does, and opens it. */
  async open(session: ClientSession, name: string | null, readOnly: boolean): Promise<DriverConnection> {
    const { config, container, access, extensions } = this.opts;
    const uriText = name && name !== '' ? name : config.defaultUri;
    // A gateway URI opens its configured upstream with the remote driver, whatever else is registered.
    const route = upstreamFor(config.uriUpstreamList, uriText);
    // Before the name is even parsed: nothing a client names reaches a driver unless allowed
    // (uri_upstream_list entries are matched exactly, so they are allowed as written).
    if (!route && uriText !== config.defaultUri && !this.opts.uriAllowList().allows(uriText)) {
      session.log.warn(
        {
          event: 'connect.open.denied',
          uri: uriForLog(uriText),
          readOnly,
          peerUid: session.identity.unixUid,
          user: session.identity.username,
          method: session.identity.method,
        },
        'connection open refused: the URI is not in uri_allowed_list',
      );
      throw new VirError({
        code: ErrorCode.ACCESS_DENIED,
        domain: ErrorDomain.ACCESS,
        detail: `this daemon does not open '${uriForLog(uriText)}' (its operator can allow it in uri_allowed_list)`,
      });
    }
    const uri = parseUri(route ? route.upstreamUri : uriText);
    const drivers = container.resolveAll(DRIVER);
    const driver = route ? drivers.find((d) => d.name === 'remote') : selectDriver(drivers, uri);
    if (!driver) throw new VirError({ code: ErrorCode.NO_CONNECT, domain: ErrorDomain.NONE, detail: uriText });
    const abort = new AbortController();
    session.opening = abort;
    const sources = (await this.opts.credentialSources()).map((s) => storedCredentials(s, session));
    let ctx: DriverOpenContext = {
      requestCredentials: makeCredentialRequester(sources, null),
      auth: null,
      readOnly,
      processName: this.opts.processName,
      signal: abort.signal,
    };
    const started = Date.now();
    try {
      for (const e of extensions)
        if (e.decorateOpenContext)
          ctx = await e.decorateOpenContext(session, ctx, {
            uri: uriText,
            driver: driver.name,
            ...(route ? { upstreamUri: route.upstreamUri } : {}),
            sources,
          });
      const conn = await driver.open(uri, ctx);
      if (this.opts.log.isLevelEnabled('info'))
        session.log.info(
          {
            event: 'connect.open',
            driver: driver.name,
            uri: uriText,
            ...(route ? { upstream: route.upstreamUri } : {}),
            readOnly,
            ms: Date.now() - started,
          },
          'hypervisor connection opened',
        );
      if (session.rpc.closed) {
        await conn.close();
        throw new VirError({ code: ErrorCode.AUTH_CANCELLED, domain: ErrorDomain.RPC, detail: 'client disconnected' });
      }
      if (route) {
        try {
          // Access control needs the hypervisor type and the open's own check before the
          // connection is handed over: after that, virtauthd can no longer call the upstream.
          session.readOnlyOpen = readOnly;
          if (access.enabled) {
            session.gatewayConnectDriver = session.connectDriver = await conn.getType();
            await access.checkCall(procedureInfo(RemoteProc.CONNECT_OPEN), { name: uriText, flags: 0 }, session.accessSubject, null);
          }
          const gatewayAccess = gatewayChecks(session, access);
          const checks = extensions.map((e) => e.forwardedCallCheck?.(session)).filter((c): c is CallCheck => c !== undefined);
          if (gatewayAccess) checks.unshift(gatewayAccess.checkCall);
          startPassThrough(
            session,
            conn,
            checks.length === 1 ? checks[0] : checks.length > 1 ? allChecks(checks) : undefined,
            gatewayAccess,
          );
        } catch (e) {
          await conn.close();
          throw e;
        }
      }
      return conn;
    } catch (e) {
      session.log.info(
        { event: 'connect.open.failed', driver: driver.name, uri: uriText, err: (e as Error).message },
        'hypervisor connection failed',
      );
      throw restrictedClient(session) ? withoutDetails(e, uri, session) : e;
    } finally {
      session.opening = null;
      for (const e of extensions) e.openFinished?.(session);
    }
  }
}

/**
 * Clients that get no details of why an open failed (paths, errno, user names would tell them
 * about the daemon's host): read-only ones, and anonymous ones on plain TCP.
 */
function restrictedClient(session: ClientSession): boolean {
  return session.readOnly || (session.identity.method === 'none' && session.transport.kind === 'tcp');
}

function withoutDetails(e: unknown, uri: ConnectUri, session: ClientSession): VirError {
  const code = e instanceof VirError ? e.code : ErrorCode.INTERNAL_ERROR;
  const domain = e instanceof VirError ? e.domain : ErrorDomain.NONE;
  // The relay's own outcomes say only what this client was asked and why it ended: keep them.
  if (e instanceof VirError && (code === ErrorCode.AUTH_CANCELLED || (code === ErrorCode.AUTH_UNAVAILABLE && domain === ErrorDomain.AUTH)))
    return e;
  return new VirError({
    code,
    domain,
    detail: `cannot open '${uriForLog(uri.raw)}': the daemon's log has the reason (connection ${session.connectionId})`,
  });
}

/** A client-supplied URI as logs and errors show it: bounded, and no password in the user part. */
function uriForLog(text: string): string {
  const bounded = text.length > 256 ? `${text.slice(0, 256)}…` : text;
  return bounded.replace(/^([^:/?#]+:\/\/)([^@/?#:]*):[^@/?#]*@/, '$1$2@');
}
