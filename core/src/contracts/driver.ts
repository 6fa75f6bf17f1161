// The hypervisor driver contract: what the daemon serves and what the client library opens.

import type { ConnectAuth, CredentialRequester } from '../credentials.js';
import type { ConnectUri } from '../uri.js';
import type { RemoteApi, RemoteDomainGetInfoRet, RemoteNodeGetInfoRet, RemoteNonnullDomain } from '../protocol/remote.js';
import type { ClientRelay } from './relay.js';

export type DomainRef = RemoteNonnullDomain;

/** DOMAIN_GET_INFO's reply (state, memory in KiB, vCPUs, CPU time in ns). */
export type DomainInfo = RemoteDomainGetInfoRet;

/** NODE_GET_INFO's reply. */
export type NodeInfo = RemoteNodeGetInfoRet;

export interface SecurityModel {
  model: string;
  doi: string;
}

export interface SecurityLabel {
  label: string;
  enforcing: boolean;
}

export interface DriverOpenContext {
  /** Credentials for the driver's own login: auth.conf, then the caller's callback (or relay). */
  requestCredentials: CredentialRequester;
  /** The caller's declared credential types and callback, when there is one. */
  auth: ConnectAuth | null;
  readOnly: boolean;
  /** Names this process in a relayed request's origin chain, e.g. `virtauthd@hostA`. */
  processName: string;
  /** Aborted when the open is abandoned (client gone, deadline). */
  signal?: AbortSignal;
  /**
   * Present when whoever opens this driver can answer relayed credential requests: the remote
   * driver attaches it to its connection, which enables the relay on the server.
   */
  relay?: ClientRelay;
}

/** A domain lifecycle event (virDomainEventType and its detail). */
export interface DomainLifecycleEvent {
  dom: DomainRef;
  event: number;
  detail: number;
}

/**
 * The procedures every connection serves (the generated RemoteApi's methods of those names): the
 * named methods below rest on them.
 */
export type RequiredProcedures = Pick<
  RemoteApi,
  | 'connectGetType'
  | 'connectGetVersion'
  | 'connectGetLibVersion'
  | 'connectGetHostname'
  | 'connectGetUri'
  | 'connectIsSecure'
  | 'connectSupportsFeature'
  | 'nodeGetInfo'
  | 'connectListAllDomains'
  | 'domainLookupByName'
  | 'domainLookupById'
  | 'domainLookupByUuid'
  | 'domainGetInfo'
  | 'domainGetState'
  | 'domainGetXmlDesc'
>;

/**
 * An open hypervisor connection. The generated RemoteApi (one method per procedure of libvirt's
 * remote program, e.g. `domainCreate({ dom })`) is what a driver implements to serve a procedure:
 * the daemon calls the method of that name, and answers libvirt's "not supported" error when the
 * driver lacks it. The named methods below are the client library's convenience layer; a driver
 * gets them from withNamedMethods (named-methods.ts), built on its RemoteApi methods.
 */
export interface DriverConnection extends Omit<Partial<RemoteApi>, keyof RequiredProcedures>, RequiredProcedures {
  readonly driverName: string;
  getType(): Promise<string>;
  getVersion(): Promise<bigint>;
  getLibVersion(): Promise<bigint>;
  getHostname(): Promise<string>;
  getUri(): Promise<string>;
  isSecure(): Promise<boolean>;
  supportsFeature(feature: number): Promise<boolean>;
  getNodeInfo(): Promise<NodeInfo>;
  listAllDomains(flags: number): Promise<DomainRef[]>;
  lookupDomainByName(name: string): Promise<DomainRef>;
  lookupDomainById(id: number): Promise<DomainRef>;
  lookupDomainByUuid(uuid: Buffer): Promise<DomainRef>;
  getDomainInfo(dom: DomainRef): Promise<DomainInfo>;
  getDomainState(dom: DomainRef): Promise<{ state: number; reason: number }>;
  getDomainXmlDesc(dom: DomainRef, flags: number): Promise<string>;
  close(): Promise<void>;
  // Over optional procedures (withNamedMethods answers NO_SUPPORT when the driver lacks one).
  getDomainOsType?(dom: DomainRef): Promise<string>;
  getDomainAutostart?(dom: DomainRef): Promise<boolean>;
  isDomainPersistent?(dom: DomainRef): Promise<boolean>;
  hasManagedSaveImage?(dom: DomainRef): Promise<boolean>;
  getSecurityModel?(): Promise<SecurityModel>;
  getDomainSecurityLabel?(dom: DomainRef): Promise<SecurityLabel>;
  getDomainMessages?(dom: DomainRef, flags: number): Promise<string[]>;
  /** Lifecycle events of this hypervisor's domains until the returned function is called. */
  subscribeDomainLifecycle?(listener: (event: DomainLifecycleEvent) => void): () => void;
}

export interface Driver {
  /** Short name: `test`, `remote`, `xenapi`. */
  readonly name: string;
  /**
   * Whether this driver opens the URI. The remote driver claims URIs with a transport or host;
   * local drivers claim their scheme without a host.
   */
  accepts(uri: ConnectUri): boolean;
  open(uri: ConnectUri, ctx: DriverOpenContext): Promise<DriverConnection>;
}

/**
 * Picks the driver for a URI as virConnectOpen does: local drivers first, then the remote
 * driver for whatever names a transport or host that no local driver claims.
 */
export function selectDriver(drivers: readonly Driver[], uri: ConnectUri): Driver | undefined {
  return drivers.find((d) => d.name !== 'remote' && d.accepts(uri)) ?? drivers.find((d) => d.name === 'remote' && d.accepts(uri));
}
