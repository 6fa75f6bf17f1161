// tls_allowed_dn_list without a TLS peer: the DN as libvirt writes it, and the glob match.

import test from 'ava';
import type tls from 'node:tls';
import { clientDistinguishedName, tlsClientAllowed } from '../src/index.js';

const socketWithSubject = (subject: string | null) =>
  ({ getPeerX509Certificate: () => (subject === null ? undefined : { subject }) }) as unknown as tls.TLSSocket;

test("the client certificate's subject is written C=..,O=..,CN=.., in the certificate's order", (t) => {
  t.is(clientDistinguishedName(socketWithSubject('C=GB\nO=virtauth\nCN=client1')), 'C=GB,O=virtauth,CN=client1');
  t.is(clientDistinguishedName(socketWithSubject(null)), '');
});

test('tls_allowed_dn_list: unset lets every certificate in; a list lets in only whole DNs a glob matches', (t) => {
  const dn = 'C=GB,O=virtauth,CN=client1';
  t.true(tlsClientAllowed(null, dn));
  t.true(tlsClientAllowed([dn], dn));
  t.true(tlsClientAllowed(['C=GB,O=virtauth,CN=*'], dn));
  t.true(tlsClientAllowed(['C=XX,*', 'C=GB,O=virtauth,CN=client?'], dn));
  t.false(tlsClientAllowed([], dn), 'an empty list lets no one in');
  t.false(tlsClientAllowed(['C=GB,O=virtauth,CN=client'], dn), 'a prefix is not a match');
  t.false(tlsClientAllowed(['CN=client1'], dn), 'a suffix is not a match');
  t.false(tlsClientAllowed(['c=gb,o=virtauth,cn=client1'], dn), "matching is case-sensitive, as libvirt's");
  t.false(tlsClientAllowed(['C=GB,O=virtauth,CN=client1'], 'C=GB,O=virtauth,CN=client1,OU=x'));
  t.false(tlsClientAllowed(['C=GB,O=virtauth,CN=client1'], ''), 'no certificate subject');
});
