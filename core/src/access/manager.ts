// The access manager: the one place a call, a list result or an event is checked against
// libvirt's permission model, whoever serves it (the daemon's own dispatch, or a gateway that
// forwards the call's bytes and decodes only its object and flags). Every configured driver must
// allow; with none configured only the read-only rule applies, as in libvirt.

import type { AccessAuditRecord, AccessDriver, AccessLogger, AccessObject, AccessRequest, AccessSubject } from '../contracts/access.js';
import { ErrorCode, ErrorDomain, VirError } from '../errors.js';
import { aclObject, applicableAclRules, readOnlyDenied, type AclRule, type ProcedureInfo } from '../protocol/procedures.js';
import { formatUuid, parseUuid } from '../uuid.js';
import { connectObject, describeObject, namedInXml, objectName } from './objects.js';

/** libvirt's answer to a denied call: code 88, domain 55, "access denied", no reason given. */
export function accessDenied(): VirError {
  return new VirError({ code: ErrorCode.ACCESS_DENIED, domain: ErrorDomain.ACCESS });
}

/** libvirt's answer when a driver could not decide (an error, not a refusal): it names only the driver. */
function driverFailedDenial(driver: string): VirError {
  return new VirError({ code: ErrorCode.ACCESS_DENIED, domain: ErrorDomain.ACCESS, detail: `'${driver}' denied access` });
}

/** Which driver refused, and whether it refused by failing to decide. */
interface Denial {
  driver: string;
  failed: boolean;
}

/**
 * Finds the object a client's wire structure names as the hypervisor knows it: clients name a
 * domain by name and UUID, drivers find it by UUID, so a name a client made up must never be what
 * a rule sees. Returns the authoritative structure (or throws the driver's "no such" error).
 */
export type ObjectResolver = (type: string, ref: unknown) => Promise<unknown>;

export type AccessAuditMode = 'denied' | 'all';

export interface AccessManagerOptions {
  log: AccessLogger;
  /** Receives every denial, and with `auditMode: 'all'` every allowed write. */
  audit?: (record: AccessAuditRecord) => void;
  auditMode?: AccessAuditMode;
}

/** A call's arguments, or a function that decodes as much of them as a check needs. */
export type CallArguments = unknown | (() => unknown);

export class AccessManager {
  private readonly auditMode: AccessAuditMode;

  constructor(
    readonly drivers: readonly AccessDriver[],
    private readonly opts: AccessManagerOptions,
  ) {
    this.auditMode = opts.auditMode ?? 'denied';
  }

  /** Whether any access driver is configured (without one, only read-only is enforced). */
  get enabled(): boolean {
    return this.drivers.length > 0;
  }

  /**
   * Checks a call before it runs or is forwarded: the read-only rule, then each `@acl` rule that
   * applies to the call's flags, on the connection or on the object its arguments name. Rules on
   * an object the reply carries (lookups) are checked by `checkResult`; for a define or create
   * from XML the object the document describes is checked here, before anything is made.
   * Denial is libvirt's error, thrown at once when the decision is synchronous (a cached one),
   * else the returned promise rejects with it; `undefined` means allowed without waiting.
   */
  checkCall(info: ProcedureInfo, args: CallArguments, subject: AccessSubject, resolve: ObjectResolver | null): Promise<void> | undefined {
    if (info.readOnlyDenied && subject.readOnly) {
      this.audit('access.denied', subject, info.name, connectObject(subject.connectDriver), info.acl[0]?.permission ?? 'write', 'readonly');
      throw readOnlyDenied(info);
    }
    if (!this.enabled || info.acl.length === 0) return undefined;
    const decoded = typeof args === 'function' ? (args as () => unknown)() : args;
    const rules = info.acl.length === 1 && !info.acl[0]!.flags && !info.acl[0]!.param ? info.acl : applicableAclRules(info, decoded);
    const objectRule = rules.find((r) => r.object !== 'connect');
    // The object named by the arguments is found first (asynchronously, in the driver); the rest
    // stays synchronous while the drivers answer synchronously, which keeps a cached decision cheap.
    if (objectRule && info.object?.in === 'args') {
      const ref = aclObject(info, decoded);
      if (ref === null || typeof ref !== 'object' || !resolve)
        return this.checkRules(info, rules, subject, describeObject(objectRule.object, ref, subject.connectDriver));
      return resolve(objectRule.object, ref).then((actual) =>
        this.checkRules(info, rules, subject, describeObject(objectRule.object, actual, subject.connectDriver)),
      );
    }
    // A define or create from XML: checked on the object the document describes.
    const described = objectRule && info.readOnlyDenied ? this.objectFromXml(objectRule.object, decoded, subject) : null;
    return this.checkRules(info, rules, subject, described);
  }

  /** Checks `rules` in order; object rules of a lookup wait for what it found (`found`). */
  private checkRules(
    info: ProcedureInfo,
    rules: readonly AclRule[],
    subject: AccessSubject,
    object: AccessObject | null,
    found = false,
  ): Promise<void> | undefined {
    for (let i = 0; i < rules.length; i++) {
      const rule = rules[i]!;
      let target: AccessObject | null;
      if (rule.object === 'connect') target = connectObject(subject.connectDriver);
      else if (!found && info.object?.in === 'ret' && !info.readOnlyDenied)
        continue; // a lookup: checked against what it finds
      else target = object;
      const pending = this.require(subject, info, target, rule);
      if (pending) return pending.then(() => this.checkRules(info, rules.slice(i + 1), subject, object, found));
    }
    return undefined;
  }

  /** Checks the object a lookup (or define) returned: libvirt checks lookups against what they found. */
  checkResult(info: ProcedureInfo, args: unknown, ret: unknown, subject: AccessSubject): Promise<void> | undefined {
    if (!this.enabled || info.object?.in !== 'ret' || info.readOnlyDenied) return undefined;
    const found = aclObject(info, args, ret);
    const rules = applicableAclRules(info, args).filter((r) => r.object !== 'connect');
    const object = rules[0] ? describeObject(rules[0].object, found, subject.connectDriver) : null;
    return this.checkRules(info, rules, subject, object, true);
  }

  /**
   * The items of a list reply this client may see under the procedure's `@aclfilter` rules (e.g.
   * `domain:getattr` for CONNECT_LIST_ALL_DOMAINS). Dropped items are silent, as in libvirt.
   */
  async filter<T>(info: ProcedureInfo, items: readonly T[], subject: AccessSubject, refOf: (item: T) => unknown = (i) => i): Promise<T[]> {
    if (!this.enabled || info.aclFilter.length === 0) return [...items];
    const out: T[] = [];
    for (const item of items) if (await this.passesFilter(info.aclFilter, refOf(item), subject)) out.push(item);
    return out;
  }

  /** Whether an event about `ref` may reach this client (the register procedure's `@aclfilter`). */
  async allowsEvent(register: ProcedureInfo, ref: unknown, subject: AccessSubject): Promise<boolean> {
    if (!this.enabled || register.aclFilter.length === 0) return true;
    return this.passesFilter(register.aclFilter, ref, subject);
  }

  /** Asks every driver to reload its policy; decisions cached by the old one are dropped there. */
  async reload(): Promise<void> {
    for (const d of this.drivers) {
      try {
        await d.reload?.();
      } catch (e) {
        this.opts.log.error(
          { event: 'access.reload.failed', driver: d.name, err: (e as Error).message },
          'access driver reload failed; it keeps its previous policy',
        );
      }
    }
  }

  async close(): Promise<void> {
    for (const d of this.drivers) await d.close?.();
  }

  private async passesFilter(rules: readonly AclRule[], ref: unknown, subject: AccessSubject): Promise<boolean> {
    for (const rule of rules) {
      const object = describeObject(rule.object, ref, subject.connectDriver);
      if (!object) return false;
      const denier = this.deniedBy({ subject, object, permission: rule.permission });
      if ((denier instanceof Promise ? await denier : denier) !== null) return false;
    }
    return true;
  }

  /** Throws on denial; a promise only when some driver answers asynchronously. */
  private require(subject: AccessSubject, info: ProcedureInfo, object: AccessObject | null, rule: AclRule): Promise<void> | undefined {
    if (!object) {
      this.audit('access.denied', subject, info.name, { type: rule.object, id: '', attributes: {} }, rule.permission, 'malformed-object');
      throw accessDenied();
    }
    const settle = (denier: Denial | null): void => {
      if (denier !== null) {
        this.audit('access.denied', subject, info.name, object, rule.permission, denier.driver);
        throw denier.failed ? driverFailedDenial(denier.driver) : accessDenied();
      }
      if (this.auditMode === 'all' && info.readOnlyDenied) this.audit('access.allowed', subject, info.name, object, rule.permission, null);
    };
    const denier = this.deniedBy({ subject, object, permission: rule.permission, procedure: info.name });
    if (denier instanceof Promise) return denier.then(settle);
    settle(denier);
    return undefined;
  }

  /** The name of the first driver that denies, or null when all allow; synchronous while the drivers are. */
  private deniedBy(request: AccessRequest, from = 0): Denial | null | Promise<Denial | null> {
    for (let i = from; i < this.drivers.length; i++) {
      const driver = this.drivers[i]!;
      let answer: boolean | Promise<boolean>;
      try {
        answer = driver.check(request);
      } catch (e) {
        this.driverFailed(driver, request, e);
        return { driver: driver.name, failed: true };
      }
      if (typeof answer !== 'boolean') {
        return answer.then(
          (allowed) => (allowed ? this.deniedBy(request, i + 1) : { driver: driver.name, failed: false }),
          (e: unknown) => {
            this.driverFailed(driver, request, e);
            return { driver: driver.name, failed: true };
          },
        );
      }
      if (!answer) return { driver: driver.name, failed: false };
    }
    return null;
  }

  private driverFailed(driver: AccessDriver, request: AccessRequest, e: unknown): void {
    this.opts.log.warn(
      {
        event: 'access.driver.error',
        driver: driver.name,
        permission: request.permission,
        object: request.object.type,
        err: (e as Error).message,
      },
      `'${driver.name}' denied access: its check failed`,
    );
  }

  private objectFromXml(type: string, args: unknown, subject: AccessSubject): AccessObject | null {
    const xml =
      args !== null && typeof args === 'object'
        ? ((args as Record<string, unknown>)['xml'] ?? (args as Record<string, unknown>)['xmlDesc'])
        : undefined;
    const { name, uuid } = namedInXml(xml);
    const bytes = parseUuid(uuid);
    return describeObject(
      type,
      { name, uuid: bytes ? formatUuid(bytes) : '', key: '', portdev: '', filtername: '' },
      subject.connectDriver,
    );
  }

  private audit(
    event: AccessAuditRecord['event'],
    subject: AccessSubject,
    procedure: string | null,
    object: AccessObject,
    permission: string,
    driver: string | null,
  ): void {
    const audit = this.opts.audit;
    if (!audit) return;
    const id = subject.identity;
    audit({
      event,
      conn: subject.connectionId,
      transport: subject.transport,
      method: id.method ?? null,
      user: id.username ?? id.unix?.userName ?? null,
      uid: id.unix?.uid ?? id.unixUid ?? null,
      pid: id.unix?.pid ?? id.unixPid ?? null,
      x509Dn: id.tlsDistinguishedName ?? null,
      oidcIssuer: id.oidc?.issuer ?? null,
      oidcSubject: id.oidc?.subject ?? null,
      hops: id.hops ? id.hops.map((h) => h.daemon) : null,
      procedure,
      object: object.type,
      objectId: object.id,
      objectName: objectName(object),
      permission,
      driver,
    });
  }
}
