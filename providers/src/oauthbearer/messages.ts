// The OAUTHBEARER wire format (RFC 7628 §3): the client's single message (a GS2 header, then
// key=value pairs separated by %x01 and closed by two) and the server's JSON error challenge.

/** Separates the key/value pairs of a client message. */
export const KVSEP = '\x01';

/** What a client sends after receiving an error challenge: the exchange then fails. */
export const CLIENT_ERROR_ACK = Buffer.from(KVSEP, 'latin1');

/** RFC 6750 §3.1 error codes, as the RFC 7628 error challenge's `status`. */
export type BearerErrorStatus = 'invalid_request' | 'invalid_token' | 'insufficient_scope';

/** The server's error challenge (RFC 7628 §3.2.2). */
export interface OAuthBearerServerError {
  status: BearerErrorStatus | (string & {});
  /** Space-separated scopes a token needs here. */
  scope?: string;
  /** Discovery document of the issuer this server trusts. */
  'openid-configuration'?: string;
}

export interface OAuthBearerClientMessage {
  /** Authorization identity from the GS2 header; null when absent. */
  authzid: string | null;
  /** The bearer token; null when the message carries no `auth` pair (a discovery request). */
  token: string | null;
  /** Every key/value pair, `auth` included. */
  pairs: ReadonlyMap<string, string>;
}

export class OAuthBearerFormatError extends Error {
  override readonly name = 'OAuthBearerFormatError';
}

// RFC 6750 b64token: what may follow "Bearer ".
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;
const KEY = /^[A-Za-z]+$/;
// VCHAR, space, tab, CR, LF.
const VALUE = /^[\x21-\x7e \t\r\n]*$/;

function encodeSaslName(name: string): string {
  return name.replace(/=/g, '=3D').replace(/,/g, '=2C');
}

function decodeSaslName(text: string): string {
  if (/=(?!2C|3D)/.test(text)) throw new OAuthBearerFormatError('authzid contains a bad "=" escape');
  return text.replace(/=2C/g, ',').replace(/=3D/g, '=');
}

/** The client's message: `n,[a=authzid],` %x01 `host=` %x01 `auth=Bearer <token>` %x01 %x01. */
export function encodeClientMessage(
  token: string,
  opts: { authzid?: string | null; host?: string | null; port?: number | null } = {},
): Buffer {
  if (!B64TOKEN.test(token))
    throw new OAuthBearerFormatError('the access token contains characters a bearer token may not (RFC 6750 b64token)');
  const header = `n,${opts.authzid ? `a=${encodeSaslName(opts.authzid)}` : ''},`;
  const pairs: string[] = [];
  if (opts.host && VALUE.test(opts.host)) pairs.push(`host=${opts.host}`);
  if (opts.port) pairs.push(`port=${opts.port}`);
  pairs.push(`auth=Bearer ${token}`);
  return Buffer.from(`${header}${KVSEP}${pairs.join(KVSEP)}${KVSEP}${KVSEP}`, 'utf8');
}

export function parseClientMessage(data: Buffer): OAuthBearerClientMessage {
  const text = data.toString('utf8');
  // The GS2 header: channel binding flag, authzid, then the kvpairs.
  const first = text.indexOf(',');
  const second = first < 0 ? -1 : text.indexOf(',', first + 1);
  if (first < 0 || second < 0) throw new OAuthBearerFormatError('the message does not start with a GS2 header');
  const flag = text.slice(0, first);
  if (flag.startsWith('p=')) throw new OAuthBearerFormatError('the client asked for channel binding, which OAUTHBEARER does not provide');
  if (flag !== 'n' && flag !== 'y') throw new OAuthBearerFormatError(`unknown GS2 channel binding flag '${flag.slice(0, 16)}'`);
  const authzField = text.slice(first + 1, second);
  let authzid: string | null = null;
  if (authzField !== '') {
    if (!authzField.startsWith('a=')) throw new OAuthBearerFormatError('the GS2 authzid field must start with "a="');
    authzid = decodeSaslName(authzField.slice(2));
    if (authzid === '') authzid = null;
  }
  const rest = text.slice(second + 1);
  if (!rest.startsWith(KVSEP) || !rest.endsWith(KVSEP + KVSEP))
    throw new OAuthBearerFormatError('the key/value pairs are not framed by %x01 as RFC 7628 requires');
  const body = rest.slice(1, -2);
  const pairs = new Map<string, string>();
  for (const item of body === '' ? [] : body.split(KVSEP)) {
    const eq = item.indexOf('=');
    const key = eq < 0 ? item : item.slice(0, eq);
    const value = eq < 0 ? '' : item.slice(eq + 1);
    if (eq < 0 || !KEY.test(key)) throw new OAuthBearerFormatError('a key/value pair is malformed');
    if (!VALUE.test(value)) throw new OAuthBearerFormatError(`the value of '${key}' contains characters RFC 7628 does not allow`);
    if (pairs.has(key)) throw new OAuthBearerFormatError(`'${key}' is given twice`);
    pairs.set(key, value);
  }
  const auth = pairs.get('auth');
  let token: string | null = null;
  if (auth !== undefined && auth !== '') {
    const match = /^Bearer +(.*)$/i.exec(auth);
    if (!match) throw new OAuthBearerFormatError('the auth value is not a Bearer credential');
    if (!B64TOKEN.test(match[1]!)) throw new OAuthBearerFormatError('the bearer token is not a valid b64token');
    token = match[1]!;
  }
  return { authzid, token, pairs };
}

export function encodeServerError(error: OAuthBearerServerError): Buffer {
  const body: Record<string, string> = { status: error.status };
  if (error.scope) body.scope = error.scope;
  if (error['openid-configuration']) body['openid-configuration'] = error['openid-configuration'];
  return Buffer.from(JSON.stringify(body), 'utf8');
}

/** Reads an error challenge; null when the data is not one (no JSON object with a status). */
export function parseServerError(data: Buffer): OAuthBearerServerError | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(data.toString('utf8'));
  } catch {
    return null;
  }
  if (typeof parsed !== 'object' || parsed === null || typeof (parsed as { status?: unknown }).status !== 'string') return null;
  const p = parsed as Record<string, unknown>;
  const error: OAuthBearerServerError = { status: p.status as string };
  if (typeof p.scope === 'string') error.scope = p.scope;
  if (typeof p['openid-configuration'] === 'string') error['openid-configuration'] = p['openid-configuration'];
  return error;
}
