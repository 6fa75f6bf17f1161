// `virtauth login`, `virtauth logout` and `virtauth auth status`: a person's sign-in to the
// identity providers of the client config, kept in the token cache that connections then use.
// Nothing here ever prints a token.

import type { Command } from 'commander';
import { decodeJwt } from 'jose';
import { terminalSafeLine } from '@virtauth/core';
import { TokenCacheFile, type StoredToken } from '@virtauth/providers';
import { loadClientConfig, selectProvider, type IdentityProvider, type SignInFlow } from './client-config.js';
import { OidcSession } from './oidc-client.js';
import { terminalInteraction } from './terminal.js';

/** Beyond this difference between our clock and the IdP's, tokens look expired or not yet valid. */
const CLOCK_SKEW_WARNING_SEC = 60;

export interface LoginCommandContext {
  /** The global --config (client config file). */
  configFile: () => string | undefined;
  write: (text: string) => void;
  warn: (text: string) => void;
}

function describeExpiry(expiresAt: number | null, now = Date.now()): string {
  if (expiresAt === null) return 'no expiry given';
  const left = Math.round((expiresAt - now) / 1000);
  const at = new Date(expiresAt).toISOString();
  return left > 0 ? `${at} (in ${left} s)` : `${at} (expired ${-left} s ago)`;
}

/**
 * How far our clock is from the issuer's, from the access token's `iat` (read, not verified: it
 * only feeds a warning); null when the token says nothing.
 */
export function clockSkewSeconds(token: StoredToken): number | null {
  try {
    const { iat } = decodeJwt(token.accessToken);
    return typeof iat === 'number' ? Math.round(token.obtainedAt / 1000 - iat) : null;
  } catch {
    return null;
  }
}

function storeOf(config: { tokenCacheDir: string }, p: IdentityProvider): TokenCacheFile {
  return new TokenCacheFile({ directory: config.tokenCacheDir, issuer: p.issuer, clientId: p.clientId });
}

export function registerLoginCommands(program: Command, ctx: LoginCommandContext): void {
  program
    .command('login')
    .description('sign in at an identity provider of the client config; later commands use the cached token')
    .option('--issuer <issuer>', 'the identity provider (issuer URL or config name); needed when several are configured')
    .option('--device', 'use the device flow (a code to enter on another device)')
    .option('--browser', 'use the authorization code flow in a browser (the default)')
    .option('--no-browser', 'do not open a browser: print the address to open instead')
    .action(async (o: { issuer?: string; device?: boolean; browser?: boolean }) => {
      const config = loadClientConfig(ctx.configFile());
      const chosen = selectProvider(config, o.issuer);
      const flow: SignInFlow | undefined = o.device ? 'device' : o.browser === true ? 'browser' : chosen.flow;
      const provider: IdentityProvider = { ...chosen, ...(flow ? { flow } : {}) };
      const session = new OidcSession({
        providers: [provider],
        tokenCacheDir: config.tokenCacheDir,
        interaction: terminalInteraction({ openBrowser: o.browser !== false }),
      });
      const token = await session.tokenClient(provider).signIn({ service: 'virtauth', host: 'login' });
      ctx.write(
        `Signed in to ${provider.issuer} as ${terminalSafeLine(token.subject ?? 'an unnamed subject')}; the token expires ${describeExpiry(token.expiresAt)}\n`,
      );
      const skew = clockSkewSeconds(token);
      if (skew !== null && Math.abs(skew) > CLOCK_SKEW_WARNING_SEC) {
        ctx.warn(
          `warning: this machine's clock is ${Math.abs(skew)} s ${skew > 0 ? 'ahead of' : 'behind'} the clock of ${provider.issuer}; servers may refuse its tokens as expired or not yet valid: set the clock right (NTP, timedatectl)\n`,
        );
      }
    });

  program
    .command('logout')
    .description('revoke (where the identity provider allows) and forget the cached tokens')
    .option('--issuer <issuer>', 'only this identity provider (default: all configured)')
    .action(async (o: { issuer?: string }) => {
      const config = loadClientConfig(ctx.configFile());
      const providers = o.issuer !== undefined ? [selectProvider(config, o.issuer)] : config.providers;
      const session = new OidcSession({ providers, tokenCacheDir: config.tokenCacheDir });
      for (const provider of providers) {
        const { revoked, revocationSupported } = await session.tokenClient(provider).signOut();
        const how =
          revoked > 0
            ? `revoked ${revoked} token(s)`
            : revocationSupported
              ? 'no tokens were cached'
              : 'the identity provider offers no revocation; the tokens were forgotten';
        ctx.write(`Signed out of ${provider.issuer} (${how})\n`);
      }
    });

  program
    .command('auth')
    .description('sign-in state')
    .command('status')
    .description('who you are signed in as at each identity provider, until when, with which scopes (never the token)')
    .action(async () => {
      const config = loadClientConfig(ctx.configFile());
      if (config.providers.length === 0) selectProvider(config, undefined);
      for (const provider of config.providers) {
        ctx.write(`${provider.issuer} (${provider.name}), client ${provider.clientId}\n`);
        const { entries, refused } = await storeOf(config, provider).read();
        if (refused) {
          ctx.write(`  not signed in: ${refused}\n`);
          continue;
        }
        if (entries.size === 0) {
          ctx.write('  not signed in (run virtauth login)\n');
          continue;
        }
        for (const [slot, token] of entries) {
          const [resource] = slot.split('\n');
          ctx.write(`  user: ${terminalSafeLine(token.subject ?? '(unknown)')}\n`);
          ctx.write(
            `  expires: ${describeExpiry(token.expiresAt)}${token.refreshToken ? ', renewed silently with a refresh token' : ''}\n`,
          );
          ctx.write(`  scopes: ${terminalSafeLine(token.scope ?? '(not stated)')}\n`);
          if (resource) ctx.write(`  resource: ${resource}\n`);
        }
      }
    });
}
