// Plugins the operator names in virtauthd.conf (`plugins = [ "virtauth-plugin-x", "/opt/x.js" ]`):
// each module is imported once at start and registers into the daemon's container, as the shipped
// providers do. Only the config file names modules; nothing a client sends chooses one.

import { stat } from 'node:fs/promises';
import { dirname, isAbsolute, resolve as resolvePath } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { DependencyContainer } from 'tsyringe';
import {
  ErrorCode,
  ErrorDomain,
  VirError,
  type AuthProvider,
  type AuthType,
  type PluginSettings,
  type VirtauthPlugin,
} from '@virtauth/core';
import type { DaemonConfig } from './config.js';

// An npm package name, optionally with a path inside it (`@acme/virtauth-x/daemon`).
const PACKAGE_SPECIFIER = /^(@[a-z0-9][a-z0-9._-]*\/)?[a-z0-9][a-z0-9._-]*(\/[A-Za-z0-9._-]+)*$/;

function pluginError(config: DaemonConfig, detail: string): VirError {
  const line = config.source?.lines.get('plugins');
  const where = config.source ? `${config.source.file}${line !== undefined ? `:${line}` : ''}: ` : '';
  return new VirError({ code: ErrorCode.CONF_SYNTAX, domain: ErrorDomain.CONF, detail: `${where}plugins: ${detail}` });
}

/**
 * Where a plugin's module is: a path (absolute, or relative to the config file's directory), or a
 * package name resolved from the daemon's own installation, as Node resolves any import.
 */
function moduleFile(config: DaemonConfig, spec: string): string {
  if (isAbsolute(spec)) return spec;
  if (spec.startsWith('./') || spec.startsWith('../')) {
    if (!config.source)
      throw pluginError(config, `'${spec}' is relative, but there is no config file to be relative to; give an absolute path`);
    return resolvePath(dirname(config.source.file), spec);
  }
  if (!PACKAGE_SPECIFIER.test(spec)) throw pluginError(config, `'${spec}' is neither a package name nor a file path`);
  try {
    return fileURLToPath(import.meta.resolve(spec));
  } catch (e) {
    throw pluginError(
      config,
      `cannot find the package '${spec}' (${(e as Error).message.split('\n')[0]}); install it where virtauthd is installed, or give the module's path`,
    );
  }
}

async function loadPlugin(config: DaemonConfig, spec: string): Promise<VirtauthPlugin> {
  const file = moduleFile(config, spec);
  let info;
  try {
    info = await stat(file);
  } catch (e) {
    throw pluginError(config, `cannot read '${file}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (!info.isFile()) throw pluginError(config, `'${file}' is not a file`);
  // The daemon runs the module with its own rights: anyone able to change it could take them.
  if ((info.mode & 0o002) !== 0) throw pluginError(config, `'${file}' is writable by every user; refusing to load it (chmod o-w it)`);
  let module: Partial<VirtauthPlugin> & { default?: Partial<VirtauthPlugin> };
  try {
    module = (await import(pathToFileURL(file).href)) as typeof module;
  } catch (e) {
    throw pluginError(config, `cannot load '${spec}': ${(e as Error).message.split('\n')[0]}`);
  }
  const register = module.register ?? module.default?.register;
  if (typeof register !== 'function') throw pluginError(config, `'${spec}' exports no register(container, settings) function`);
  return { register };
}

/** Imports every plugin the config names, in order, and lets each register itself. */
export async function registerConfiguredPlugins(
  config: DaemonConfig,
  container: DependencyContainer,
  settings: PluginSettings,
): Promise<void> {
  for (const spec of config.plugins) {
    const plugin = await loadPlugin(config, spec);
    try {
      await plugin.register(container, settings);
    } catch (e) {
      // A plugin's own configuration error already names its key.
      if (e instanceof VirError) throw e;
      throw pluginError(config, `'${spec}' failed to register: ${(e as Error).message}`);
    }
  }
}

/** The auth config keys and the fields that hold them. */
const AUTH_KEYS = [
  ['auth_unix_rw', 'authUnixRw'],
  ['auth_unix_ro', 'authUnixRo'],
  ['auth_tcp', 'authTcp'],
  ['auth_tls', 'authTls'],
] as const;

export type AuthSchemeKey = (typeof AUTH_KEYS)[number][1];

/**
 * Maps the config's auth scheme names to remote_auth_type numbers through the registered
 * providers, refusing a name no provider registered and two providers that claim one name or type.
 */
export function authSchemeTypes(config: DaemonConfig, providers: readonly AuthProvider[]): Record<AuthSchemeKey, AuthType> {
  const byName = new Map<string, AuthProvider>();
  for (const p of providers) {
    const twin = byName.get(p.name) ?? providers.find((o) => o !== p && o.type === p.type);
    if (twin) {
      throw new VirError({
        code: ErrorCode.CONF_SYNTAX,
        domain: ErrorDomain.CONF,
        detail: `two auth providers are registered as '${twin.name}' (type ${twin.type}) and '${p.name}' (type ${p.type}); each needs its own name and type`,
      });
    }
    byName.set(p.name, p);
  }
  const out = {} as Record<AuthSchemeKey, AuthType>;
  for (const [key, field] of AUTH_KEYS) {
    const name = config[field];
    const provider = byName.get(name);
    if (!provider) {
      const line = config.source?.lines.get(key);
      const where = config.source ? `${config.source.file}${line !== undefined ? `:${line}` : ''}: ` : '';
      throw new VirError({
        code: ErrorCode.CONF_SYNTAX,
        domain: ErrorDomain.CONF,
        detail: `${where}${key}: unknown authentication scheme '${name}' (registered: ${[...byName.keys()].join(', ')}; a plugin's scheme needs the plugin in plugins)`,
      });
    }
    // A plugin's scheme has a type number of its own, outside libvirt's enumeration.
    out[field] = provider.type as AuthType;
  }
  return out;
}

/** A scheme's name for messages, e.g. `sasl` for 1. */
export function authSchemeName(providers: readonly AuthProvider[], type: number): string {
  return providers.find((p) => p.type === type)?.name ?? String(type);
}
