// The client library's entry points, modelled on virConnectOpenAuth / virConnectOpen /
// virConnectOpenReadOnly.

import { hostname } from 'node:os';
import { container as rootContainer, type DependencyContainer, type InjectionToken } from 'tsyringe';
import {
  CREDENTIAL_SOURCE,
  DRIVER,
  ErrorCode,
  ErrorDomain,
  OpenFlag,
  VirError,
  makeCredentialRequester,
  parseUri,
  selectDriver,
  type ConnectAuth,
  type CredentialSource,
  type DriverConnection,
  type DriverOpenContext,
} from '@virtauth/core';
import { loadAuthConfSource, registerDefaultProviders, type SaslClientOptions } from '@virtauth/providers';
import { registerDefaultDrivers } from '@virtauth/drivers';
import { RelayClient, type RelayClientOptions, type RelayPolicy } from '@virtauth/relay';
import { oidcSessionFor, type OidcOptions } from './login/oidc-client.js';

export interface OpenOptions {
  /** A container with the plugins to use; by default the shipped providers and drivers. */
  container?: DependencyContainer;
  /** Sources consulted before the callback; by default the libvirt auth.conf for this URI. */
  credentialSources?: readonly CredentialSource[];
  /** Abandons the open (and any credential prompt in progress). */
  signal?: AbortSignal;
  /** Extra data for drivers. */
  extensions?: Record<string, unknown>;
  /** Answer credential requests that daemons relay back during the open (default true). */
  relay?: boolean;
  /** What relayed requests may ask for, and how many and how long. */
  relayPolicy?: RelayPolicy;
  /** Whether a person can answer relayed prompts (default: when `auth` is given). */
  personPresent?: boolean;
  /** Receives one record per relayed request (origin and types only). */
  relayAudit?: RelayClientOptions['audit'];
  /** Sign in with OpenID Connect (OAUTHBEARER): `{}` uses the client config file and the token cache. */
  oidc?: OidcOptions;
}

/** openAuth's second form: everything in one object, e.g. `openAuth(uri, { oidc: {} })`. */
export interface OpenAuthOptions extends OpenOptions {
  auth?: ConnectAuth | null;
  flags?: number;
}

export type Connection = DriverConnection;

/** Registered sources, then the libvirt auth.conf that applies to this URI. */
async function defaultCredentialSources(container: DependencyContainer, uri: ReturnType<typeof parseUri>): Promise<CredentialSource[]> {
  const registered = container.isRegistered(CREDENTIAL_SOURCE, true) ? container.resolveAll(CREDENTIAL_SOURCE) : [];
  const authConf = await loadAuthConfSource(uri);
  return authConf ? [...registered, authConf] : registered;
}

/**
 * The relay's client end of a container: one prompt queue and one rate per daemon for every open
 * made with it. A container made elsewhere gets one on its first open.
 */
export const RELAY_CLIENT: InjectionToken<RelayClient> = Symbol('virtauth.relayClient');

let defaultContainer: DependencyContainer | null = null;

export interface ClientContainerOptions {
  /** SASL client limits, e.g. `{ minIterations: 10000 }`: the fewest SCRAM iterations accepted (default 4096). */
  saslClient?: SaslClientOptions;
}

/**
 * Registers the providers and drivers virtauth ships, and the relay's client end, into a container
 * (a new child of the root container by default). Register your own plugins in the same
 * container: tsyringe's resolveAll does not merge a child's registrations with its parent's.
 */
export function createClientContainer(
  c: DependencyContainer = rootContainer.createChildContainer(),
  opts: ClientContainerOptions = {},
): DependencyContainer {
  registerDefaultProviders(c, opts.saslClient ? { saslClient: opts.saslClient } : {});
  registerDefaultDrivers(c);
  c.registerInstance(RELAY_CLIENT, new RelayClient());
  return c;
}

function relayClientOf(c: DependencyContainer): RelayClient {
  if (c.isRegistered(RELAY_CLIENT, true)) return c.resolve(RELAY_CLIENT);
  const client = new RelayClient();
  c.registerInstance(RELAY_CLIENT, client);
  return client;
}

function sharedContainer(): DependencyContainer {
  return (defaultContainer ??= createClientContainer());
}

/**
 * Opens a connection. `auth` declares the credential types the caller can answer and the one
 * callback that answers all of them at once; null means no callback (as virConnectOpen).
 */
// The four-argument form last: it is what Parameters<typeof openAuth> describes.
export async function openAuth(uri: string, options: OpenAuthOptions): Promise<Connection>;
export async function openAuth(uri: string, auth: ConnectAuth | null, flags?: number, options?: OpenOptions): Promise<Connection>;
export async function openAuth(
  uri: string,
  authOrOptions: ConnectAuth | OpenAuthOptions | null,
  flagsArg = 0,
  optionsArg: OpenOptions = {},
): Promise<Connection> {
  const oneObject = authOrOptions !== null && !('callback' in authOrOptions);
  const auth = oneObject ? ((authOrOptions as OpenAuthOptions).auth ?? null) : (authOrOptions as ConnectAuth | null);
  const flags = oneObject ? ((authOrOptions as OpenAuthOptions).flags ?? 0) : flagsArg;
  const options: OpenOptions = oneObject ? (authOrOptions as OpenAuthOptions) : optionsArg;
  const parsed = parseUri(uri);
  const oidc = options.oidc ? oidcSessionFor(options.oidc) : null;
  const container = options.container ?? oidc?.container ?? sharedContainer();
  const driver = selectDriver(container.resolveAll(DRIVER), parsed);
  if (!driver) throw new VirError({ code: ErrorCode.NO_CONNECT, domain: ErrorDomain.NONE, detail: uri });
  const sources = options.credentialSources ?? (await defaultCredentialSources(container, parsed));
  const ctx: DriverOpenContext = {
    requestCredentials: makeCredentialRequester(sources, auth),
    auth,
    readOnly: (flags & OpenFlag.READ_ONLY) !== 0,
    processName: `virtauth@${hostname()}`,
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.extensions ? { extensions: options.extensions } : {}),
  };
  if (options.relay !== false) {
    ctx.relay = relayClientOf(container).forOpen({
      auth,
      sources,
      ...(options.relayPolicy ? { policy: options.relayPolicy } : {}),
      ...(options.personPresent !== undefined ? { personPresent: options.personPresent } : {}),
      ...(options.relayAudit ? { audit: options.relayAudit } : {}),
    });
  }
  return oidc ? oidc.session.explainRefusals(() => driver.open(parsed, ctx)) : driver.open(parsed, ctx);
}

export function open(uri: string, options: OpenOptions = {}): Promise<Connection> {
  return openAuth(uri, null, 0, options);
}

export function openReadOnly(uri: string, options: OpenOptions = {}): Promise<Connection> {
  return openAuth(uri, null, OpenFlag.READ_ONLY, options);
}
