// The polkit settings of virtauthd's config: which action each unix socket's clients need.

import { ErrorCode, ErrorDomain, VirError, type ConfValue, type ConfigKeyDeclaration } from '@virtauth/core';

/** libvirt's action ids, so rules written for libvirtd apply to virtauthd unchanged. */
export const DEFAULT_POLKIT_ACTION_RW = 'org.libvirt.unix.manage';
export const DEFAULT_POLKIT_ACTION_RO = 'org.libvirt.unix.monitor';

export interface PolkitSettings {
  /** Action checked for clients of the read-write socket. */
  actionRw: string;
  /** Action checked for clients of the read-only socket. */
  actionRo: string;
}

// polkit accepts lower-case ASCII letters, digits, '.' and '-' in action ids.
const ACTION_ID = /^[a-z0-9][a-z0-9.-]*$/;

function actionSetting(key: string, v: ConfValue | undefined, fallback: string): string {
  if (v === undefined) return fallback;
  if (typeof v !== 'string')
    throw new VirError({ code: ErrorCode.CONF_SYNTAX, domain: ErrorDomain.CONF, detail: `${key}: expected a "string"` });
  if (!ACTION_ID.test(v)) {
    throw new VirError({
      code: ErrorCode.CONF_SYNTAX,
      domain: ErrorDomain.CONF,
      detail: `${key}: '${v}' is not a polkit action id (lower-case letters, digits, '.' and '-', e.g. "org.libvirt.unix.manage")`,
    });
  }
  return v;
}

/** The config keys polkitSettingsFrom reads. */
export const POLKIT_CONFIG_KEYS: ConfigKeyDeclaration = { owner: 'polkit', keys: ['polkit_action_rw', 'polkit_action_ro'] };

export function polkitSettingsFrom(settings: ReadonlyMap<string, ConfValue>): PolkitSettings {
  return {
    actionRw: actionSetting('polkit_action_rw', settings.get('polkit_action_rw'), DEFAULT_POLKIT_ACTION_RW),
    actionRo: actionSetting('polkit_action_ro', settings.get('polkit_action_ro'), DEFAULT_POLKIT_ACTION_RO),
  };
}
