// XenAPI failures: the server's typed error, and its translation into the VirError a libvirt client sees.

import { ErrorCode, ErrorDomain, VirError } from '@virtauth/core';

/** A failure the XenAPI server reported: its error code and parameters, e.g. `HOST_IS_SLAVE ["10.0.0.1"]`. */
export class XenApiError extends Error {
  override readonly name = 'XenApiError';

  constructor(
    readonly code: string,
    readonly params: readonly string[],
  ) {
    super(params.length > 0 ? `${bounded(code)}(${params.slice(0, MAX_PARAMS_SHOWN).map(bounded).join(', ')})` : bounded(code));
  }
}

// A server's error text reaches the client's message: a hostile server must not make it huge.
const MAX_TEXT_SHOWN = 200;
const MAX_PARAMS_SHOWN = 8;

/** At most MAX_TEXT_SHOWN characters of a server-supplied text, marked when cut. */
export function bounded(text: string): string {
  return text.length > MAX_TEXT_SHOWN ? `${text.slice(0, MAX_TEXT_SHOWN)}...` : text;
}

/** What the mapping needs to word a message: never the password. */
export interface XenApiErrorContext {
  /** The server's host name as given by the user (used in authentication messages). */
  host: string;
  /** `host:port`, for messages about the connection itself. */
  address: string;
  /** The XenAPI method that failed. */
  method: string;
  /** The user the session belongs to, when known. */
  username?: string;
}

const xenapiError = (code: number, detail: string, cause: unknown): VirError =>
  new VirError({ code, domain: ErrorDomain.XENAPI, detail, cause });

/** Translates a XenAPI error into libvirt's code and an actionable message in domain XENAPI. */
export function mapXenApiError(error: XenApiError, ctx: XenApiErrorContext): VirError {
  const [p0, p1, p2] = error.params.slice(0, 3).map(bounded);
  switch (error.code) {
    case 'SESSION_AUTHENTICATION_FAILED':
      return xenapiError(
        ErrorCode.AUTH_FAILED,
        `XenAPI server ${ctx.host} rejected the credentials of user '${ctx.username ?? p0 ?? ''}'`,
        error,
      );
    case 'SESSION_INVALID':
      return xenapiError(
        ErrorCode.OPERATION_FAILED,
        `the XenAPI session on ${ctx.address} is no longer valid (logged out, expired, or the server restarted); reopen the connection`,
        error,
      );
    case 'HOST_IS_SLAVE':
      return xenapiError(
        ErrorCode.OPERATION_FAILED,
        `XenAPI server ${ctx.address} is a pool member, not the pool master${p0 ? ` (the master is ${p0})` : ''}; connect to the pool master instead`,
        error,
      );
    case 'HANDLE_INVALID':
      if (p0 === 'VM') return xenapiError(ErrorCode.NO_DOMAIN, `no domain with XenAPI reference '${p1 ?? ''}' (it was deleted)`, error);
      return xenapiError(ErrorCode.OPERATION_FAILED, `XenAPI object ${p0 ?? '?'} '${p1 ?? ''}' does not exist on ${ctx.address}`, error);
    case 'UUID_INVALID':
      if (p0 === 'VM') return xenapiError(ErrorCode.NO_DOMAIN, `no domain with matching uuid '${p1 ?? ''}'`, error);
      return xenapiError(ErrorCode.OPERATION_FAILED, `no XenAPI ${p0 ?? 'object'} with uuid '${p1 ?? ''}' on ${ctx.address}`, error);
    case 'MESSAGE_METHOD_UNKNOWN':
      return xenapiError(ErrorCode.NO_SUPPORT, `XenAPI server ${ctx.address} does not implement ${p0 ?? ctx.method}`, error);
    case 'MESSAGE_PARAMETER_COUNT_MISMATCH':
      return xenapiError(
        ErrorCode.INTERNAL_ERROR,
        `XenAPI server ${ctx.address} expected ${p1 ?? '?'} parameters for ${p0 ?? ctx.method}, got ${p2 ?? '?'}`,
        error,
      );
    case 'VM_BAD_POWER_STATE':
      // [vm, expected, actual]: the VM changed state between our check and the call.
      return xenapiError(
        ErrorCode.OPERATION_INVALID,
        `XenAPI refused ${ctx.method}: the domain is ${p2 ?? 'in another state'}, the operation needs it ${p1 ?? 'in another state'}`,
        error,
      );
    case 'OPERATION_NOT_ALLOWED':
    case 'VM_IS_TEMPLATE':
      return xenapiError(ErrorCode.OPERATION_INVALID, `XenAPI refused ${ctx.method}: ${error.message}`, error);
    case 'RBAC_PERMISSION_DENIED':
    case 'PERMISSION_DENIED':
      return xenapiError(
        ErrorCode.ACCESS_DENIED,
        `XenAPI server ${ctx.host} does not allow ${ctx.username !== undefined ? `user '${ctx.username}'` : 'this session'} to call ${ctx.method}${p0 ? ` (${p0})` : ''}`,
        error,
      );
    default:
      return xenapiError(ErrorCode.INTERNAL_ERROR, `XenAPI call ${ctx.method} on ${ctx.address} failed: ${error.message}`, error);
  }
}

/** The XenAPI error code behind a VirError (or the error itself), or null. */
export function xenApiErrorCode(e: unknown): string | null {
  if (e instanceof XenApiError) return e.code;
  if (e instanceof Error && e.cause instanceof XenApiError) return e.cause.code;
  return null;
}
