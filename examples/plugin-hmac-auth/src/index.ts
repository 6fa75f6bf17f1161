// virtauth-plugin-hmac: what virtauthd calls when its config lists this package under `plugins`,
// and what an application calls to use the plugin from the virtauth client library.

import { AUTH_PROVIDER, CONFIG_KEYS, ErrorCode, ErrorDomain, SASL_MECHANISM, VirError, type PluginSettings } from '@virtauth/core';
import type { DependencyContainer } from 'tsyringe';
import { KeyStore } from './keys.js';
import { HmacSaslMechanism } from './mechanism.js';
import { hmacAuthProvider } from './scheme.js';

export { HMAC_AUTH_TYPE, HmacProc } from './scheme.js';
export { HMAC_MECHANISM } from './mechanism.js';

/** The daemon: reads `hmac_key_file` and registers the server and client halves of both. */
export function register(container: DependencyContainer, settings: PluginSettings): void {
  container.register(CONFIG_KEYS, { useValue: { owner: 'virtauth-plugin-hmac', keys: ['hmac_key_file'] } });
  const path = settings.get('hmac_key_file');
  if (typeof path !== 'string' || path === '') {
    throw new VirError({
      code: ErrorCode.CONF_SYNTAX,
      domain: ErrorDomain.CONF,
      detail: 'hmac_key_file: is required by virtauth-plugin-hmac (a "path" to the JSON file of shared keys)',
    });
  }
  const keys = KeyStore.load(path);
  container.register(AUTH_PROVIDER, { useValue: hmacAuthProvider(keys) });
  container.register(SASL_MECHANISM, { useValue: new HmacSaslMechanism(keys) });
}

/** A client application: the client halves, in the container it passes to openAuth. */
export function registerClient(container: DependencyContainer): void {
  container.register(AUTH_PROVIDER, { useValue: hmacAuthProvider(null) });
  container.register(SASL_MECHANISM, { useValue: new HmacSaslMechanism(null) });
}
