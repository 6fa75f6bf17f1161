// The client's relay policy as a JSON file (`virtauth --relay-policy FILE`): the same shape as
// openAuth's `relayPolicy`, with credential types by name. A malformed file is refused whole,
// naming the field, so a typo never leaves stored credentials open to every daemon. Without a
// file, no stored credential answers a relayed request.

import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { CredentialType, ErrorCode, ErrorDomain, VirError } from '@virtauth/core';
import type { ClientRelayAuditRecord } from './relay-client.js';
import type { OriginRate, RelayPolicy, RelayPolicyRule, StoredCredentialGrant, TrustedDaemon } from './policy.js';

type Json = unknown;

class PolicyFileError extends Error {}

function fail(where: string, why: string): never {
  throw new PolicyFileError(`${where}: ${why}`);
}

function object(v: Json, where: string, keys: readonly string[]): Record<string, Json> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(where, 'expected an object');
  const unknown = Object.keys(v).filter((k) => !keys.includes(k));
  if (unknown.length > 0) fail(where, `unknown key '${unknown[0]}' (known: ${keys.join(', ')})`);
  return v as Record<string, Json>;
}

function text(v: Json, where: string): string {
  if (typeof v !== 'string' || v === '') fail(where, 'expected a non-empty string');
  return v;
}

function positive(v: Json, where: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) fail(where, 'expected a positive integer');
  return v;
}

function list(v: Json, where: string): Json[] {
  if (!Array.isArray(v)) fail(where, 'expected a list');
  return v;
}

const optional = <T>(o: Record<string, Json>, key: string, read: (v: Json, where: string) => T, where: string): { [k: string]: T } =>
  o[key] === undefined ? {} : { [key]: read(o[key], `${where}.${key}`) };

function credentialType(v: Json, where: string): CredentialType {
  const type = typeof v === 'string' ? (CredentialType as Record<string, CredentialType>)[v] : undefined;
  if (type === undefined) fail(where, `expected a credential type name (${Object.keys(CredentialType).join(', ')})`);
  return type;
}

function rule(v: Json, where: string): RelayPolicyRule {
  const o = object(v, where, ['driver', 'host', 'daemon', 'types', 'action']);
  if (o.action !== 'allow' && o.action !== 'deny') fail(`${where}.action`, "expected 'allow' or 'deny'");
  return {
    ...optional(o, 'driver', text, where),
    ...optional(o, 'host', text, where),
    ...optional(o, 'daemon', text, where),
    ...(o.types !== undefined ? { types: list(o.types, `${where}.types`).map((t, i) => credentialType(t, `${where}.types[${i}]`)) } : {}),
    action: o.action,
  };
}

function trustedDaemon(v: Json, where: string): TrustedDaemon {
  const kind = (v as { transport?: unknown } | null)?.transport;
  if (kind === 'unix') {
    const o = object(v, where, ['transport', 'socket']);
    return { transport: 'unix', socket: text(o.socket, `${where}.socket`) };
  }
  if (kind === 'tls') {
    const o = object(v, where, ['transport', 'host', 'port', 'fingerprint256']);
    return {
      transport: 'tls',
      host: text(o.host, `${where}.host`),
      ...optional(o, 'port', positive, where),
      ...optional(o, 'fingerprint256', text, where),
    };
  }
  if (kind === 'ssh') {
    const o = object(v, where, ['transport', 'host', 'port', 'hostKey']);
    return {
      transport: 'ssh',
      host: text(o.host, `${where}.host`),
      ...optional(o, 'port', positive, where),
      hostKey: text(o.hostKey, `${where}.hostKey`),
    };
  }
  fail(`${where}.transport`, "expected 'unix', 'tls' or 'ssh'");
}

function grant(v: Json, where: string): StoredCredentialGrant {
  const o = object(v, where, ['daemon', 'service', 'host']);
  const host = text(o.host, `${where}.host`);
  if (host.toLowerCase() === 'default') fail(`${where}.host`, '-default entries never answer relayed requests: name the exact host');
  return { daemon: trustedDaemon(o.daemon, `${where}.daemon`), service: text(o.service, `${where}.service`), host };
}

function rate(v: Json, where: string): OriginRate {
  const o = object(v, where, ['maxRequests', 'windowMs']);
  return { maxRequests: positive(o.maxRequests, `${where}.maxRequests`), windowMs: positive(o.windowMs, `${where}.windowMs`) };
}

/** Parses a relay policy file's text; any mistake is VirError CONF_SYNTAX naming the field. */
export function parseRelayPolicy(source: string, file: string): RelayPolicy {
  try {
    const o = object(JSON.parse(source) as Json, 'policy', ['rules', 'maxRequestsPerOpen', 'timeoutMs', 'storedCredentials', 'perOrigin']);
    return {
      ...(o.rules !== undefined ? { rules: list(o.rules, 'rules').map((r, i) => rule(r, `rules[${i}]`)) } : {}),
      ...optional(o, 'maxRequestsPerOpen', positive, 'policy'),
      ...optional(o, 'timeoutMs', positive, 'policy'),
      ...(o.storedCredentials !== undefined
        ? { storedCredentials: list(o.storedCredentials, 'storedCredentials').map((g, i) => grant(g, `storedCredentials[${i}]`)) }
        : {}),
      ...(o.perOrigin !== undefined ? { perOrigin: rate(o.perOrigin, 'perOrigin') } : {}),
    };
  } catch (e) {
    if (!(e instanceof PolicyFileError || e instanceof SyntaxError)) throw e;
    throw new VirError({ code: ErrorCode.CONF_SYNTAX, domain: ErrorDomain.CONF, detail: `relay policy '${file}': ${e.message}` });
  }
}

/** Reads and parses a relay policy file. */
export function loadRelayPolicy(file: string): RelayPolicy {
  let source: string;
  try {
    source = readFileSync(file, 'utf8');
  } catch (e) {
    throw new VirError({
      code: ErrorCode.CONF_SYNTAX,
      domain: ErrorDomain.CONF,
      detail: `cannot read relay policy '${file}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    });
  }
  return parseRelayPolicy(source, file);
}

/** `--relay-policy FILE`, else $VIRTAUTH_RELAY_POLICY, else the user's file when it exists. */
export function relayPolicyPath(option: string | undefined, env: NodeJS.ProcessEnv = process.env): string | null {
  if (option) return option;
  if (env.VIRTAUTH_RELAY_POLICY) return env.VIRTAUTH_RELAY_POLICY;
  const userFile = join(env.XDG_CONFIG_HOME || join(env.HOME || homedir(), '.config'), 'virtauth', 'relay-policy.json');
  return existsSync(userFile) ? userFile : null;
}

export function clientRelayPolicy(option: string | undefined): RelayPolicy | null {
  const file = relayPolicyPath(option);
  return file === null ? null : loadRelayPolicy(file);
}

/** A refused request is worth a line on stderr: a daemon asked for something it may not have. */
export function reportRefusedRelayRequest(record: ClientRelayAuditRecord, write: (line: string) => void): void {
  if (record.outcome !== 'DENIED') return;
  write(
    `virtauth: refused a credential request (${record.credentialTypes.join(', ')}) relayed by ${record.daemon}: ${record.message ?? 'denied'}\n`,
  );
}
