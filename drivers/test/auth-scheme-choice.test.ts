import test from 'ava';
import { AuthType, type AuthProvider } from '@virtauth/core';
import { preferredScheme } from '../src/remote/remote-driver.js';

const client = { authenticate: async () => {} };
const none: AuthProvider = { type: AuthType.NONE, name: 'none', priority: 0, client };
const sasl: AuthProvider = { type: AuthType.SASL, name: 'sasl', priority: 300, client };
const polkit: AuthProvider = { type: AuthType.POLKIT, name: 'polkit', priority: 200, client };
const hmac: AuthProvider = { type: 0x484d, name: 'hmac', priority: 250, client };
const unranked: AuthProvider = { type: 77, name: 'unranked', client };
const serverOnly: AuthProvider = { type: 78, name: 'server-only', priority: 900, server: { procedures: {} } };

test('a client picks the offered scheme with the highest priority, third parties included', (t) => {
  const registered = [none, sasl, polkit, hmac, unranked, serverOnly];
  t.is(preferredScheme(registered, [AuthType.NONE, AuthType.POLKIT, 0x484d]), 0x484d);
  t.is(preferredScheme(registered, [0x484d, AuthType.SASL]), AuthType.SASL);
  t.is(preferredScheme(registered, [AuthType.NONE, 77]), 77, 'a provider without a priority ranks above none');
  t.is(preferredScheme(registered, [77, AuthType.POLKIT]), AuthType.POLKIT, '... and below polkit');
  t.is(preferredScheme(registered, [78, AuthType.NONE]), AuthType.NONE, 'a provider without a client half is never chosen');
  t.is(preferredScheme(registered, [99]), undefined, 'an unregistered scheme is never chosen');
  t.is(preferredScheme([none, sasl, polkit], [0x484d]), undefined, 'nor one whose plugin this client lacks');
});

test("schemes of equal priority go in the server's order", (t) => {
  const a: AuthProvider = { type: 90, name: 'a', priority: 250, client };
  const b: AuthProvider = { type: 91, name: 'b', priority: 250, client };
  t.is(preferredScheme([a, b], [91, 90]), 91);
  t.is(preferredScheme([a, b], [90, 91]), 90);
});
