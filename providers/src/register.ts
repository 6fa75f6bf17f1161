// Registers the authentication providers and SASL mechanisms virtauth ships. Third-party
// providers and mechanisms register the same way, under the same tokens.

import { AUTH_PROVIDER, CONFIG_KEYS, SASL_MECHANISM } from '@virtauth/core';
import { instanceCachingFactory, type DependencyContainer } from 'tsyringe';
import { noneAuthProvider } from './none.js';
import { POLKIT_CONFIG_KEYS, PolkitAuthProvider, type PolkitServerOptions } from './polkit/index.js';
import { OAUTHBEARER_CONFIG_KEYS } from './oauthbearer/settings.js';
import { SASL_CONFIG_KEYS } from './sasl-settings.js';
import { SaslAuthProvider, type SaslClientOptions, type SaslServerOptions } from './sasl-provider.js';
import { PlainMechanism } from './sasl/plain.js';
import { ScramSha256Mechanism } from './sasl/scram-sha-256.js';
import { ScramSha256PlusMechanism } from './sasl/scram-sha-256-plus.js';

export interface ProviderRegistrationOptions {
  saslClient?: SaslClientOptions;
  /** Server half of SASL; without it the provider only authenticates clients (the client library). */
  saslServer?: SaslServerOptions;
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
      (c) => new SaslAuthProvider(() => c.resolveAll(SASL_MECHANISM), opts.saslClient ?? {}, opts.saslServer ?? null),
    ),
  });
  container.register(AUTH_PROVIDER, { useFactory: instanceCachingFactory(() => new PolkitAuthProvider(opts.polkitServer)) });
}

/** Declares the daemon config keys this package's providers read (sasl_*, polkit_*, oauth_*). */
export function registerProviderConfigKeys(container: DependencyContainer): void {
  for (const declaration of [SASL_CONFIG_KEYS, POLKIT_CONFIG_KEYS, OAUTHBEARER_CONFIG_KEYS]) container.register(CONFIG_KEYS, { useValue: declaration });
}
