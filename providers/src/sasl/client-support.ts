// What the password-based client mechanisms share: collecting credentials once and reporting
// failures as libvirt's remote driver does (AUTH_FAILED in the REMOTE domain).

import { credential, CredentialType, ErrorCode, ErrorDomain, VirError, type Credential, type SaslClientContext } from '@virtauth/core';

export function saslClientError(mechanism: string, detail: string, cause?: unknown): VirError {
  return new VirError({ code: ErrorCode.AUTH_FAILED, domain: ErrorDomain.REMOTE, detail: `${mechanism}: ${detail}`, cause });
}

export function throwIfAborted(mechanism: string, signal: AbortSignal | undefined): void {
  if (signal?.aborted) {
    throw new VirError({ code: ErrorCode.AUTH_CANCELLED, domain: ErrorDomain.REMOTE, detail: `${mechanism}: authentication was aborted` });
  }
}

export interface PasswordCredentials {
  /** Authorization identity (SASL "user"); null when not asked or answered empty. */
  authzid: string | null;
  authcid: string;
  password: string;
}

/**
 * Asks for everything at once, as libvirt does with Cyrus: USERNAME (the authzid) only when the
 * application declared it can answer it, then AUTHNAME and PASSPHRASE.
 */
export async function collectPasswordCredentials(mechanism: string, ctx: SaslClientContext): Promise<PasswordCredentials> {
  const wantsAuthzid = ctx.auth?.credTypes.includes(CredentialType.USERNAME) ?? false;
  const authzCred = wantsAuthzid ? credential(CredentialType.USERNAME, 'Please enter your authorization name', 'Authorization Name') : null;
  const authnCred = credential(CredentialType.AUTHNAME, 'Please enter your authentication name', 'Authentication Name');
  const passCred = credential(CredentialType.PASSPHRASE, 'Please enter your password', 'Password');
  const creds: Credential[] = [...(authzCred ? [authzCred] : []), authnCred, passCred];
  await ctx.requestCredentials(creds, { service: ctx.service, host: ctx.host, ...(ctx.signal ? { signal: ctx.signal } : {}) });
  throwIfAborted(mechanism, ctx.signal);
  const authcid = authnCred.result;
  const password = passCred.result;
  if (authcid === null || authcid.length === 0) throw saslClientError(mechanism, 'no authentication name was given');
  if (password === null || password.length === 0) throw saslClientError(mechanism, 'no password was given');
  const authzid = authzCred?.result ? authzCred.result : null;
  return { authzid, authcid, password };
}
