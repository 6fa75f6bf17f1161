// Which config keys virtauthd knows, so a typo (`auth_unixrw`) stops the daemon instead of
// silently leaving a setting at its default. Keys are known when the daemon itself reads them, when
// a plugin declared them (CONFIG_KEYS), or — with a warning that they do nothing here — when they
// are libvirtd's.

import { closest } from 'fastest-levenshtein';
import type { Logger } from 'pino';
import { ErrorCode, ErrorDomain, VirError, type ConfigKeyDeclaration } from '@virtauth/core';
import type { DaemonConfig } from './config.js';

/** The keys of libvirt 9.0's libvirtd.conf (the names only). */
export const LIBVIRTD_CONFIG_KEYS: ReadonlySet<string> = new Set([
  'access_drivers',
  'admin_keepalive_count',
  'admin_keepalive_interval',
  'admin_keepalive_required',
  'admin_max_client_requests',
  'admin_max_clients',
  'admin_max_queued_clients',
  'admin_max_workers',
  'admin_min_workers',
  'audit_level',
  'audit_logging',
  'auth_tcp',
  'auth_tls',
  'auth_unix_ro',
  'auth_unix_rw',
  'ca_file',
  'cert_file',
  'crl_file',
  'host_uuid',
  'host_uuid_source',
  'keepalive_count',
  'keepalive_interval',
  'keepalive_required',
  'key_file',
  'listen_addr',
  'listen_tcp',
  'listen_tls',
  'log_filters',
  'log_level',
  'log_outputs',
  'max_anonymous_clients',
  'max_client_requests',
  'max_clients',
  'max_queued_clients',
  'max_workers',
  'min_workers',
  'ovs_timeout',
  'prio_workers',
  'sasl_allowed_username_list',
  'tcp_min_ssf',
  'tcp_port',
  'tls_allowed_dn_list',
  'tls_no_sanity_certificate',
  'tls_no_verify_certificate',
  'tls_port',
  'tls_priority',
  'unix_sock_admin_perms',
  'unix_sock_dir',
  'unix_sock_group',
  'unix_sock_ro_perms',
  'unix_sock_rw_perms',
]);

/**
 * Where each setting was found, for messages; kept beside the settings by loadConfig. A config
 * built in code has none, and its messages name only the key.
 */
export interface ConfigSource {
  file: string;
  lines: ReadonlyMap<string, number>;
}

/**
 * Checks the keys the daemon did not read itself (config.extra) against the plugins' declarations
 * and libvirtd's keys: libvirtd's are named in one warning, any other stops the daemon with the
 * line and the nearest known key.
 */
export function checkConfigKeys(
  config: DaemonConfig,
  declarations: readonly ConfigKeyDeclaration[],
  ownKeys: readonly string[],
  log: Logger,
): void {
  const declared = new Set(declarations.flatMap((d) => d.keys));
  const unused: string[] = [];
  for (const key of config.extra.keys()) {
    if (declared.has(key)) continue;
    if (LIBVIRTD_CONFIG_KEYS.has(key)) {
      unused.push(key);
      continue;
    }
    const known = [...new Set([...ownKeys, ...declared, ...LIBVIRTD_CONFIG_KEYS])];
    const line = config.source?.lines.get(key);
    const where = config.source ? `${config.source.file}${line !== undefined ? `:${line}` : ''}: ` : '';
    throw new VirError({
      code: ErrorCode.CONF_SYNTAX,
      domain: ErrorDomain.CONF,
      detail: `${where}unknown setting '${key}' (did you mean '${closest(key, known)}'?)`,
    });
  }
  if (unused.length > 0) {
    log.warn(
      { event: 'config.unused', keys: unused },
      `libvirtd settings that virtauthd does not use (they have no effect): ${unused.join(', ')}`,
    );
  }
}
