// The `cedar` access driver: libvirt's permissions decided by a policy in the Cedar language
// (access_cedar_policy_file), evaluated by @cedar-policy/cedar-wasm with the policy set parsed
// once per (re)load. Decisions are cached per connection, action and object until the next reload.

import { readFile } from 'node:fs/promises';
import type * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import {
  ErrorCode,
  ErrorDomain,
  VirError,
  identityGroups,
  shortAttributes,
  type AccessDriver,
  type AccessDriverFactory,
  type AccessLogger,
  type AccessObject,
  type AccessRequest,
  type AccessSubject,
  type ClientIdentity,
} from '@virtauth/core';

/** Cedar entity types of libvirt's object types. */
export const CEDAR_ENTITY_TYPES: Readonly<Record<string, string>> = {
  connect: 'Connect',
  domain: 'Domain',
  interface: 'Interface',
  network: 'Network',
  network_port: 'NetworkPort',
  node_device: 'NodeDevice',
  nwfilter: 'NWFilter',
  nwfilter_binding: 'NWFilterBinding',
  secret: 'Secret',
  storage_pool: 'StoragePool',
  storage_vol: 'StorageVol',
};

/** More distinct decisions than this on one connection start its cache afresh (a client walking many objects). */
const MAX_CACHED_DECISIONS = 4096;

let instances = 0;

type CedarWasm = typeof import('@cedar-policy/cedar-wasm/nodejs');
let wasm: Promise<CedarWasm> | null = null;

/** The Cedar engine, compiled on first use: programs that never configure cedar do not pay for it. */
function loadCedar(): Promise<CedarWasm> {
  return (wasm ??= import('@cedar-policy/cedar-wasm/nodejs'));
}

/** The principal's name: the SASL user (or OIDC user-name claim), else the unix user; "" when unknown. */
export function principalName(identity: ClientIdentity): string {
  return identity.username ?? identity.unix?.userName ?? '';
}

export interface CedarAccessDriverOptions {
  policyFile: string;
  log: AccessLogger;
}

export class CedarAccessDriver implements AccessDriver {
  readonly name = 'cedar';
  /** The preparsed policy set's name in cedar-wasm; a failed preparse leaves the previous one. */
  private readonly policySetId = `virtauth-cedar-${++instances}`;
  private decisions = new WeakMap<AccessSubject, Map<string, boolean>>();
  private loaded = false;

  private constructor(
    private readonly opts: CedarAccessDriverOptions,
    private readonly cedar: CedarWasm,
  ) {}

  /** Loads the policy; at start a policy that cannot be read or parsed is a configuration error. */
  static async create(opts: CedarAccessDriverOptions): Promise<CedarAccessDriver> {
    const driver = new CedarAccessDriver(opts, await loadCedar());
    const failure = await driver.load();
    if (failure)
      throw new VirError({
        code: ErrorCode.CONF_SYNTAX,
        domain: ErrorDomain.CONF,
        detail: `access_cedar_policy_file ${opts.policyFile}: ${failure}`,
      });
    return driver;
  }

  /** Reads and parses the policy file; returns why it failed, or null once it is in force. */
  private async load(): Promise<string | null> {
    let text: string;
    try {
      text = await readFile(this.opts.policyFile, 'utf8');
    } catch (e) {
      return `cannot read it: ${(e as Error).message}`;
    }
    const answer = this.cedar.preparsePolicySet(this.policySetId, { staticPolicies: text });
    if (answer.type === 'failure') return answer.errors.map((e) => describeCedarError(e, text)).join('; ');
    this.loaded = true;
    this.decisions = new WeakMap();
    return null;
  }

  async reload(): Promise<void> {
    const failure = await this.load();
    if (failure) {
      this.opts.log.error(
        { event: 'access.cedar.reload_failed', file: this.opts.policyFile, reason: failure },
        'the new Cedar policy was not loaded; the previous one stays in force',
      );
      return;
    }
    this.opts.log.info({ event: 'access.cedar.reloaded', file: this.opts.policyFile }, 'Cedar policy reloaded');
  }

  check(request: AccessRequest): boolean {
    if (!this.loaded) return false;
    const { subject, object, permission } = request;
    let cache = this.decisions.get(subject);
    if (!cache) {
      cache = new Map();
      this.decisions.set(subject, cache);
    }
    const key = `${permission}\0${object.type}\0${object.id}\0${Object.values(object.attributes).join('\0')}`;
    const cached = cache.get(key);
    if (cached !== undefined) return cached;
    const allowed = this.decide(subject, object, permission);
    if (cache.size >= MAX_CACHED_DECISIONS) cache.clear();
    cache.set(key, allowed);
    return allowed;
  }

  /** One evaluation against the preparsed policy set, without the cache. */
  decide(subject: AccessSubject, object: AccessObject, permission: string): boolean {
    const answer = this.cedar.statefulIsAuthorized(cedarRequest(this.policySetId, subject, object, permission));
    if (answer.type === 'failure') throw new Error(`Cedar evaluation failed: ${answer.errors.map((e) => e.message).join('; ')}`);
    return answer.response.decision === 'allow';
  }
}

/** The Cedar request for one decision: principal, action, resource, context and the entities they need. */
export function cedarRequest(
  policySetId: string,
  subject: AccessSubject,
  object: AccessObject,
  permission: string,
): cedar.StatefulAuthorizationCall {
  const identity = subject.identity;
  const groups = identityGroups(identity);
  const principal = { type: 'User', id: principalName(identity) };
  const connect = { type: 'Connect', id: subject.connectDriver };
  const resourceType = CEDAR_ENTITY_TYPES[object.type] ?? object.type;
  const resource = object.type === 'connect' ? connect : { type: resourceType, id: object.id };
  const entities: cedar.EntityJson[] = [
    { uid: principal, attrs: {}, parents: groups.map((g) => ({ type: 'Group', id: g })) },
    ...groups.map((g) => ({ uid: { type: 'Group', id: g }, attrs: {}, parents: [] })),
    { uid: connect, attrs: { connect_driver: subject.connectDriver }, parents: [] },
  ];
  if (object.type !== 'connect') entities.push({ uid: resource, attrs: shortAttributes(object), parents: [connect] });
  return {
    principal,
    action: { type: 'Action', id: `${object.type}.${permission}` },
    resource,
    context: {
      auth_method: identity.method ?? 'none',
      transport: subject.transport,
      read_only: subject.readOnly,
      // The daemons the connection came through (gateway, relay), nearest the client first.
      hops: (identity.hops ?? []).map((h) => h.daemon),
    },
    preparsedPolicySetId: policySetId,
    entities,
  };
}

function describeCedarError(e: cedar.DetailedError, text: string): string {
  const at = e.sourceLocations?.[0];
  if (!at) return e.message;
  const before = text.slice(0, at.start);
  const line = before.split('\n').length;
  const column = at.start - before.lastIndexOf('\n');
  return `${e.message} at line ${line}, column ${column}${at.label ? ` (${at.label})` : ''}`;
}

export const cedarAccessDriverFactory: AccessDriverFactory = {
  name: 'cedar',
  async create(settings, log) {
    const file = settings.get('access_cedar_policy_file');
    if (typeof file !== 'string' || file === '') {
      throw new VirError({
        code: ErrorCode.CONF_SYNTAX,
        domain: ErrorDomain.CONF,
        detail: 'access_drivers lists "cedar": set access_cedar_policy_file = "PATH" to its policy file',
      });
    }
    return CedarAccessDriver.create({ policyFile: file, log });
  },
};
