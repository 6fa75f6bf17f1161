// The CLI's connections and the client config: when identity providers are configured, a server
// offering OAUTHBEARER gets the cached token; when none is valid, the configured sign-in runs on
// the terminal, or (with --no-prompt) the command fails saying to run `virtauth login`.

import { ErrorCode, ErrorDomain, VirError } from '@virtauth/core';
import type { SignInInteraction } from '@virtauth/providers';
import { loadClientConfig } from './client-config.js';
import type { OidcOptions } from './oidc-client.js';
import { terminalInteraction } from './terminal.js';

function signInNeeded(issuer: string): VirError {
  return new VirError({
    code: ErrorCode.AUTH_UNAVAILABLE,
    domain: ErrorDomain.AUTH,
    detail: `not signed in at ${issuer}, or the sign-in has expired; run: virtauth login --issuer ${issuer}`,
  });
}

/** With no one to ask: a sign-in is refused at once, with the command that fixes it. */
const noPerson: SignInInteraction = {
  showDeviceCode: ({ issuer }) => {
    throw signInNeeded(issuer);
  },
  openAuthorizationUrl: (_url, issuer) => {
    throw signInNeeded(issuer);
  },
};

/** The `oidc` option of the CLI's opens; undefined when no identity provider is configured. */
export function connectionOidcOptions(configFile: string | undefined, personPresent: boolean): OidcOptions | undefined {
  const config = loadClientConfig(configFile);
  if (config.providers.length === 0) return undefined;
  return {
    providers: config.providers,
    tokenCacheDir: config.tokenCacheDir,
    interaction: personPresent ? terminalInteraction() : noPerson,
  };
}
