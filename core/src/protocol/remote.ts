// libvirt's REMOTE program (remote_protocol.x): the numbers and message layouts virtauth speaks.

import * as x from '../xdr/codec.js';

export const REMOTE_PROGRAM = 0x20008086;
export const REMOTE_PROTOCOL_VERSION = 1;

/** The libvirt API level virtauth implements, reported as the daemon's library version. */
export const LIBVIRT_API_VERSION = 9000000n;

export const REMOTE_STRING_MAX = 4194304;
export const REMOTE_DOMAIN_LIST_MAX = 16384;
export const REMOTE_AUTH_TYPE_LIST_MAX = 20;
export const REMOTE_AUTH_SASL_DATA_MAX = 65536;
export const REMOTE_DOMAIN_MESSAGES_MAX = 2048;
export const SECURITY_MODEL_BUFLEN = 257;
export const SECURITY_DOI_BUFLEN = 257;
export const SECURITY_LABEL_BUFLEN = 4097;

/** `remote_auth_type`; the daemon's per-socket setting uses the same numbers. */
export const AuthType = { NONE: 0, SASL: 1, POLKIT: 2 } as const;
export type AuthType = (typeof AuthType)[keyof typeof AuthType];

export const RemoteProc = {
  CONNECT_OPEN: 1,
  CONNECT_CLOSE: 2,
  CONNECT_GET_TYPE: 3,
  CONNECT_GET_VERSION: 4,
  NODE_GET_INFO: 6,
  DOMAIN_GET_XML_DESC: 14,
  DOMAIN_GET_AUTOSTART: 15,
  DOMAIN_GET_INFO: 16,
  DOMAIN_GET_MAX_MEMORY: 17,
  DOMAIN_GET_OS_TYPE: 19,
  CONNECT_LIST_DEFINED_DOMAINS: 21,
  DOMAIN_LOOKUP_BY_ID: 22,
  DOMAIN_LOOKUP_BY_NAME: 23,
  DOMAIN_LOOKUP_BY_UUID: 24,
  CONNECT_NUM_OF_DEFINED_DOMAINS: 25,
  CONNECT_LIST_DOMAINS: 37,
  CONNECT_NUM_OF_DOMAINS: 51,
  CONNECT_GET_HOSTNAME: 59,
  CONNECT_SUPPORTS_FEATURE: 60,
  AUTH_LIST: 66,
  AUTH_SASL_INIT: 67,
  AUTH_SASL_START: 68,
  AUTH_SASL_STEP: 69,
  AUTH_POLKIT: 70,
  CONNECT_GET_URI: 110,
  DOMAIN_GET_SECURITY_LABEL: 121,
  NODE_GET_SECURITY_MODEL: 122,
  CONNECT_IS_SECURE: 149,
  DOMAIN_IS_ACTIVE: 150,
  DOMAIN_IS_PERSISTENT: 151,
  CONNECT_GET_LIB_VERSION: 157,
  DOMAIN_HAS_MANAGED_SAVE_IMAGE: 183,
  DOMAIN_GET_STATE: 212,
  CONNECT_LIST_ALL_DOMAINS: 273,
  CONNECT_REGISTER_CLOSE_CALLBACK: 360,
  CONNECT_UNREGISTER_CLOSE_CALLBACK: 361,
  DOMAIN_GET_MESSAGES: 426,
} as const;
export type RemoteProc = (typeof RemoteProc)[keyof typeof RemoteProc];

/** Procedures a client may call before it has authenticated. */
export const PRE_AUTH_PROCS: ReadonlySet<number> = new Set([66, 67, 68, 69, 70]);

/** CONNECT_SUPPORTS_FEATURE numbers (VIR_DRV_FEATURE_*). */
export const Feature = {
  MIGRATION_V1: 1,
  REMOTE: 2,
  MIGRATION_V2: 3,
  MIGRATION_P2P: 4,
  MIGRATION_DIRECT: 5,
  MIGRATION_V3: 6,
  MIGRATE_CHANGE_PROTECTION: 7,
  FD_PASSING: 8,
  TYPED_PARAM_STRING: 9,
  PROGRAM_KEEPALIVE: 10,
  XML_MIGRATABLE: 11,
  MIGRATION_OFFLINE: 12,
  MIGRATION_PARAMS: 13,
  REMOTE_EVENT_CALLBACK: 14,
  REMOTE_CLOSE_CALLBACK: 15,
  NETWORK_UPDATE_HAS_CORRECT_ORDER: 16,
} as const;

/** CONNECT_OPEN's flags as the remote driver sends them. */
export const OpenFlag = { READ_ONLY: 1, USER: 2, AUTOSTART: 4 } as const;

/** `virDomainState`. */
export const DomainState = { NOSTATE: 0, RUNNING: 1, BLOCKED: 2, PAUSED: 3, SHUTDOWN: 4, SHUTOFF: 5, CRASHED: 6, PMSUSPENDED: 7 } as const;

/** `virConnectListAllDomainsFlags`. */
export const ListDomainsFlag = {
  ACTIVE: 1,
  INACTIVE: 2,
  PERSISTENT: 4,
  TRANSIENT: 8,
  RUNNING: 16,
  PAUSED: 32,
  SHUTOFF: 64,
  OTHER: 128,
} as const;

/** `virDomainXMLFlags`. */
export const DomainXmlFlag = { SECURE: 1, INACTIVE: 2, UPDATE_CPU: 4, MIGRATABLE: 8 } as const;

// Common types.
export const nonnullString = x.string(REMOTE_STRING_MAX);
export const remoteString = x.optional(nonnullString);
export const uuid = x.fixedOpaque(16);
export const nonnullDomain = x.struct({ name: nonnullString, uuid, id: x.int });
export type RemoteDomain = x.Infer<typeof nonnullDomain>;

// Authentication.
export const authListRet = x.struct({ types: x.array(x.int, REMOTE_AUTH_TYPE_LIST_MAX) });
export const authSaslInitRet = x.struct({ mechlist: nonnullString });
const saslData = x.charArray(REMOTE_AUTH_SASL_DATA_MAX);
export const authSaslStartArgs = x.struct({ mech: nonnullString, nil: x.int, data: saslData });
export const authSaslStartRet = x.struct({ complete: x.int, nil: x.int, data: saslData });
export const authSaslStepArgs = x.struct({ nil: x.int, data: saslData });
export const authSaslStepRet = authSaslStartRet;
export const authPolkitRet = x.struct({ complete: x.int });

// Connect.
export const connectOpenArgs = x.struct({ name: remoteString, flags: x.uint });
export const connectGetTypeRet = x.struct({ type: nonnullString });
export const connectGetVersionRet = x.struct({ hv_ver: x.uhyper });
export const connectGetLibVersionRet = x.struct({ lib_ver: x.uhyper });
export const connectGetHostnameRet = x.struct({ hostname: nonnullString });
export const connectGetUriRet = x.struct({ uri: nonnullString });
export const connectSupportsFeatureArgs = x.struct({ feature: x.int });
export const connectSupportsFeatureRet = x.struct({ supported: x.int });
export const connectIsSecureRet = x.struct({ secure: x.int });
export const nodeGetInfoRet = x.struct({
  model: x.fixedCharString(32),
  memory: x.uhyper,
  cpus: x.int,
  mhz: x.int,
  nodes: x.int,
  sockets: x.int,
  cores: x.int,
  threads: x.int,
});
export const connectListAllDomainsArgs = x.struct({ need_results: x.int, flags: x.uint });
export const connectListAllDomainsRet = x.struct({ domains: x.array(nonnullDomain, REMOTE_DOMAIN_LIST_MAX), ret: x.uint });
export const connectNumOfDomainsRet = x.struct({ num: x.int });
export const connectListDomainsArgs = x.struct({ maxids: x.int });
export const connectListDomainsRet = x.struct({ ids: x.array(x.int, REMOTE_DOMAIN_LIST_MAX) });
export const connectListDefinedDomainsArgs = x.struct({ maxnames: x.int });
export const connectListDefinedDomainsRet = x.struct({ names: x.array(nonnullString, REMOTE_DOMAIN_LIST_MAX) });

// Domains.
export const domainLookupByNameArgs = x.struct({ name: nonnullString });
export const domainLookupByIdArgs = x.struct({ id: x.int });
export const domainLookupByUuidArgs = x.struct({ uuid });
export const domainLookupRet = x.struct({ dom: nonnullDomain });
export const domainArgs = x.struct({ dom: nonnullDomain });
export const domainGetInfoRet = x.struct({
  state: x.uint, // `unsigned char`, widened to 4 bytes on the wire
  maxMem: x.uhyper,
  memory: x.uhyper,
  nrVirtCpu: x.uint, // `unsigned short`
  cpuTime: x.uhyper,
});
export const domainGetXmlDescArgs = x.struct({ dom: nonnullDomain, flags: x.uint });
export const domainGetXmlDescRet = x.struct({ xml: nonnullString });
export const domainGetStateArgs = x.struct({ dom: nonnullDomain, flags: x.uint });
export const domainGetStateRet = x.struct({ state: x.int, reason: x.int });
export const domainIsActiveRet = x.struct({ active: x.int });
export const domainIsPersistentRet = x.struct({ persistent: x.int });
export const domainGetAutostartRet = x.struct({ autostart: x.int });
export const domainGetMaxMemoryRet = x.struct({ memory: x.uhyper });
export const domainGetOsTypeRet = x.struct({ type: nonnullString });
export const domainFlagsArgs = x.struct({ dom: nonnullDomain, flags: x.uint });
export const domainHasManagedSaveImageRet = x.struct({ result: x.int });
// Security model and label travel as `char<>` arrays holding a NUL-terminated C string.
export const nodeGetSecurityModelRet = x.struct({ model: x.charArray(SECURITY_MODEL_BUFLEN), doi: x.charArray(SECURITY_DOI_BUFLEN) });
export const domainGetSecurityLabelRet = x.struct({ label: x.charArray(SECURITY_LABEL_BUFLEN), enforcing: x.int });
export const domainGetMessagesRet = x.struct({ msgs: x.array(nonnullString, REMOTE_DOMAIN_MESSAGES_MAX) });

/** A C string as libvirt puts it in a `char<>` array: the bytes and the terminating NUL. */
export function cString(s: string): Buffer {
  return Buffer.concat([Buffer.from(s, 'utf8'), Buffer.alloc(1)]);
}

/** The text of a `char<>` array holding a C string (up to the first NUL). */
export function fromCString(b: Buffer): string {
  const nul = b.indexOf(0);
  return b.toString('utf8', 0, nul < 0 ? b.length : nul);
}
