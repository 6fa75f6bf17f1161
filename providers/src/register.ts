// Registers the authentication providers and SASL mechanisms virtauth ships. Third-party
// providers and mechanisms register the same way, under the same tokens.

import {
  AUTH_PROVIDER,
  CONFIG_KEYS,
  ErrorCode,
  ErrorDomain,
  SASL_MECHANISM,
  USER_DATABASE,
  VirError,
  type PluginSettings,
  type UserDatabase,
} from '@virtauth/core';
import { instanceCachingFactory, type DependencyContainer } from 'tsyringe';
import { noneAuthProvider } from './none.js';
import { POLKIT_CONFIG_KEYS, PolkitAuthProvider, type PolkitServerOptions } from './polkit/index.js';
import { OAUTHBEARER_CONFIG_KEYS, oauthBearerSettingsFrom } from './oauthbearer/settings.js';
import { registerOAuthBearer } from './oauthbearer/register.js';
import { polkitSettingsFrom } from './polkit/settings.js';
import { SASL_CONFIG_KEYS, saslSettingsFrom } from './sasl-settings.js';
import { FileUserDatabase } from './userdb/file-user-database.js';
import { SaslAuthProvider, type SaslClientOptions, type SaslServerOptions } from './sasl-provider.js';
import { PlainMechanism } from './sasl/plain.js';
import { ScramSha256Mechanism } from './sasl/scram-sha-256.js';
import { ScramSha256PlusMechanism } from './sasl/scram-sha-256-plus.js';

export interface ProviderRegistrationOptions {
  saslClient?: SaslClientOptions;
  /**
   * Server half of SASL; without it the provider only authenticates clients (the client library).
   * Without `users` it uses the user database registered under USER_DATABASE.
   */
  saslServer?: Omit<SaslServerOptions, 'users'> & { users?: UserDatabase };
  /** PBKDF2 iterations the server announces for unknown users (match the user database's). */
  scramIterations?: number;
  /** Fail unknown SCRAM users at the last step like a wrong password (default: at once, as libvirtd). */
  concealUnknownUsers?: boolean;
  /** Actions and bus of polkit's server half (defaults: libvirt's action ids, the system bus). */
  polkitServer?: PolkitServerOptions;
}

export function registerDefaultProviders(container: DependencyContainer, opts: ProviderRegistrationOptions = {}): void {
  const unknownUserIterations = opts.scramIterations;
  const mechOpts = unknownUserIterations !== undefined ? { unknownUserIterations } : {};
  const scramOpts = { ...mechOpts, concealUnknownUsers: opts.concealUnknownUsers ?? false };
  container.register(SASL_MECHANISM, { useValue: new ScramSha256PlusMechanism(scramOpts) });
  container.register(SASL_MECHANISM, { useValue: new ScramSha256Mechanism(scramOpts) });
  container.register(SASL_MECHANISM, { useValue: new PlainMechanism(mechOpts) });
  container.register(AUTH_PROVIDER, { useValue: noneAuthProvider });
  container.register(AUTH_PROVIDER, {
    useFactory: instanceCachingFactory(
      (c) =>
        new SaslAuthProvider(
          () => c.resolveAll(SASL_MECHANISM),
          opts.saslClient ?? {},
          opts.saslServer ? withUserDatabase(opts.saslServer, c) : null,
        ),
    ),
  });
  container.register(AUTH_PROVIDER, { useFactory: instanceCachingFactory(() => new PolkitAuthProvider(opts.polkitServer)) });
}

/**
 * The SASL server's settings with their user database filled in. The same object, not a copy: the
 * provider reads it at each login, so a reload (SIGHUP) that changes it in place applies at once.
 */
function withUserDatabase(
  server: NonNullable<ProviderRegistrationOptions['saslServer']>,
  container: DependencyContainer,
): SaslServerOptions {
  server.users ??= userDatabaseOf(container);
  return server as SaslServerOptions;
}

/** The user database a SASL server checks: the last one registered, as tsyringe's resolve picks. */
function userDatabaseOf(container: DependencyContainer): UserDatabase {
  if (!container.isRegistered(USER_DATABASE, true)) {
    throw new VirError({
      code: ErrorCode.CONF_SYNTAX,
      domain: ErrorDomain.CONF,
      detail: 'the SASL server has no user database: register one under USER_DATABASE',
    });
  }
  return container.resolve(USER_DATABASE);
}

/**
 * The shipped providers as virtauthd loads them, the same way it loads a third party's plugin:
 * each reads its own settings (sasl_*, polkit_*, oauth_*) and declares the keys it reads. The
 * SCRAM users live in the file named by sasl_user_db unless a plugin registered another
 * USER_DATABASE (before or after this; the last registration wins).
 */
export function registerDaemonProviders(container: DependencyContainer, settings: PluginSettings): DaemonSaslServer {
  registerProviderConfigKeys(container);
  const sasl = saslSettingsFrom(settings);
  if (!container.isRegistered(USER_DATABASE, true)) {
    container.register(USER_DATABASE, {
      useFactory: instanceCachingFactory(() => new FileUserDatabase({ path: sasl.userDatabasePath, iterations: sasl.iterations })),
    });
  }
  const saslServer: DaemonSaslServer = {
    ...(sasl.mechanisms ? { mechanisms: sasl.mechanisms } : {}),
    allowedUsernames: sasl.allowedUsernames,
    maxFailuresPerConnection: sasl.maxFailuresPerConnection,
    maxFailuresPerUser: sasl.maxFailuresPerUser,
    failureWindowMs: sasl.failureWindowMs,
    failureDelayMs: sasl.failureDelayMs,
  };
  registerDefaultProviders(container, {
    scramIterations: sasl.iterations,
    concealUnknownUsers: sasl.concealUnknownUsers,
    saslServer,
    polkitServer: polkitSettingsFrom(settings),
  });
  // OAUTHBEARER only when the config has oauth_* keys.
  const oauthBearer = oauthBearerSettingsFrom(settings);
  if (oauthBearer) registerOAuthBearer(container, oauthBearer);
  return saslServer;
}

/** The SASL server's live settings (read at each login); `users` is filled when the server is built. */
export type DaemonSaslServer = NonNullable<ProviderRegistrationOptions['saslServer']>;

/** Declares the daemon config keys this package's providers read (sasl_*, polkit_*, oauth_*). */
export function registerProviderConfigKeys(container: DependencyContainer): void {
  for (const declaration of [SASL_CONFIG_KEYS, POLKIT_CONFIG_KEYS, OAUTHBEARER_CONFIG_KEYS])
    container.register(CONFIG_KEYS, { useValue: declaration });
}
