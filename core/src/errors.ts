// libvirt's error numbers and domains, and the typed error every layer of virtauth throws.

/** `virErrorNumber` values virtauth produces or interprets. */
export const ErrorCode = {
  OK: 0,
  INTERNAL_ERROR: 1,
  NO_MEMORY: 2,
  NO_SUPPORT: 3,
  UNKNOWN_HOST: 4,
  NO_CONNECT: 5,
  INVALID_CONN: 6,
  INVALID_DOMAIN: 7,
  INVALID_ARG: 8,
  OPERATION_FAILED: 9,
  GET_FAILED: 10,
  POST_FAILED: 11,
  HTTP_ERROR: 12,
  SEXPR_SERIAL: 13,
  NO_XEN: 14,
  XEN_CALL: 15,
  OS_TYPE: 16,
  NO_KERNEL: 17,
  NO_ROOT: 18,
  NO_SOURCE: 19,
  NO_TARGET: 20,
  NO_NAME: 21,
  NO_OS: 22,
  NO_DEVICE: 23,
  NO_XENSTORE: 24,
  DRIVER_FULL: 25,
  CALL_FAILED: 26,
  XML_ERROR: 27,
  DOM_EXIST: 28,
  OPERATION_DENIED: 29,
  OPEN_FAILED: 30,
  READ_FAILED: 31,
  PARSE_FAILED: 32,
  CONF_SYNTAX: 33,
  WRITE_FAILED: 34,
  XML_DETAIL: 35,
  INVALID_NETWORK: 36,
  NETWORK_EXIST: 37,
  SYSTEM_ERROR: 38,
  RPC: 39,
  GNUTLS_ERROR: 40,
  NO_DOMAIN: 42,
  AUTH_FAILED: 45,
  OPERATION_INVALID: 55,
  OPERATION_ABORTED: 78,
  AUTH_CANCELLED: 79,
  ARGUMENT_UNSUPPORTED: 74,
  CONFIG_UNSUPPORTED: 67,
  OPERATION_TIMEOUT: 68,
  OPERATION_UNSUPPORTED: 84,
  SSH: 85,
  ACCESS_DENIED: 88,
  DBUS_SERVICE: 89,
  AUTH_UNAVAILABLE: 94,
  NO_SERVER: 95,
  NO_CLIENT: 96,
  LIBSSH: 98,
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** `virErrorDomain` values virtauth produces or interprets. */
export const ErrorDomain = {
  NONE: 0,
  XEN: 1,
  XEND: 2,
  CONF: 9,
  QEMU: 10,
  REMOTE: 13,
  TEST: 12,
  RPC: 7,
  DOMAIN: 20,
  XENAPI: 32,
  AUTH: 46,
  DBUS: 47,
  ACCESS: 55,
  POLKIT: 60,
  ADMIN: 62,
  SSH: 50,
  LIBSSH: 66,
} as const;
export type ErrorDomain = (typeof ErrorDomain)[keyof typeof ErrorDomain];

/** `virErrorLevel`. */
export const ErrorLevel = { NONE: 0, WARNING: 1, ERROR: 2 } as const;

// The printf templates libvirt uses when a detail text is given (virerror.c); `%s` is the detail.
const TEMPLATES: Partial<Record<number, string>> = {
  [ErrorCode.INTERNAL_ERROR]: 'internal error: %s',
  [ErrorCode.NO_SUPPORT]: 'this function is not supported by the connection driver: %s',
  [ErrorCode.NO_CONNECT]: 'no connection driver available for %s',
  [ErrorCode.INVALID_CONN]: 'invalid connection pointer in %s',
  [ErrorCode.INVALID_ARG]: 'invalid argument: %s',
  [ErrorCode.OPERATION_FAILED]: 'operation failed: %s',
  [ErrorCode.OPERATION_DENIED]: 'operation forbidden: %s',
  [ErrorCode.CONF_SYNTAX]: 'configuration file syntax error: %s',
  [ErrorCode.XML_ERROR]: 'XML error: %s',
  [ErrorCode.CONFIG_UNSUPPORTED]: 'unsupported configuration: %s',
  [ErrorCode.SYSTEM_ERROR]: '%s',
  [ErrorCode.RPC]: '%s',
  [ErrorCode.GNUTLS_ERROR]: '%s',
  [ErrorCode.NO_DOMAIN]: 'Domain not found: %s',
  [ErrorCode.AUTH_FAILED]: 'authentication failed: %s',
  [ErrorCode.OPERATION_INVALID]: 'Requested operation is not valid: %s',
  [ErrorCode.OPERATION_TIMEOUT]: 'Timed out during operation: %s',
  [ErrorCode.AUTH_CANCELLED]: 'authentication cancelled: %s',
  [ErrorCode.OPERATION_UNSUPPORTED]: 'Operation not supported: %s',
  [ErrorCode.ACCESS_DENIED]: 'access denied: %s',
  [ErrorCode.DBUS_SERVICE]: 'error from service: %s',
  [ErrorCode.AUTH_UNAVAILABLE]: 'authentication unavailable: %s',
  [ErrorCode.XEN_CALL]: 'failed Xen syscall %s',
  [ErrorCode.ARGUMENT_UNSUPPORTED]: 'argument unsupported: %s',
  [ErrorCode.OPERATION_ABORTED]: 'operation aborted: %s',
  [ErrorCode.NO_SERVER]: 'Server not found: %s',
  [ErrorCode.NO_CLIENT]: 'Client not found: %s',
  [ErrorCode.SSH]: 'SSH transport error: %s',
  [ErrorCode.LIBSSH]: 'libssh transport error: %s',
};

export function errorTemplate(code: number): string {
  return TEMPLATES[code] ?? '%s';
}

export interface VirErrorInit {
  code: number;
  domain: number;
  /** The detail substituted into the code's template (libvirt's str2). */
  detail?: string;
  /** The whole message as received, when it came over the wire. */
  message?: string;
  level?: number;
  str1?: string | null;
  str2?: string | null;
  str3?: string | null;
  int1?: number;
  int2?: number;
  cause?: unknown;
}

/**
 * A libvirt error: the code, domain and message a libvirt client would see. The message never
 * carries a credential value; callers put identities and hosts in it, never secrets.
 */
export class VirError extends Error {
  override readonly name = 'VirError';
  readonly code: number;
  readonly domain: number;
  readonly level: number;
  readonly str1: string | null;
  readonly str2: string | null;
  readonly str3: string | null;
  readonly int1: number;
  readonly int2: number;

  constructor(init: VirErrorInit) {
    const template = errorTemplate(init.code);
    const detail = init.detail ?? init.str2 ?? undefined;
    const message =
      init.message ?? (detail !== undefined ? template.replace('%s', detail) : template.replace(': %s', '').replace('%s', ''));
    super(message, init.cause !== undefined ? { cause: init.cause } : undefined);
    this.code = init.code;
    this.domain = init.domain;
    this.level = init.level ?? ErrorLevel.ERROR;
    this.str1 = init.str1 !== undefined ? init.str1 : template;
    this.str2 = init.str2 !== undefined ? init.str2 : (detail ?? null);
    this.str3 = init.str3 ?? null;
    this.int1 = init.int1 ?? -1;
    this.int2 = init.int2 ?? -1;
  }

  /** Symbolic name of the code, e.g. `AUTH_FAILED`, for logs and tests. */
  get codeName(): string {
    for (const [k, v] of Object.entries(ErrorCode)) if (v === this.code) return k;
    return String(this.code);
  }
}

export const virError = (code: number, domain: number, detail?: string, cause?: unknown): VirError =>
  new VirError({ code, domain, ...(detail !== undefined ? { detail } : {}), ...(cause !== undefined ? { cause } : {}) });

/** Errors of the RPC layer (domain RPC, code RPC) whose text is the whole message. */
export const rpcError = (message: string): VirError => new VirError({ code: ErrorCode.RPC, domain: ErrorDomain.RPC, detail: message });

export function isVirError(e: unknown, code?: number): e is VirError {
  return e instanceof VirError && (code === undefined || e.code === code);
}
