export { XenApiDriver, XenApiConnection, XENAPI_AUTH_SERVICE, XENAPI_DEFAULT_USER } from './driver.js';
export type { XenApiDriverOptions, XenApiTarget } from './driver.js';
export { XenApiSession, XenApiTransport } from './client.js';
export type { XenApiEndpoint, XenApiValue, XenApiLoginOptions, XenApiCallOptions } from './client.js';
export { XenApiError, mapXenApiError, xenApiErrorCode } from './errors.js';
export type { XenApiErrorContext } from './errors.js';
