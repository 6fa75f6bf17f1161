// The SASL scheme on libvirt's wire (AUTH_SASL_INIT / START / STEP): mechanism choice and the
// message loop on the client, sessions, allow list and failure throttling on the server. The
// mechanisms themselves are plugins found under SASL_MECHANISM.

import {
  globMatch,
  AuthType,
  ErrorCode,
  ErrorDomain,
  RemoteProc,
  SaslAuthenticationError,
  VirError,
  createSessionSlot,
  remote,
  xdr,
  type AuthProvider,
  type ClientAuthContext,
  type SaslMechanism,
  type ServerAuthContext,
  type ServerAuthProcedure,
  type ServerAuthProvider,
  type SaslServerSession,
  type UserDatabase,
} from '@virtauth/core';
import { channelBindingFor } from './sasl/channel-binding.js';
import { FailureThrottle, failureSource, type ThrottleClock } from './sasl/failure-throttle.js';

/** The most SASL round trips a client or server goes through before giving up. */
const MAX_SASL_ROUNDS = 16;

function clientError(detail: string): VirError {
  return new VirError({ code: ErrorCode.AUTH_FAILED, domain: ErrorDomain.REMOTE, detail });
}

/** libvirt's only answer to any SASL failure: the reason stays in the server's log. */
export function saslAuthFailed(): VirError {
  return new VirError({ code: ErrorCode.AUTH_FAILED, domain: ErrorDomain.RPC, detail: 'authentication failed' });
}

export interface SaslClientOptions {
  /** Upper bound on the SCRAM iteration count a server may make this client spend. */
  maxIterations?: number;
  /** Fewest SCRAM iterations a server may ask for (default 4096, RFC 7677's advice). */
  minIterations?: number;
}

/** Whether a SASL mechanism name is of the SCRAM family, known to this client or not. */
const isScramName = (name: string): boolean => /^SCRAM-/i.test(name);

export interface SaslServerOptions {
  users: UserDatabase;
  /** Mechanism names offered, in order; default: every registered one. */
  mechanisms?: readonly string[];
  /** Globs (`*`, `?`) matched against the authenticated name; null allows everyone. */
  allowedUsernames?: readonly string[] | null;
  /** Failures a connection may make before it is closed. */
  maxFailuresPerConnection?: number;
  /**
   * Failures of one user name from one source (unix uid, TCP address, TLS certificate) within
   * `failureWindowMs` before that name is refused from that source; other sources are not.
   */
  maxFailuresPerUser?: number;
  failureWindowMs?: number;
  /**
   * Delay added to a failure reply, doubled per failure of the user name from its source (or on
   * the connection), capped at 32 times itself and 8 s. Answers to that name from that source
   * wait it out, so parallel connections do not guess faster.
   */
  failureDelayMs?: number;
  /** The throttle's clock (tests). */
  throttleClock?: ThrottleClock;
}

type ServerState =
  | { stage: 'init'; offered: string[] }
  | { stage: 'step'; offered: string[]; mechanism: string; session: SaslServerSession; rounds: number };

interface ConnectionFailures {
  count: number;
}

/** Where the exchange in progress stands on one connection, and how often it has failed. */
const EXCHANGE = createSessionSlot<ServerState>('sasl.exchange');
const FAILURES = createSessionSlot<ConnectionFailures>('sasl.failures');

export class SaslAuthProvider implements AuthProvider {
  readonly type = AuthType.SASL;
  readonly name = 'sasl';
  readonly priority = 300;

  readonly client = {
    authenticate: (ctx: ClientAuthContext) => this.authenticateClient(ctx),
  };
  readonly server: ServerAuthProvider | undefined;

  /** A provider without server options is a client-only one (what the client library uses). */
  constructor(
    private readonly mechanisms: () => readonly SaslMechanism[],
    private readonly clientOptions: SaslClientOptions = {},
    serverOptions: SaslServerOptions | null = null,
  ) {
    this.server = serverOptions ? this.buildServer(serverOptions) : undefined;
  }

  private async authenticateClient(ctx: ClientAuthContext): Promise<void> {
    // SASL here has no security layer, so like libvirt's client it insists on a secure channel.
    if (!ctx.transport.secure)
      throw clientError('SASL authentication needs a secure channel (a unix socket or TLS); plain TCP would expose it');
    const { mechlist } = await ctx.rpc.call(RemoteProc.AUTH_SASL_INIT, xdr.xvoid, undefined, remote.authSaslInitRet);
    const offered = mechlist
      .split(',')
      .map((m) => m.trim())
      .filter((m) => m !== '');
    let candidates = offered;
    if (ctx.mechanism !== null) {
      // A whole name of the list: "SCRAM-SHA-256" is not offered by "SCRAM-SHA-256-PLUS".
      const wanted = ctx.mechanism.toUpperCase();
      const named = offered.find((m) => m.toUpperCase() === wanted);
      if (named === undefined) throw clientError(`SASL mechanism ${ctx.mechanism} not supported by server`);
      candidates = [named];
    }
    const binding = ctx.transport.tls ? channelBindingFor(ctx.transport.tls, 'client') : null;
    const registered = this.mechanisms();
    const usable = registered
      .filter((m) => candidates.includes(m.name))
      .filter((m) => !m.requiresChannelBinding || (binding !== null && ctx.channelBindingPolicy !== 'disable'))
      .sort((a, b) => b.priority - a.priority);
    const mech = usable[0];
    if (!mech) {
      throw clientError(`Failed to start SASL negotiation: no mechanism available (server offers ${offered.join(', ') || 'none'})`);
    }
    if (ctx.mechanism === null && mech.exposesPassword) {
      // Never a silent downgrade: a server that offers SCRAM can take the password without it.
      const keeping = offered.filter((name) => isScramName(name) || registered.some((m) => m.name === name && !m.exposesPassword));
      if (keeping.length > 0) {
        throw clientError(
          `the server offers ${keeping.join(', ')}, which this connection cannot use, and ${mech.name} would send the password itself: ` +
            `refusing to fall back to it (name it with auth=sasl.${mech.name} to allow it)`,
        );
      }
    }
    const session = mech.createClient({
      requestCredentials: ctx.requestCredentials,
      auth: ctx.auth,
      service: ctx.service,
      host: ctx.host,
      transport: ctx.transport,
      channelBinding: binding,
      channelBindingPolicy: ctx.channelBindingPolicy,
      serverMechanisms: offered,
      maxIterations: this.clientOptions.maxIterations ?? 100000,
      ...(this.clientOptions.minIterations !== undefined ? { minIterations: this.clientOptions.minIterations } : {}),
      ...(ctx.signal ? { signal: ctx.signal } : {}),
    });
    const first = await session.start();
    let reply = await ctx.rpc.call(
      RemoteProc.AUTH_SASL_START,
      remote.authSaslStartArgs,
      { mech: mech.name, nil: first === null ? 1 : 0, data: first ?? Buffer.alloc(0) },
      remote.authSaslStartRet,
    );
    for (let round = 0; round < MAX_SASL_ROUNDS; round++) {
      if (reply.complete === 1 && session.complete) return;
      // Even when the server says complete, the client checks its final message (mutual auth).
      const out = await session.step(reply.nil ? null : reply.data);
      if (reply.complete === 1) {
        if (session.complete) return;
        throw clientError(`the server ended the ${mech.name} exchange before the client could verify it`);
      }
      reply = await ctx.rpc.call(
        RemoteProc.AUTH_SASL_STEP,
        remote.authSaslStepArgs,
        { nil: out === null ? 1 : 0, data: out ?? Buffer.alloc(0) },
        remote.authSaslStepRet,
      );
    }
    throw clientError(`the ${mech.name} exchange did not finish within ${MAX_SASL_ROUNDS} rounds`);
  }

  private buildServer(opts: SaslServerOptions): ServerAuthProvider {
    const maxFailuresPerConnection = opts.maxFailuresPerConnection ?? 5;
    const throttle = new FailureThrottle({
      maxFailures: opts.maxFailuresPerUser ?? 10,
      windowMs: opts.failureWindowMs ?? 60000,
      baseDelayMs: opts.failureDelayMs ?? 250,
      ...(opts.throttleClock ? { clock: opts.throttleClock } : {}),
    });
    const failuresOf = (ctx: ServerAuthContext): ConnectionFailures => {
      let f = ctx.state.get(FAILURES);
      if (!f) ctx.state.set(FAILURES, (f = { count: 0 }));
      return f;
    };
    const fail = async (ctx: ServerAuthContext, reason: string, user?: string): Promise<never> => {
      ctx.state.delete(EXCHANGE);
      const failures = failuresOf(ctx);
      failures.count++;
      const delayMs = throttle.recordFailure(failureSource(ctx.transport), user, failures.count);
      ctx.log.warn({ event: 'auth.sasl.failed', reason, user, failures: failures.count }, 'SASL authentication failed');
      await throttle.clock.sleep(delayMs);
      if (failures.count >= maxFailuresPerConnection) {
        ctx.log.warn({ event: 'auth.sasl.too_many_failures' }, 'closing a connection after repeated authentication failures');
        ctx.closeAfterReply();
      }
      throw saslAuthFailed();
    };

    const offeredFor = (ctx: ServerAuthContext): string[] => {
      const registered = this.mechanisms();
      const names = opts.mechanisms ?? registered.map((m) => m.name);
      return names
        .map((n) => registered.find((m) => m.name === n))
        .filter((m): m is SaslMechanism => m !== undefined)
        .filter((m) => !m.requiresChannelBinding || ctx.transport.tls !== undefined)
        .map((m) => m.name);
    };

    const runStep = async (ctx: ServerAuthContext, state: Extract<ServerState, { stage: 'step' }>, data: Buffer | null) => {
      let result;
      try {
        result = await state.session.step(data);
      } catch (e) {
        const reason = e instanceof SaslAuthenticationError ? e.reason : `mechanism error: ${(e as Error).message}`;
        return fail(ctx, reason, e instanceof SaslAuthenticationError ? e.username : undefined);
      }
      if (!result.done) {
        if (++state.rounds > MAX_SASL_ROUNDS) return fail(ctx, 'too many SASL rounds');
        return { complete: 0, nil: result.data === null ? 1 : 0, data: result.data ?? Buffer.alloc(0) };
      }
      const username = state.session.username ?? '';
      if (opts.allowedUsernames && !opts.allowedUsernames.some((g) => globMatch(g, username))) {
        return fail(ctx, 'user name not in sasl_allowed_username_list', username);
      }
      const source = failureSource(ctx.transport);
      if (throttle.isRefused(source, username)) return fail(ctx, 'user is locked out from this source after repeated failures', username);
      // Recent failures of this name from this source delay even the right password (bounded).
      await throttle.clock.sleep(throttle.waitFor(source, username));
      ctx.state.delete(EXCHANGE);
      // Which mechanism won matters to operators (e.g. whether channel binding was used).
      ctx.log.info({ event: 'auth.sasl.succeeded', mechanism: state.mechanism, user: username }, 'SASL authentication succeeded');
      ctx.markAuthenticated({ ...state.session.identity, username, method: 'sasl', sasl: { mechanism: state.mechanism, username } });
      return { complete: 1, nil: result.data === null ? 1 : 0, data: result.data ?? Buffer.alloc(0) };
    };

    const init: ServerAuthProcedure = {
      args: xdr.xvoid,
      ret: remote.authSaslInitRet,
      handle: async (ctx) => {
        if (ctx.state.has(EXCHANGE)) return fail(ctx, 'AUTH_SASL_INIT called twice');
        if (!ctx.transport.secure) return fail(ctx, 'SASL refused on an insecure channel (no mechanism provides a security layer)');
        const offered = offeredFor(ctx);
        if (offered.length === 0) return fail(ctx, 'no SASL mechanism is available on this connection');
        ctx.state.set(EXCHANGE, { stage: 'init', offered });
        return { mechlist: offered.join(',') };
      },
    };
    const start: ServerAuthProcedure = {
      args: remote.authSaslStartArgs,
      ret: remote.authSaslStartRet,
      handle: async (ctx, args: { mech: string; nil: number; data: Buffer }) => {
        const state = ctx.state.get(EXCHANGE);
        if (!state || state.stage !== 'init') return fail(ctx, 'AUTH_SASL_START without AUTH_SASL_INIT');
        const registered = this.mechanisms();
        const mech = registered.find((m) => m.name === args.mech);
        if (!mech || !state.offered.includes(args.mech)) return fail(ctx, `mechanism '${args.mech}' was not offered`);
        const channelBinding = ctx.transport.tls ? channelBindingFor(ctx.transport.tls, 'server') : null;
        const session = mech.createServer({
          users: opts.users,
          transport: ctx.transport,
          channelBinding,
          serverOffersChannelBinding: state.offered.some((n) => registered.find((m) => m.name === n)?.requiresChannelBinding),
        });
        const next: Extract<ServerState, { stage: 'step' }> = {
          stage: 'step',
          offered: state.offered,
          mechanism: mech.name,
          session,
          rounds: 0,
        };
        ctx.state.set(EXCHANGE, next);
        return runStep(ctx, next, args.nil ? null : args.data);
      },
    };
    const step: ServerAuthProcedure = {
      args: remote.authSaslStepArgs,
      ret: remote.authSaslStepRet,
      handle: async (ctx, args: { nil: number; data: Buffer }) => {
        const state = ctx.state.get(EXCHANGE);
        if (!state || state.stage !== 'step') return fail(ctx, 'AUTH_SASL_STEP without AUTH_SASL_START');
        return runStep(ctx, state, args.nil ? null : args.data);
      },
    };
    return {
      procedures: {
        [RemoteProc.AUTH_SASL_INIT]: init,
        [RemoteProc.AUTH_SASL_START]: start,
        [RemoteProc.AUTH_SASL_STEP]: step,
      },
    };
  }
}
