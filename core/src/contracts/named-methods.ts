// DriverConnection's named methods (getType(), listAllDomains(flags), ...) derived from the
// generated RemoteApi a driver implements, so a driver writes each operation once, in the
// generated shape the daemon dispatches to, and the client library's convenience layer follows.

import { remoteProcedures, type RemoteApi } from '../protocol/remote.js';
import { fromCString } from '../protocol/remote.js';
import { unsupportedOperation, type ProcedureInfo } from '../protocol/procedures.js';
import type { DomainRef, DriverConnection } from './driver.js';

/** What the generated table says about each API method, for "not supported" errors. */
const byMethod: ReadonlyMap<string, ProcedureInfo> = new Map(remoteProcedures.map((p) => [p.method, p]));

/** The driver's method for an optional procedure, or libvirt's "not supported" naming its API. */
function procedure<M extends keyof RemoteApi>(conn: object, method: M): RemoteApi[M] {
  const fn = (conn as Partial<RemoteApi>)[method];
  if (typeof fn !== 'function') throw unsupportedOperation(byMethod.get(method)!);
  return fn.bind(conn) as RemoteApi[M];
}

/**
 * A connection class implementing the generated RemoteApi: `Base` (a generated client, or `Object`)
 * plus the named methods of DriverConnection. The procedures those rest on are abstract; the named
 * methods over the optional procedures answer libvirt's "not supported" when the driver lacks one.
 */
export function withNamedMethods<B extends abstract new (...args: any[]) => object>(Base: B) {
  abstract class NamedMethods extends Base implements DriverConnection {
    abstract readonly driverName: string;
    abstract close(): Promise<void>;
    abstract connectGetType(...args: Parameters<RemoteApi['connectGetType']>): ReturnType<RemoteApi['connectGetType']>;
    abstract connectGetVersion(...args: Parameters<RemoteApi['connectGetVersion']>): ReturnType<RemoteApi['connectGetVersion']>;
    abstract connectGetLibVersion(...args: Parameters<RemoteApi['connectGetLibVersion']>): ReturnType<RemoteApi['connectGetLibVersion']>;
    abstract connectGetHostname(...args: Parameters<RemoteApi['connectGetHostname']>): ReturnType<RemoteApi['connectGetHostname']>;
    abstract connectGetUri(...args: Parameters<RemoteApi['connectGetUri']>): ReturnType<RemoteApi['connectGetUri']>;
    abstract connectIsSecure(...args: Parameters<RemoteApi['connectIsSecure']>): ReturnType<RemoteApi['connectIsSecure']>;
    abstract connectSupportsFeature(
      ...args: Parameters<RemoteApi['connectSupportsFeature']>
    ): ReturnType<RemoteApi['connectSupportsFeature']>;
    abstract nodeGetInfo(...args: Parameters<RemoteApi['nodeGetInfo']>): ReturnType<RemoteApi['nodeGetInfo']>;
    abstract connectListAllDomains(...args: Parameters<RemoteApi['connectListAllDomains']>): ReturnType<RemoteApi['connectListAllDomains']>;
    abstract domainLookupByName(...args: Parameters<RemoteApi['domainLookupByName']>): ReturnType<RemoteApi['domainLookupByName']>;
    abstract domainLookupById(...args: Parameters<RemoteApi['domainLookupById']>): ReturnType<RemoteApi['domainLookupById']>;
    abstract domainLookupByUuid(...args: Parameters<RemoteApi['domainLookupByUuid']>): ReturnType<RemoteApi['domainLookupByUuid']>;
    abstract domainGetInfo(...args: Parameters<RemoteApi['domainGetInfo']>): ReturnType<RemoteApi['domainGetInfo']>;
    abstract domainGetState(...args: Parameters<RemoteApi['domainGetState']>): ReturnType<RemoteApi['domainGetState']>;
    abstract domainGetXmlDesc(...args: Parameters<RemoteApi['domainGetXmlDesc']>): ReturnType<RemoteApi['domainGetXmlDesc']>;

    async getType() {
      return (await this.connectGetType()).type;
    }
    async getVersion() {
      return (await this.connectGetVersion()).hv_ver;
    }
    async getLibVersion() {
      return (await this.connectGetLibVersion()).lib_ver;
    }
    async getHostname() {
      return (await this.connectGetHostname()).hostname;
    }
    async getUri() {
      return (await this.connectGetUri()).uri;
    }
    async isSecure() {
      return (await this.connectIsSecure()).secure === 1;
    }
    async supportsFeature(feature: number) {
      return (await this.connectSupportsFeature({ feature })).supported === 1;
    }
    async getNodeInfo() {
      return this.nodeGetInfo();
    }
    async listAllDomains(flags: number) {
      return (await this.connectListAllDomains({ need_results: 1, flags })).domains;
    }
    async lookupDomainByName(name: string) {
      return (await this.domainLookupByName({ name })).dom;
    }
    async lookupDomainById(id: number) {
      return (await this.domainLookupById({ id })).dom;
    }
    async lookupDomainByUuid(uuid: Buffer) {
      return (await this.domainLookupByUuid({ uuid })).dom;
    }
    async getDomainInfo(dom: DomainRef) {
      return this.domainGetInfo({ dom });
    }
    async getDomainState(dom: DomainRef) {
      return this.domainGetState({ dom, flags: 0 });
    }
    async getDomainXmlDesc(dom: DomainRef, flags: number) {
      return (await this.domainGetXmlDesc({ dom, flags })).xml;
    }
    async getDomainOsType(dom: DomainRef) {
      return (await procedure(this, 'domainGetOsType')({ dom })).type;
    }
    async getDomainAutostart(dom: DomainRef) {
      return (await procedure(this, 'domainGetAutostart')({ dom })).autostart === 1;
    }
    async isDomainPersistent(dom: DomainRef) {
      return (await procedure(this, 'domainIsPersistent')({ dom })).persistent === 1;
    }
    async hasManagedSaveImage(dom: DomainRef) {
      return (await procedure(this, 'domainHasManagedSaveImage')({ dom, flags: 0 })).result === 1;
    }
    async getSecurityModel() {
      const r = await procedure(this, 'nodeGetSecurityModel')();
      return { model: fromCString(r.model), doi: fromCString(r.doi) };
    }
    async getDomainSecurityLabel(dom: DomainRef) {
      const r = await procedure(this, 'domainGetSecurityLabel')({ dom });
      return { label: fromCString(r.label), enforcing: r.enforcing === 1 };
    }
    async getDomainMessages(dom: DomainRef, flags: number) {
      return (await procedure(this, 'domainGetMessages')({ dom, flags })).msgs;
    }
  }
  return NamedMethods;
}
