// DriverConnection's named methods (getType(), listAllDomains(flags), ...) derived from the
// generated RemoteApi a driver implements, so a driver writes each operation once, in the
// generated shape the daemon dispatches to, and the client library's convenience layer follows.

import { remoteProcedures, type RemoteApi } from '../protocol/remote.js';
import { fromCString } from '../protocol/remote.js';
import { unsupportedOperation, type ProcedureInfo } from '../protocol/procedures.js';
import type { DomainRef, RequiredProcedures } from './driver.js';

/** What the generated table says about each API method, for "not supported" errors. */
const byMethod: ReadonlyMap<string, ProcedureInfo> = new Map(remoteProcedures.map((p) => [p.method, p]));

/** A connection's method for an optional procedure, or libvirt's "not supported" naming its API. */
export function remoteOperation<M extends keyof RemoteApi>(conn: object, method: M): RemoteApi[M] {
  const fn = (conn as Partial<RemoteApi>)[method];
  if (typeof fn !== 'function') throw unsupportedOperation(byMethod.get(method)!);
  return fn.bind(conn) as RemoteApi[M];
}

/** The connection as the driver implements it: DriverConnection requires these procedures. */
const required = (conn: object): RequiredProcedures => conn as RequiredProcedures;

/**
 * A connection class implementing the generated RemoteApi: `Base` (a generated client, or `Object`)
 * plus the named methods of DriverConnection. The driver's class declares `implements
 * DriverConnection`, so the compiler holds it to the procedures those rest on (RequiredProcedures);
 * the named methods over optional procedures answer libvirt's "not supported" when it lacks one.
 */
export function withNamedMethods<B extends abstract new (...args: any[]) => object>(Base: B) {
  abstract class NamedMethods extends Base {
    async getType() {
      return (await required(this).connectGetType()).type;
    }
    async getVersion() {
      return (await required(this).connectGetVersion()).hv_ver;
    }
    async getLibVersion() {
      return (await required(this).connectGetLibVersion()).lib_ver;
    }
    async getHostname() {
      return (await required(this).connectGetHostname()).hostname;
    }
    async getUri() {
      return (await required(this).connectGetUri()).uri;
    }
    async isSecure() {
      return (await required(this).connectIsSecure()).secure === 1;
    }
    async supportsFeature(feature: number) {
      return (await required(this).connectSupportsFeature({ feature })).supported === 1;
    }
    async getNodeInfo() {
      return required(this).nodeGetInfo();
    }
    async listAllDomains(flags: number) {
      return (await required(this).connectListAllDomains({ need_results: 1, flags })).domains;
    }
    async lookupDomainByName(name: string) {
      return (await required(this).domainLookupByName({ name })).dom;
    }
    async lookupDomainById(id: number) {
      return (await required(this).domainLookupById({ id })).dom;
    }
    async lookupDomainByUuid(uuid: Buffer) {
      return (await required(this).domainLookupByUuid({ uuid })).dom;
    }
    async getDomainInfo(dom: DomainRef) {
      return required(this).domainGetInfo({ dom });
    }
    async getDomainState(dom: DomainRef) {
      return required(this).domainGetState({ dom, flags: 0 });
    }
    async getDomainXmlDesc(dom: DomainRef, flags: number) {
      return (await required(this).domainGetXmlDesc({ dom, flags })).xml;
    }
    async getDomainOsType(dom: DomainRef) {
      return (await remoteOperation(this, 'domainGetOsType')({ dom })).type;
    }
    async getDomainAutostart(dom: DomainRef) {
      return (await remoteOperation(this, 'domainGetAutostart')({ dom })).autostart === 1;
    }
    async isDomainPersistent(dom: DomainRef) {
      return (await remoteOperation(this, 'domainIsPersistent')({ dom })).persistent === 1;
    }
    async hasManagedSaveImage(dom: DomainRef) {
      return (await remoteOperation(this, 'domainHasManagedSaveImage')({ dom, flags: 0 })).result === 1;
    }
    async getSecurityModel() {
      const r = await remoteOperation(this, 'nodeGetSecurityModel')();
      return { model: fromCString(r.model), doi: fromCString(r.doi) };
    }
    async getDomainSecurityLabel(dom: DomainRef) {
      const r = await remoteOperation(this, 'domainGetSecurityLabel')({ dom });
      return { label: fromCString(r.label), enforcing: r.enforcing === 1 };
    }
    async getDomainMessages(dom: DomainRef, flags: number) {
      return (await remoteOperation(this, 'domainGetMessages')({ dom, flags })).msgs;
    }
  }
  return NamedMethods;
}
