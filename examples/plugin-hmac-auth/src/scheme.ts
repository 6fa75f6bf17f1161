// The `hmac` auth scheme: a remote_auth_type of its own with two procedures of its own in the
// REMOTE program, answered before authentication on sockets whose auth_* names it.
//   HMAC_CHALLENGE () -> nonce;   HMAC_PROVE (user, HMAC(key, label, nonce, user)) -> ()

import { randomBytes } from 'node:crypto';
import {
  ErrorCode,
  ErrorDomain,
  VirError,
  createSessionSlot,
  xdr,
  type AuthProvider,
  type ClientAuthContext,
  type ServerAuthContext,
  type ServerAuthProcedure,
  type ServerAuthProvider,
} from '@virtauth/core';
import { NONCE_BYTES, isUserName, mac, requestKey, signedMessage, type KeyStore } from './keys.js';

/** Outside libvirt's numbers (0-2) and its procedure range, so no libvirt release collides. */
export const HMAC_AUTH_TYPE = 0x484d;
export const HmacProc = { CHALLENGE: 0x484d0001, PROVE: 0x484d0002 } as const;

const LABEL = 'virtauth-plugin-hmac scheme';
const MAX_FAILURES = 3;

const challengeRet = xdr.struct({ nonce: xdr.fixedOpaque(NONCE_BYTES) });
const proveArgs = xdr.struct({ user: xdr.string(64), proof: xdr.fixedOpaque(32) });

/** The nonce this connection must prove, and how often it has failed. */
const CHALLENGE = createSessionSlot<Buffer>('hmac.challenge');
const FAILURES = createSessionSlot<number>('hmac.failures');

function refused(): VirError {
  return new VirError({ code: ErrorCode.AUTH_FAILED, domain: ErrorDomain.RPC, detail: 'authentication failed' });
}

function serverHalf(keys: KeyStore): ServerAuthProvider {
  const fail = (ctx: ServerAuthContext, reason: string, user?: string): never => {
    const failures = (ctx.state.get(FAILURES) ?? 0) + 1;
    ctx.state.set(FAILURES, failures);
    ctx.log.warn({ event: 'auth.hmac.failed', reason, user, failures }, 'HMAC authentication failed');
    if (failures >= MAX_FAILURES) ctx.closeAfterReply();
    throw refused();
  };
  const challenge: ServerAuthProcedure<void, { nonce: Buffer }> = {
    args: xdr.xvoid,
    ret: challengeRet,
    handle: async (ctx) => {
      const nonce = randomBytes(NONCE_BYTES);
      ctx.state.set(CHALLENGE, nonce);
      return { nonce };
    },
  };
  const prove: ServerAuthProcedure<{ user: string; proof: Buffer }, void> = {
    args: proveArgs,
    ret: xdr.xvoid,
    handle: async (ctx, { user, proof }) => {
      const nonce = ctx.state.get(CHALLENGE);
      // One proof per nonce: a replayed or second guess needs a new challenge.
      ctx.state.delete(CHALLENGE);
      if (!nonce) return fail(ctx, 'HMAC_PROVE without HMAC_CHALLENGE');
      if (!isUserName(user)) return fail(ctx, 'malformed user name');
      if (!keys.verify(user, signedMessage(LABEL, nonce, user), proof)) return fail(ctx, 'wrong key or unknown user', user);
      ctx.log.info({ event: 'auth.hmac.succeeded', user }, 'HMAC authentication succeeded');
      ctx.markAuthenticated({ username: user, method: 'hmac' });
    },
  };
  return { procedures: { [HmacProc.CHALLENGE]: challenge, [HmacProc.PROVE]: prove } };
}

async function authenticate(ctx: ClientAuthContext): Promise<void> {
  const { user, key } = await requestKey(ctx.requestCredentials, ctx.service, ctx.host, ctx.signal);
  const { nonce } = await ctx.rpc.call(HmacProc.CHALLENGE, xdr.xvoid, undefined, challengeRet);
  await ctx.rpc.call(HmacProc.PROVE, proveArgs, { user, proof: mac(key, signedMessage(LABEL, nonce, user)) }, xdr.xvoid);
}

/** The scheme's provider; without keys it has only the client half. */
export function hmacAuthProvider(keys: KeyStore | null): AuthProvider {
  return {
    type: HMAC_AUTH_TYPE,
    name: 'hmac',
    // A client prefers it to polkit (200), not to sasl (300); a daemon that accepts it never
    // picks it on its own for its outgoing connections (auth=hmac still does).
    priority: keys ? 0 : 250,
    client: { authenticate },
    ...(keys ? { server: serverHalf(keys) } : {}),
  };
}
