// The client configuration: which identity providers a person signs in with, for which servers.
// libvirt's config syntax (as libvirt.conf), one group of `oidc_<name>_*` keys per provider:
//
//     oidc_corp_issuer = "https://id.example.com"
//     oidc_corp_client_id = "virtauth-cli"
//     oidc_corp_scopes = "openid offline_access libvirt"
//     oidc_corp_resource = "https://virtauthd.example.com/libvirt"
//     oidc_corp_hosts = [ "*.example.com", "localhost" ]
//     oidc_corp_flow = "browser"
//
// Which file: --config, else $VIRTAUTH_CLIENT_CONFIG, else $XDG_CONFIG_HOME/virtauth/client.conf
// (~/.config when unset). The explicit two must exist; the default one may be absent. The
// VIRTAUTH_OIDC_* variables then override (or, without a file, define) the provider of their issuer.

import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ErrorCode, ErrorDomain, VirError, globMatch, parseConf, type ConfValue } from '@virtauth/core';
import { defaultTokenCacheDirectory } from '@virtauth/providers';

export type SignInFlow = 'browser' | 'device';

export interface IdentityProvider {
  /** The group name in the config file (`env` for one defined by variables only). */
  name: string;
  issuer: string;
  clientId: string;
  /** Space-separated scopes to ask for. */
  scopes?: string | undefined;
  /** The audience (RFC 8707 resource indicator) the servers expect. */
  resource?: string | undefined;
  /** Host globs of the servers this provider's tokens are for (a unix socket's host is `localhost`); default all. */
  hosts?: readonly string[] | undefined;
  /** How a person signs in (default browser, the authorization code flow with PKCE). */
  flow?: SignInFlow | undefined;
  /** Plain http to the issuer, for a loopback (test or development) issuer only. */
  allowInsecureHttp?: boolean | undefined;
  /** Fixed loopback port for the browser's redirect (for IdPs that do not allow any port). */
  redirectPort?: number | undefined;
}

export interface ClientConfig {
  /** The file read, or null when none was. */
  path: string | null;
  providers: IdentityProvider[];
  tokenCacheDir: string;
}

const PROVIDER_KEY = /^oidc_([a-z0-9][a-z0-9-]*)_(issuer|client_id|scopes|resource|audience|hosts|flow|allow_insecure_http|redirect_port)$/;
const FLOWS: readonly SignInFlow[] = ['browser', 'device'];

function bad(file: string, detail: string): VirError {
  return new VirError({ code: ErrorCode.CONF_SYNTAX, domain: ErrorDomain.CONF, detail: `${file}: ${detail}` });
}

function configHome(env: NodeJS.ProcessEnv): string {
  return env.XDG_CONFIG_HOME && path.isAbsolute(env.XDG_CONFIG_HOME) ? env.XDG_CONFIG_HOME : path.join(env.HOME || os.homedir(), '.config');
}

/** The file to read: given, else from the environment, else the default (may be absent). */
export function clientConfigPath(given: string | undefined, env: NodeJS.ProcessEnv = process.env): { path: string; explicit: boolean } {
  if (given) return { path: given, explicit: true };
  if (env.VIRTAUTH_CLIENT_CONFIG) return { path: env.VIRTAUTH_CLIENT_CONFIG, explicit: true };
  return { path: path.join(configHome(env), 'virtauth', 'client.conf'), explicit: false };
}

function text(file: string, key: string, v: ConfValue): string {
  if (typeof v !== 'string' || v === '') throw bad(file, `${key}: expected a non-empty "string"`);
  return v;
}

/** Parses the config text; `file` names it in errors. */
export function parseClientConfig(source: string, file: string, env: NodeJS.ProcessEnv = process.env): ClientConfig {
  const settings = parseConf(source, file);
  const byName = new Map<string, Partial<IdentityProvider> & { name: string }>();
  let tokenCacheDir: string | undefined;
  for (const [key, value] of settings) {
    if (key === 'token_cache_dir') {
      tokenCacheDir = text(file, key, value);
      if (!path.isAbsolute(tokenCacheDir)) throw bad(file, `${key}: expected an absolute path`);
      continue;
    }
    const match = PROVIDER_KEY.exec(key);
    if (!match)
      throw bad(
        file,
        `unknown key '${key}' (identity providers are oidc_<name>_issuer, _client_id, _scopes, _resource, _hosts, _flow, _allow_insecure_http, _redirect_port)`,
      );
    const [, name, field] = match as unknown as [string, string, string];
    const p = byName.get(name) ?? { name };
    byName.set(name, p);
    switch (field) {
      case 'issuer':
        p.issuer = text(file, key, value);
        break;
      case 'client_id':
        p.clientId = text(file, key, value);
        break;
      case 'scopes':
        p.scopes = text(file, key, value);
        break;
      case 'resource':
      case 'audience':
        if (p.resource !== undefined) throw bad(file, `oidc_${name}: give either _resource or _audience, not both`);
        p.resource = text(file, key, value);
        break;
      case 'hosts':
        if (!Array.isArray(value) || value.length === 0) throw bad(file, `${key}: expected a [ "list", "of", "host globs" ]`);
        p.hosts = value.map((h) => h.toLowerCase());
        break;
      case 'flow':
        if (!FLOWS.includes(value as SignInFlow)) throw bad(file, `${key}: expected "browser" or "device"`);
        p.flow = value as SignInFlow;
        break;
      case 'allow_insecure_http':
        if (value !== 0 && value !== 1) throw bad(file, `${key}: expected 0 or 1`);
        p.allowInsecureHttp = value === 1;
        break;
      case 'redirect_port':
        if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 65535)
          throw bad(file, `${key}: expected a port number`);
        p.redirectPort = value;
        break;
    }
  }
  const providers: IdentityProvider[] = [];
  for (const p of byName.values()) {
    if (p.issuer === undefined) throw bad(file, `oidc_${p.name}_issuer is missing`);
    if (p.clientId === undefined) throw bad(file, `oidc_${p.name}_client_id is missing`);
    providers.push(p as IdentityProvider);
  }
  return applyEnvironment(
    {
      path: file,
      providers,
      tokenCacheDir: env.VIRTAUTH_TOKEN_CACHE_DIR || tokenCacheDir || defaultTokenCacheDirectory(env, env.HOME || os.homedir()),
    },
    env,
  );
}

/**
 * VIRTAUTH_OIDC_ISSUER (with _CLIENT_ID, _SCOPES, _RESOURCE, _HOSTS comma-separated, _FLOW):
 * overrides the configured provider of that issuer, or adds one; either way it is tried first.
 */
function applyEnvironment(config: ClientConfig, env: NodeJS.ProcessEnv): ClientConfig {
  const issuer = env.VIRTAUTH_OIDC_ISSUER;
  const overrides = ['CLIENT_ID', 'SCOPES', 'RESOURCE', 'HOSTS', 'FLOW'].filter((k) => env[`VIRTAUTH_OIDC_${k}`]);
  if (!issuer) {
    if (overrides.length > 0) throw bad('environment', `VIRTAUTH_OIDC_${overrides[0]} is set without VIRTAUTH_OIDC_ISSUER`);
    return config;
  }
  const base = config.providers.find((p) => p.issuer === issuer);
  const clientId = env.VIRTAUTH_OIDC_CLIENT_ID || base?.clientId;
  if (!clientId)
    throw bad('environment', 'VIRTAUTH_OIDC_ISSUER names an issuer no configured provider has: set VIRTAUTH_OIDC_CLIENT_ID too');
  const flow = env.VIRTAUTH_OIDC_FLOW;
  if (flow !== undefined && flow !== '' && !FLOWS.includes(flow as SignInFlow))
    throw bad('environment', 'VIRTAUTH_OIDC_FLOW: expected browser or device');
  const merged: IdentityProvider = {
    ...(base ?? { name: 'env', allowInsecureHttp: false }),
    issuer,
    clientId,
    ...(env.VIRTAUTH_OIDC_SCOPES ? { scopes: env.VIRTAUTH_OIDC_SCOPES } : {}),
    ...(env.VIRTAUTH_OIDC_RESOURCE ? { resource: env.VIRTAUTH_OIDC_RESOURCE } : {}),
    ...(env.VIRTAUTH_OIDC_HOSTS
      ? {
          hosts: env.VIRTAUTH_OIDC_HOSTS.split(',')
            .map((h) => h.trim().toLowerCase())
            .filter((h) => h !== ''),
        }
      : {}),
    ...(flow ? { flow: flow as SignInFlow } : {}),
  };
  return { ...config, providers: [merged, ...config.providers.filter((p) => p !== base)] };
}

/** Reads the client config (see the top of this file); no file at the default place means no providers. */
export function loadClientConfig(given?: string, env: NodeJS.ProcessEnv = process.env): ClientConfig {
  const where = clientConfigPath(given, env);
  let source: string;
  try {
    source = readFileSync(where.path, 'utf8');
  } catch (e) {
    if (!where.explicit && (e as NodeJS.ErrnoException).code === 'ENOENT') {
      return { ...parseClientConfig('', where.path, env), path: null };
    }
    throw new VirError({
      code: ErrorCode.CONF_SYNTAX,
      domain: ErrorDomain.CONF,
      detail: `cannot read the client config ${where.path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    });
  }
  return parseClientConfig(source, where.path, env);
}

/** The provider for a server (by its auth.conf host: the URI's host, `localhost` for a unix socket). */
export function providerForHost(providers: readonly IdentityProvider[], host: string): IdentityProvider | null {
  const h = host.toLowerCase();
  return providers.find((p) => (p.hosts ?? ['*']).some((glob) => globMatch(glob, h))) ?? null;
}

/** The provider `login --issuer X` means: by issuer URL or by name; the only one when none is named. */
export function selectProvider(config: ClientConfig, issuer: string | undefined): IdentityProvider {
  const names = config.providers.map((p) => `${p.name} (${p.issuer})`).join(', ');
  if (config.providers.length === 0) {
    throw new VirError({
      code: ErrorCode.CONF_SYNTAX,
      domain: ErrorDomain.CONF,
      detail: `no identity provider is configured: add oidc_<name>_issuer and oidc_<name>_client_id to ${config.path ?? clientConfigPath(undefined).path}, or set VIRTAUTH_OIDC_ISSUER and VIRTAUTH_OIDC_CLIENT_ID`,
    });
  }
  if (issuer === undefined) {
    if (config.providers.length === 1) return config.providers[0]!;
    throw new VirError({
      code: ErrorCode.INVALID_ARG,
      domain: ErrorDomain.NONE,
      detail: `several identity providers are configured; choose one with --issuer: ${names}`,
    });
  }
  const chosen = config.providers.find((p) => p.issuer === issuer || p.name === issuer);
  if (!chosen)
    throw new VirError({
      code: ErrorCode.INVALID_ARG,
      domain: ErrorDomain.NONE,
      detail: `no identity provider '${issuer}' is configured; configured: ${names}`,
    });
  return chosen;
}
