// What virt-admin's client-info reports about a connection: libvirt's typed parameters
// (readonly, sock_addr, sasl_user_name, tls_x509_dname, unix_*), then virtauth's own identities
// as extra parameters. ClientFacts is the seam: it is read from the session's typed identity
// (unix peer, SASL, TLS, OIDC) and the upstream URI the admin extension saw during CONNECT_OPEN.

import { readFileSync } from 'node:fs';
import type { admin } from '@virtauth/core';
import type { ClientSession } from '../session.js';

export type TypedParam = admin.AdminTypedParam;

/** virTypedParameterType values. */
export const ParamType = { INT: 1, UINT: 2, LLONG: 3, ULLONG: 4, DOUBLE: 5, BOOLEAN: 6, STRING: 7 } as const;

export const intParam = (field: string, value: number): TypedParam => ({ field, value: { tag: ParamType.INT, value } });
export const uintParam = (field: string, value: number): TypedParam => ({ field, value: { tag: ParamType.UINT, value } });
export const boolParam = (field: string, value: boolean): TypedParam => ({
  field,
  value: { tag: ParamType.BOOLEAN, value: value ? 1 : 0 },
});
export const stringParam = (field: string, value: string): TypedParam => ({ field, value: { tag: ParamType.STRING, value } });

/** virClientTransport: SSH clients reach the daemon through its unix socket, so they are UNIX. */
export const ClientTransport = { UNIX: 0, TCP: 1, TLS: 2 } as const;

export interface ClientFacts {
  readOnly: boolean;
  transport: number;
  /** `address;port` of a TCP or TLS peer, as libvirt writes it. */
  sockAddr?: string;
  saslUserName?: string;
  tlsDistinguishedName?: string;
  unixUid?: number;
  unixGid?: number;
  unixPid?: number;
  /** The unix user's name when the identity already carries it (else it is looked up). */
  unixUserName?: string;
  selinuxContext?: string;
  /** virtauth: the auth scheme that admitted the client (`none`, `sasl`, `polkit`), or unset before auth. */
  authMethod?: string;
  oidcIssuer?: string;
  oidcSubject?: string;
  /** virtauth: the URI this daemon opened upstream for the client (a gateway/remote connection). */
  upstreamUri?: string;
  /** virtauth: whether the client enabled the credential relay. */
  relayActive?: boolean;
}

/** Facts about a daemon client, from its typed identity and what the admin extension recorded. */
export function sessionFacts(session: ClientSession, seen: { upstreamUri?: string; relayActive: boolean }): ClientFacts {
  const id = session.identity;
  const kind = session.transport.kind;
  const facts: ClientFacts = {
    readOnly: session.readOnly || session.readOnlyOpen,
    transport: kind === 'tls' ? ClientTransport.TLS : kind === 'tcp' ? ClientTransport.TCP : ClientTransport.UNIX,
    relayActive: seen.relayActive,
  };
  if (kind === 'tcp' || kind === 'tls') {
    if (session.transport.remoteAddress) facts.sockAddr = session.transport.remoteAddress;
  }
  const saslUser = id.sasl?.username ?? (id.method === 'sasl' ? id.username : undefined);
  if (saslUser !== undefined) facts.saslUserName = saslUser;
  if (id.tlsDistinguishedName) facts.tlsDistinguishedName = id.tlsDistinguishedName;
  const unixUid = id.unix?.uid ?? id.unixUid;
  const unixGid = id.unix?.gid ?? id.unixGid;
  const unixPid = id.unix?.pid ?? id.unixPid;
  if (unixUid !== undefined) facts.unixUid = unixUid;
  if (unixGid !== undefined) facts.unixGid = unixGid;
  if (unixPid !== undefined) facts.unixPid = unixPid;
  if (id.unix?.userName !== undefined) facts.unixUserName = id.unix.userName;
  if (session.authenticated && id.method) facts.authMethod = id.method;
  if (id.oidc) {
    facts.oidcIssuer = id.oidc.issuer;
    facts.oidcSubject = id.oidc.subject;
  }
  if (seen.upstreamUri) facts.upstreamUri = seen.upstreamUri;
  return facts;
}

/** Names of uids and gids from the account files (libvirt asks NSS; files cover local accounts). */
function accountName(file: '/etc/passwd' | '/etc/group', id: number): string | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const fields = line.split(':');
    if (fields.length >= 3 && Number(fields[2]) === id && fields[2] !== '') return fields[0];
  }
  return undefined;
}

/** libvirt's client-info parameters in libvirt's order, then virtauth's (prefixed `virtauth_`). */
export function clientInfoParams(f: ClientFacts): TypedParam[] {
  const out: TypedParam[] = [boolParam('readonly', f.readOnly)];
  if (f.sockAddr !== undefined) out.push(stringParam('sock_addr', f.sockAddr));
  if (f.saslUserName !== undefined) out.push(stringParam('sasl_user_name', f.saslUserName));
  if (f.tlsDistinguishedName !== undefined) out.push(stringParam('tls_x509_dname', f.tlsDistinguishedName));
  if (f.unixUid !== undefined) {
    out.push(intParam('unix_user_id', f.unixUid));
    const user = f.unixUserName ?? accountName('/etc/passwd', f.unixUid);
    if (user !== undefined) out.push(stringParam('unix_user_name', user));
  }
  if (f.unixGid !== undefined) {
    out.push(intParam('unix_group_id', f.unixGid));
    const group = accountName('/etc/group', f.unixGid);
    if (group !== undefined) out.push(stringParam('unix_group_name', group));
  }
  if (f.unixPid !== undefined) out.push(intParam('unix_process_id', f.unixPid));
  if (f.selinuxContext !== undefined) out.push(stringParam('selinux_context', f.selinuxContext));
  if (f.authMethod !== undefined) out.push(stringParam('virtauth_auth_method', f.authMethod));
  if (f.oidcIssuer !== undefined) out.push(stringParam('virtauth_oidc_issuer', f.oidcIssuer));
  if (f.oidcSubject !== undefined) out.push(stringParam('virtauth_oidc_subject', f.oidcSubject));
  if (f.upstreamUri !== undefined) out.push(stringParam('virtauth_upstream_uri', f.upstreamUri));
  if (f.relayActive !== undefined) out.push(boolParam('virtauth_relay_active', f.relayActive));
  return out;
}
