// The client's relay policy: the JSON file the CLI reads, and how grants match a daemon as its
// transport verified it.

import test from 'ava';
import { CredentialType, ErrorCode } from '@virtauth/core';
import { isTrustedDaemon } from '../src/client/policy.js';
import { parseRelayPolicy } from '../src/client/policy-file.js';

test("a policy file with rules, grants and rates parses to openAuth's relayPolicy", (t) => {
  const policy = parseRelayPolicy(
    JSON.stringify({
      rules: [{ driver: 'xenapi', types: ['AUTHNAME', 'PASSPHRASE'], action: 'allow' }],
      maxRequestsPerOpen: 4,
      storedCredentials: [
        {
          daemon: { transport: 'tls', host: 'hostA.example', port: 16514, fingerprint256: 'AB:CD' },
          service: 'xenapi',
          host: 'xen1.example',
        },
        { daemon: { transport: 'unix', socket: '/run/virtauth/virtauth-sock' }, service: 'xenapi', host: 'xen2.example' },
      ],
      perOrigin: { maxRequests: 10, windowMs: 60000 },
    }),
    'p.json',
  );
  t.deepEqual(policy.rules, [{ driver: 'xenapi', types: [CredentialType.AUTHNAME, CredentialType.PASSPHRASE], action: 'allow' }]);
  t.is(policy.maxRequestsPerOpen, 4);
  t.deepEqual(policy.storedCredentials![0]!.daemon, { transport: 'tls', host: 'hostA.example', port: 16514, fingerprint256: 'AB:CD' });
  t.deepEqual(policy.perOrigin, { maxRequests: 10, windowMs: 60000 });
});

test('a malformed policy file is refused whole, naming the field', (t) => {
  const refused = (doc: unknown, message: RegExp) => {
    const e = t.throws(() => parseRelayPolicy(typeof doc === 'string' ? doc : JSON.stringify(doc), 'p.json'))!;
    t.is((e as { code?: number }).code, ErrorCode.CONF_SYNTAX);
    t.regex(e.message, message);
  };
  refused('{', /relay policy 'p\.json': .*JSON/);
  refused({ storedCredential: [] }, /policy: unknown key 'storedCredential'/);
  refused(
    { storedCredentials: [{ daemon: { transport: 'unix', socket: '/s' }, service: 'xenapi', host: 'default' }] },
    /storedCredentials\[0\]\.host: -default entries never answer relayed requests/,
  );
  refused(
    { storedCredentials: [{ daemon: { transport: 'tcp', host: 'h' }, service: 'xenapi', host: 'h' }] },
    /storedCredentials\[0\]\.daemon\.transport: expected 'unix', 'tls' or 'ssh'/,
  );
  refused({ rules: [{ action: 'maybe' }] }, /rules\[0\]\.action: expected 'allow' or 'deny'/);
  refused({ rules: [{ action: 'allow', types: ['PASSWORD'] }] }, /rules\[0\]\.types\[0\]: expected a credential type name/);
  refused({ perOrigin: { maxRequests: 0, windowMs: 1 } }, /perOrigin\.maxRequests: expected a positive integer/);
});

test('a grant matches the daemon only as its transport verified it', (t) => {
  const tls = { transport: 'tls' as const, host: 'hostA.example', port: 16514, subject: 'CN=hostA.example', fingerprint256: 'AB:CD:EF' };
  t.true(isTrustedDaemon({ transport: 'tls', host: 'HOSTA.example' }, tls));
  t.true(isTrustedDaemon({ transport: 'tls', host: 'hostA.example', port: 16514, fingerprint256: 'ab:cd:ef' }, tls));
  t.false(
    isTrustedDaemon({ transport: 'tls', host: 'hostA.example', fingerprint256: 'AB:CD:00' }, tls),
    'a pinned certificate must be the one presented',
  );
  t.false(isTrustedDaemon({ transport: 'tls', host: 'hostA.example', port: 16515 }, tls));
  t.false(isTrustedDaemon({ transport: 'tls', host: 'hostA.example' }, null), 'nothing verified (plain TCP, no_verify=1) matches nothing');
  t.false(isTrustedDaemon({ transport: 'unix', socket: '/run/a' }, { transport: 'unix', socket: '/run/b' }));
  t.true(isTrustedDaemon({ transport: 'unix', socket: '/run/./a' }, { transport: 'unix', socket: '/run/a' }));
  t.false(isTrustedDaemon({ transport: 'unix', socket: '/run/a' }, tls));
  const ssh = { transport: 'ssh' as const, host: 'hostA', port: 22, hostKey: 'SHA256:abc' };
  t.true(isTrustedDaemon({ transport: 'ssh', host: 'hostA', hostKey: 'SHA256:abc' }, ssh));
  t.false(isTrustedDaemon({ transport: 'ssh', host: 'hostA', hostKey: 'SHA256:abd' }, ssh));
});
