// Which admin socket a URI names, as virt-admin resolves it: ?socket= wins; virtauthd's own
// socket for virtauthd:///system; libvirt's names for libvirt's daemons; anything else refused.

import test from 'ava';
import { adminSocketPath, paramsObject } from '../src/admin.js';

test('admin URIs resolve to the socket virt-admin would use', (t) => {
  t.is(adminSocketPath('virtauthd:///system?socket=/tmp/x/virtauth-admin-sock'), '/tmp/x/virtauth-admin-sock');
  t.is(adminSocketPath('libvirtd:///system'), '/run/libvirt/libvirt-admin-sock');
  t.is(adminSocketPath('virtqemud:///system'), '/run/libvirt/virtqemud-admin-sock');
  t.regex(adminSocketPath('virtauthd:///system'), /\/virtauth-admin-sock$/);
  t.throws(() => adminSocketPath('virtauthd:///elsewhere'), { message: /must name \/system or \/session/ });
  t.throws(() => adminSocketPath('http:///system'), { message: /unsupported admin URI scheme 'http'/ });
  t.throws(() => adminSocketPath('not a uri at all'));
});

test('typed parameters become a plain object; booleans stay booleans', (t) => {
  t.deepEqual(
    paramsObject([
      { field: 'readonly', value: { tag: 6, value: 1 } },
      { field: 'unix_user_id', value: { tag: 1, value: 0 } },
      { field: 'sasl_user_name', value: { tag: 7, value: 'alice' } },
    ]),
    { readonly: true, unix_user_id: 0, sasl_user_name: 'alice' },
  );
});
