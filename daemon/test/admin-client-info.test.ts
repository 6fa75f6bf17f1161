// client-info's typed parameters: libvirt's names, types and order, then virtauth's; read from
// the session's typed ClientIdentity (unix peer, SASL, TLS, OIDC), present only when it has them.

import test from 'ava';
import { clientInfoParams, sessionFacts, ParamType } from '../src/admin/client-info.js';
import type { ClientIdentity } from '@virtauth/core';
import type { ClientSession } from '../src/session.js';

function fakeSession(kind: 'unix' | 'tcp' | 'tls', identity: ClientIdentity, extra: Partial<ClientSession> = {}): ClientSession {
  return {
    identity,
    transport: { kind, secure: kind !== 'tcp', ...(kind === 'unix' ? {} : { remoteAddress: '192.0.2.7;40000' }) },
    readOnly: false,
    readOnlyOpen: false,
    authenticated: true,
    ...extra,
  } as unknown as ClientSession;
}

test('a unix client: uid, user and group names, pid; libvirt types (int ids, boolean readonly)', (t) => {
  const params = clientInfoParams(
    sessionFacts(fakeSession('unix', { method: 'none', unixUid: 0, unixGid: 0, unixPid: 4242 }), { relayActive: false }),
  );
  t.deepEqual(
    params.map((p) => p.field),
    [
      'readonly',
      'unix_user_id',
      'unix_user_name',
      'unix_group_id',
      'unix_group_name',
      'unix_process_id',
      'virtauth_auth_method',
      'virtauth_relay_active',
    ],
  );
  t.deepEqual(params[0]!.value, { tag: ParamType.BOOLEAN, value: 0 });
  t.deepEqual(params[1]!.value, { tag: ParamType.INT, value: 0 });
  t.deepEqual(params[2]!.value, { tag: ParamType.STRING, value: 'root' });
  t.deepEqual(params[5]!.value, { tag: ParamType.INT, value: 4242 });
});

test("a TLS client with SASL and OIDC: sock_addr, sasl_user_name, tls_x509_dname, then virtauth's identities", (t) => {
  const session = fakeSession(
    'tls',
    {
      method: 'sasl',
      username: 'alice',
      tlsDistinguishedName: 'C=GB,O=virtauth,CN=client1',
      sasl: { mechanism: 'OAUTHBEARER', username: 'alice' },
      oidc: {
        issuer: 'https://idp.example',
        subject: 'u-123',
        usernameClaim: 'preferred_username',
        username: 'alice',
        groups: [],
        roles: [],
        scopes: [],
      },
    },
    { readOnlyOpen: true } as Partial<ClientSession>,
  );
  const params = clientInfoParams(sessionFacts(session, { relayActive: true, upstreamUri: 'qemu+tls://h/system' }));
  t.deepEqual(Object.fromEntries(params.map((p) => [p.field, p.value.value])), {
    readonly: 1,
    sock_addr: '192.0.2.7;40000',
    sasl_user_name: 'alice',
    tls_x509_dname: 'C=GB,O=virtauth,CN=client1',
    virtauth_auth_method: 'sasl',
    virtauth_oidc_issuer: 'https://idp.example',
    virtauth_oidc_subject: 'u-123',
    virtauth_upstream_uri: 'qemu+tls://h/system',
    virtauth_relay_active: 1,
  });
});

test('before authentication: no auth method and no user name is claimed', (t) => {
  const session = fakeSession('tcp', { username: 'mallory' }, { authenticated: false } as Partial<ClientSession>);
  const fields = clientInfoParams(sessionFacts(session, { relayActive: false })).map((p) => p.field);
  t.false(fields.includes('virtauth_auth_method'));
  t.false(fields.includes('sasl_user_name'));
  t.true(fields.includes('sock_addr'));
});

test('a unix peer from the typed identity: its ids, pid and the user name it already carries', (t) => {
  const unix = { uid: 64123, gid: 0, groups: [], pid: 77, processStartTime: null, userName: 'vadm-typed' };
  const facts = sessionFacts(fakeSession('unix', { method: 'polkit', unix, unixUid: 64123, unixGid: 0, unixPid: 77 }), {
    relayActive: false,
  });
  const values = Object.fromEntries(clientInfoParams(facts).map((p) => [p.field, p.value.value]));
  t.like(values, {
    unix_user_id: 64123,
    unix_user_name: 'vadm-typed',
    unix_group_id: 0,
    unix_process_id: 77,
    virtauth_auth_method: 'polkit',
  });
  t.false('virtauth_oidc_issuer' in values, 'no OIDC identity, no OIDC parameters');
});
