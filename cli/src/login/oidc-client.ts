// OpenID Connect for openAuth callers who know nothing of containers or tokens:
// `openAuth(uri, { oidc: {} })` reads the client config, registers OAUTHBEARER with one token
// client per identity provider (tokens cached on disk, shared with `virtauth login`), and turns a
// server's refusal (RFC 7628 error JSON) into an error that says what the server wanted.

import { container as rootContainer, type DependencyContainer } from 'tsyringe';
import { ErrorCode, ErrorDomain, VirError, terminalSafeLine } from '@virtauth/core';
import {
  OidcTokenClient,
  TokenCacheFile,
  registerDefaultProviders,
  registerOAuthBearer,
  type OAuthBearerServerError,
  type OidcClientSettings,
  type SignInInteraction,
} from '@virtauth/providers';
import { registerDefaultDrivers } from '@virtauth/drivers';
import { loadClientConfig, providerForHost, type IdentityProvider } from './client-config.js';

export interface OidcOptions {
  /** The identity providers; default: those of the client config file. */
  providers?: readonly IdentityProvider[];
  /** The client config file to read when `providers` is not given (default: see client-config.ts). */
  configFile?: string;
  /** Where tokens are cached across processes; false keeps them in memory only. Default: the config's. */
  tokenCacheDir?: string | false;
  /** Shows sign-ins directly (the CLI prints, draws a QR code, opens a browser); default: through the credential callback. */
  interaction?: SignInInteraction;
}

/** What a server said about the token it refused, and whose token it was. */
interface Refusal {
  host: string;
  error: OAuthBearerServerError;
  provider: IdentityProvider;
}

export class OidcSession {
  private readonly clients = new Map<IdentityProvider, OidcTokenClient>();
  readonly providers: readonly IdentityProvider[];
  readonly tokenCacheDir: string | false;
  private refusals: Refusal[] = [];

  constructor(private readonly options: OidcOptions) {
    const config = options.providers && options.tokenCacheDir !== undefined ? null : loadClientConfig(options.configFile);
    this.providers = options.providers ?? config!.providers;
    this.tokenCacheDir = options.tokenCacheDir ?? config!.tokenCacheDir;
  }

  /** The token client of a provider (one per provider, so in-memory reuse spans opens). */
  tokenClient(provider: IdentityProvider): OidcTokenClient {
    let client = this.clients.get(provider);
    if (!client) {
      const settings: OidcClientSettings = {
        issuer: provider.issuer,
        clientId: provider.clientId,
        grant: provider.flow === 'device' ? 'device_code' : 'authorization_code',
        scope: provider.scopes,
        resource: provider.resource,
        allowInsecureHttp: provider.allowInsecureHttp,
        loopbackPort: provider.redirectPort,
        interaction: this.options.interaction,
        tokenStore:
          this.tokenCacheDir === false
            ? undefined
            : new TokenCacheFile({ directory: this.tokenCacheDir, issuer: provider.issuer, clientId: provider.clientId }),
      };
      this.clients.set(provider, (client = new OidcTokenClient(settings)));
    }
    return client;
  }

  /** A container with the shipped plugins and OAUTHBEARER for the configured providers. */
  createContainer(): DependencyContainer {
    const container = rootContainer.createChildContainer();
    registerDefaultProviders(container);
    registerDefaultDrivers(container);
    // No provider: no OAUTHBEARER client, so the mechanism is never chosen only to fail.
    if (this.providers.length === 0) return container;
    const byHost = new Map<string, IdentityProvider>();
    registerOAuthBearer(container, {
      client: {
        clientFor: (host) => {
          const provider = providerForHost(this.providers, host);
          if (!provider) return null;
          byHost.set(host, provider);
          return this.tokenClient(provider).settings;
        },
        onServerError: (host, error) => {
          const provider = byHost.get(host);
          if (provider) this.refusals.push({ host, error, provider });
        },
      },
    });
    return container;
  }

  /** Runs an open; a refusal of our token becomes an error that names what the server wanted. */
  async explainRefusals<T>(open: () => Promise<T>): Promise<T> {
    const before = this.refusals.length;
    try {
      return await open();
    } catch (e) {
      const refusal = this.refusals.slice(before).pop();
      if (!refusal || !(e instanceof VirError)) throw e;
      throw new VirError({ code: ErrorCode.AUTH_FAILED, domain: ErrorDomain.AUTH, detail: describeRefusal(refusal), cause: e });
    }
  }
}

/** An RFC 7628 refusal in words a person can act on (what the server wants, what to change). */
export function describeRefusal({ host, error: raw, provider }: Refusal): string {
  // The server's words are shown to a person: no terminal controls, and not too many of them.
  const error: OAuthBearerServerError = { status: terminalSafeLine(String(raw.status).slice(0, 40)) };
  if (raw.scope !== undefined) error.scope = terminalSafeLine(raw.scope.slice(0, 200));
  if (raw['openid-configuration'] !== undefined)
    error['openid-configuration'] = terminalSafeLine(raw['openid-configuration'].slice(0, 200));
  const server = `the server ${host} refused the token from ${provider.issuer} (${error.status})`;
  const trusted = error['openid-configuration'];
  const configured = `${provider.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
  if (trusted && trusted !== configured) {
    return `${server}: it trusts tokens from ${trusted.replace(/\/\.well-known\/openid-configuration$/, '')}, not from ${provider.issuer}; use an identity provider for that issuer (oidc_<name>_hosts in the client config)`;
  }
  if (error.status === 'insufficient_scope' || (error.scope && !hasScopes(provider.scopes, error.scope))) {
    return `${server}: it wants the scope(s) '${error.scope ?? ''}', and this login asked for '${provider.scopes ?? ''}'; add them to oidc_${provider.name}_scopes and run virtauth login`;
  }
  return `${server}: the token is not valid there: issued for another audience (this login asks for resource '${provider.resource ?? 'none'}'; set oidc_${provider.name}_resource to the server's), or expired because the clocks of this machine, the server and the IdP disagree (check NTP); then run virtauth login`;
}

function hasScopes(have: string | undefined, wanted: string): boolean {
  const set = new Set((have ?? '').split(' '));
  return wanted.split(' ').every((s) => s === '' || set.has(s));
}

const sessions = new WeakMap<OidcOptions, { session: OidcSession; container: DependencyContainer }>();

/** The session and container of an `oidc` option object (kept, so repeated opens share tokens). */
export function oidcSessionFor(options: OidcOptions): { session: OidcSession; container: DependencyContainer } {
  let entry = sessions.get(options);
  if (!entry) {
    const session = new OidcSession(options);
    entry = { session, container: session.createContainer() };
    sessions.set(options, entry);
  }
  return entry;
}
