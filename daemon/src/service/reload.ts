// SIGHUP: re-reads the configuration and applies what can change without dropping a client —
// TLS credentials, the user database, the allow lists (users, DNs, URIs), logging, extensions'
// policies. Every part is checked before anything is applied, so a broken file leaves the running
// settings.

import type { Logger } from 'pino';
import type { ConfValue, UserDatabase } from '@virtauth/core';
import { FileUserDatabase, saslSettingsFrom } from '@virtauth/providers';
import { buildConfig, readConfigSettings, type DaemonConfig } from '../config.js';
import type { DaemonHandle } from '../daemon.js';
import type { DaemonLogging } from '../logging/daemon-logging.js';
import type { LogSettings } from '../logging/settings.js';
import { loadTlsMaterial, type TlsMaterial } from '../tls-material.js';

/** Keys whose new value a reload applies; a change to any other is reported as needing a restart. */
export const RELOADABLE_KEYS: readonly string[] = [
  'key_file',
  'cert_file',
  'ca_file',
  'crl_file',
  'tls_allowed_dn_list',
  'uri_allowed_list',
  'sasl_allowed_username_list',
  'sasl_user_db',
  'log_level',
  'log_filters',
  'log_outputs',
];

/** A configuration as loaded: the file's settings, and what they mean. */
export interface LoadedConfig {
  file: string | null;
  settings: Map<string, ConfValue>;
  config: DaemonConfig;
}

export function loadConfigFile(file: string | null): LoadedConfig {
  if (!file) return { file, settings: new Map<string, ConfValue>(), config: buildConfig(new Map()) };
  const { settings, lines } = readConfigSettings(file);
  return { file, settings, config: buildConfig(settings, file, lines) };
}

export interface ReloadTarget {
  daemon: DaemonHandle;
  logging: DaemonLogging | null;
  /** The logging settings a configuration asks for (main applies --verbose on top). */
  logSettingsOf(config: DaemonConfig): LogSettings;
  log: Logger;
}

export interface ReloadOutcome {
  loaded: LoadedConfig;
  /** Changed keys that apply only after a restart. */
  needRestart: string[];
}

function sameValue(a: ConfValue | undefined, b: ConfValue | undefined): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Reloads from `current.file`. Throws (having changed nothing) when the new configuration is
 * broken; the caller logs why and keeps serving with the current one.
 */
export async function reloadConfiguration(current: LoadedConfig, target: ReloadTarget): Promise<ReloadOutcome> {
  const { daemon } = target;
  const next = loadConfigFile(current.file);
  const sasl = saslSettingsFrom(next.config.extra);

  const servesTls = daemon.listeners.some((l) => l.kind === 'tls');
  const tls: TlsMaterial | undefined = servesTls ? await loadTlsMaterial(next.config) : undefined;

  const currentUsers = daemon.sasl.users;
  // sasl_user_db names the file database; one a plugin supplies (USER_DATABASE) stays in place.
  const fileDatabase = currentUsers === undefined || currentUsers instanceof FileUserDatabase;
  const sameDatabase = !fileDatabase || (currentUsers instanceof FileUserDatabase && currentUsers.path === sasl.userDatabasePath);
  const users: UserDatabase | undefined = sameDatabase
    ? currentUsers
    : new FileUserDatabase({ path: sasl.userDatabasePath, iterations: sasl.iterations });
  // Reading it now both checks it and makes the new contents the ones the next login sees.
  await users?.list();

  const commits: (() => void)[] = [];
  for (const extension of daemon.extensions) {
    const commit = await extension.prepareReload?.(next.config);
    if (commit) commits.push(commit);
  }

  // Logging last among the checks: opening its outputs is the one step that takes effect at
  // once, and it undoes itself when an output cannot be opened.
  target.logging?.reconfigure(target.logSettingsOf(next.config));
  daemon.server.applyLiveSettings({
    ...(tls ? { tls } : {}),
    tlsAllowedDnList: next.config.tlsAllowedDnList,
    uriAllowedList: next.config.uriAllowedList,
  });
  daemon.sasl.allowedUsernames = sasl.allowedUsernames;
  if (users) daemon.sasl.users = users;
  for (const commit of commits) commit();

  const reloadable = new Set([...RELOADABLE_KEYS, ...daemon.extensions.flatMap((e) => e.reloadableKeys ?? [])]);
  const keys = new Set([...current.settings.keys(), ...next.settings.keys()]);
  const needRestart = [...keys].filter((k) => !reloadable.has(k) && !sameValue(current.settings.get(k), next.settings.get(k))).sort();
  return { loaded: next, needRestart };
}
