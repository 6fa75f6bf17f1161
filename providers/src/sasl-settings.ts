// The SASL settings of a deployment, read from the daemon's config file. virtauthd and
// `virtauth passwd` both read them, so they agree on where the user database lives.

import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, ErrorDomain, VirError, parseConf, type ConfValue, type ConfigKeyDeclaration } from '@virtauth/core';
import { DEFAULT_SCRAM_ITERATIONS } from './sasl/scram.js';

export interface SaslSettings {
  userDatabasePath: string;
  /** Mechanisms offered, in order; null offers every registered one. */
  mechanisms: string[] | null;
  allowedUsernames: string[] | null;
  iterations: number;
  /** Fail unknown user names at the last step, like a wrong password, instead of at once (libvirt). */
  concealUnknownUsers: boolean;
  maxFailuresPerConnection: number;
  maxFailuresPerUser: number;
  failureWindowMs: number;
  failureDelayMs: number;
}

export function defaultUserDatabasePath(): string {
  if (process.getuid?.() === 0) return '/var/lib/virtauth/users.json';
  const config = process.env.XDG_CONFIG_HOME || join(homedir(), '.config');
  return join(config, 'virtauth', 'users.json');
}

function bad(key: string, why: string): VirError {
  return new VirError({ code: ErrorCode.CONF_SYNTAX, domain: ErrorDomain.CONF, detail: `${key}: ${why}` });
}

function asString(key: string, v: ConfValue | undefined, fallback: string): string {
  if (v === undefined) return fallback;
  if (typeof v !== 'string') throw bad(key, 'expected a "string"');
  return v;
}

function asList(key: string, v: ConfValue | undefined): string[] | null {
  if (v === undefined) return null;
  if (!Array.isArray(v)) throw bad(key, 'expected a [ "list", "of", "strings" ]');
  return v;
}

function asInt(key: string, v: ConfValue | undefined, fallback: number, min: number, max: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw bad(key, `expected an integer from ${min} to ${max}`);
  return v;
}

/** The config keys saslSettingsFrom reads (declared so the daemon knows them). */
export const SASL_CONFIG_KEYS: ConfigKeyDeclaration = {
  owner: 'sasl',
  keys: [
    'sasl_user_db',
    'sasl_mech_list',
    'sasl_allowed_username_list',
    'scram_iteration_count',
    'sasl_conceal_unknown_users',
    'sasl_max_failures_per_connection',
    'sasl_max_failures_per_user',
    'sasl_failure_window',
    'sasl_failure_delay_ms',
  ],
};

export function saslSettingsFrom(settings: ReadonlyMap<string, ConfValue>): SaslSettings {
  return {
    userDatabasePath: asString('sasl_user_db', settings.get('sasl_user_db'), defaultUserDatabasePath()),
    mechanisms: asList('sasl_mech_list', settings.get('sasl_mech_list')),
    allowedUsernames: asList('sasl_allowed_username_list', settings.get('sasl_allowed_username_list')),
    iterations: asInt('scram_iteration_count', settings.get('scram_iteration_count'), DEFAULT_SCRAM_ITERATIONS, 4096, 10_000_000),
    concealUnknownUsers: asInt('sasl_conceal_unknown_users', settings.get('sasl_conceal_unknown_users'), 0, 0, 1) === 1,
    maxFailuresPerConnection: asInt('sasl_max_failures_per_connection', settings.get('sasl_max_failures_per_connection'), 5, 1, 1000),
    maxFailuresPerUser: asInt('sasl_max_failures_per_user', settings.get('sasl_max_failures_per_user'), 10, 1, 100000),
    failureWindowMs: asInt('sasl_failure_window', settings.get('sasl_failure_window'), 60, 1, 86400) * 1000,
    failureDelayMs: asInt('sasl_failure_delay_ms', settings.get('sasl_failure_delay_ms'), 250, 0, 8000),
  };
}

/** Reads a config file's SASL settings; no file means the embedded defaults. */
export function loadSaslSettings(configFile: string | null): SaslSettings {
  if (!configFile) return saslSettingsFrom(new Map());
  let text: string;
  try {
    text = readFileSync(configFile, 'utf8');
  } catch (e) {
    throw new VirError({
      code: ErrorCode.CONF_SYNTAX,
      domain: ErrorDomain.CONF,
      detail: `cannot read configuration file ${configFile}: ${(e as Error).message}`,
    });
  }
  return saslSettingsFrom(parseConf(text, configFile));
}
