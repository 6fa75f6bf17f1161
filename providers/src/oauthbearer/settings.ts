// OAUTHBEARER's settings in a daemon's config file (libvirtd.conf syntax). The server keys say
// which tokens this daemon accepts; the `oauth_client_*` keys give the daemon's own remote
// drivers an OpenID client, for servers further down a chain that want tokens.

import { ErrorCode, ErrorDomain, VirError, globMatch, type ConfValue, type ConfigKeyDeclaration } from '@virtauth/core';
import type { OAuthBearerMechanismOptions } from './mechanism.js';
import type { OidcClientSettings, OidcGrant } from './token-client.js';
import type { BearerValidatorSettings, TokenValidationMode } from './validator.js';

export const OAUTH_SETTING_PREFIX = 'oauth_';

/** The config keys oauthBearerSettingsFrom reads. */
export const OAUTHBEARER_CONFIG_KEYS: ConfigKeyDeclaration = {
  owner: 'oauthbearer',
  keys: [
    'oauth_allow_insecure_http',
    'oauth_discovery_ttl',
    'oauth_issuer',
    'oauth_audience',
    'oauth_required_scope',
    'oauth_username_claim',
    'oauth_token_validation',
    'oauth_clock_skew',
    'oauth_introspection_client_id',
    'oauth_introspection_client_secret',
    'oauth_client_id',
    'oauth_client_issuer',
    'oauth_client_device_timeout',
    'oauth_client_secret',
    'oauth_client_grant',
    'oauth_client_scope',
    'oauth_client_resource',
    'oauth_client_hosts',
  ],
};

function bad(key: string, why: string): VirError {
  return new VirError({ code: ErrorCode.CONF_SYNTAX, domain: ErrorDomain.CONF, detail: `${key}: ${why}` });
}

function str(settings: ReadonlyMap<string, ConfValue>, key: string): string | undefined {
  const v = settings.get(key);
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || v === '') throw bad(key, 'expected a non-empty "string"');
  return v;
}

function int(settings: ReadonlyMap<string, ConfValue>, key: string, min: number, max: number): number | undefined {
  const v = settings.get(key);
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw bad(key, `expected an integer from ${min} to ${max}`);
  return v;
}

function oneOf<T extends string>(settings: ReadonlyMap<string, ConfValue>, key: string, allowed: readonly T[]): T | undefined {
  const v = str(settings, key);
  if (v === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(v)) throw bad(key, `expected one of ${allowed.join(', ')}`);
  return v as T;
}

function list(settings: ReadonlyMap<string, ConfValue>, key: string): string[] | undefined {
  const v = settings.get(key);
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) throw bad(key, 'expected a [ "list", "of", "strings" ]');
  return v;
}

/**
 * The mechanism's options from a config's settings; null when no `oauth_*` key is set (then
 * OAUTHBEARER is not registered at all).
 */
export function oauthBearerSettingsFrom(settings: ReadonlyMap<string, ConfValue>): OAuthBearerMechanismOptions | null {
  if (![...settings.keys()].some((k) => k.startsWith(OAUTH_SETTING_PREFIX))) return null;
  const allowInsecureHttp = (int(settings, 'oauth_allow_insecure_http', 0, 1) ?? 0) === 1;
  const discoveryTtl = int(settings, 'oauth_discovery_ttl', 0, 7 * 86400);
  const discoveryTtlMs = discoveryTtl !== undefined ? discoveryTtl * 1000 : undefined;
  const options: OAuthBearerMechanismOptions = {};

  const issuer = str(settings, 'oauth_issuer');
  const audience = str(settings, 'oauth_audience');
  if (issuer !== undefined || audience !== undefined) {
    if (issuer === undefined) throw bad('oauth_issuer', 'is required when oauth_audience is set');
    if (audience === undefined) throw bad('oauth_audience', 'is required when oauth_issuer is set');
    const introspectionClientId = str(settings, 'oauth_introspection_client_id');
    const introspectionClientSecret = str(settings, 'oauth_introspection_client_secret');
    if (introspectionClientSecret !== undefined && introspectionClientId === undefined)
      throw bad('oauth_introspection_client_secret', 'needs oauth_introspection_client_id');
    const server: BearerValidatorSettings = {
      issuer,
      audience,
      requiredScope: str(settings, 'oauth_required_scope') ?? null,
      usernameClaim: str(settings, 'oauth_username_claim') ?? 'sub',
      validation: oneOf<TokenValidationMode>(settings, 'oauth_token_validation', ['auto', 'jwt', 'introspection']) ?? 'auto',
      introspectionClientId,
      introspectionClientSecret,
      clockToleranceSec: int(settings, 'oauth_clock_skew', 0, 600) ?? 30,
      allowInsecureHttp,
      discoveryTtlMs,
    };
    options.server = server;
  }

  const clientId = str(settings, 'oauth_client_id');
  if (clientId !== undefined) {
    const clientIssuer = str(settings, 'oauth_client_issuer') ?? issuer;
    if (clientIssuer === undefined) throw bad('oauth_client_issuer', 'is required when oauth_client_id is set and oauth_issuer is not');
    const deviceTimeout = int(settings, 'oauth_client_device_timeout', 1, 3600);
    const client: OidcClientSettings = {
      issuer: clientIssuer,
      clientId,
      clientSecret: str(settings, 'oauth_client_secret'),
      grant: oneOf<OidcGrant>(settings, 'oauth_client_grant', ['client_credentials', 'device_code']),
      scope: str(settings, 'oauth_client_scope'),
      resource: str(settings, 'oauth_client_resource'),
      allowInsecureHttp,
      discoveryTtlMs,
      deviceFlowTimeoutMs: deviceTimeout !== undefined ? deviceTimeout * 1000 : undefined,
      // Tokens signed in for by one of this daemon's clients must never serve another client.
      cachePersonTokens: false,
    };
    const hosts = list(settings, 'oauth_client_hosts') ?? ['*'];
    options.client = { clientFor: (host) => (hosts.some((glob) => globMatch(glob, host.toLowerCase())) ? client : null) };
  } else {
    for (const key of [
      'oauth_client_secret',
      'oauth_client_grant',
      'oauth_client_scope',
      'oauth_client_resource',
      'oauth_client_hosts',
      'oauth_client_issuer',
    ]) {
      if (settings.has(key)) throw bad(key, 'needs oauth_client_id');
    }
  }
  if (!options.server && !options.client)
    throw bad('oauth_*', 'set oauth_issuer and oauth_audience (to accept tokens) or oauth_client_id (to send them)');
  return options;
}
