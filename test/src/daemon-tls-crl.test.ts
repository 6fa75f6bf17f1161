// crl_file: a client certificate the CA has revoked is refused at the TLS handshake, as libvirtd
// refuses it; one that is not revoked still gets in. The revocation is real: certtool signs a CRL.

import { hostname } from 'node:os';
import { CredentialType, ErrorCode, VirError, type ConnectAuth } from '@virtauth/core';
import { openAuth } from 'virtauth';
import { TestPki, interopTest } from './peers/index.js';
import { TestVirtauthd } from './sasl-support.js';

const alicePassword = 'alice-Pa55-crl';

function aliceAuth(): ConnectAuth {
  return {
    credTypes: [CredentialType.AUTHNAME, CredentialType.PASSPHRASE],
    callback: (creds) => {
      for (const c of creds) c.result = c.type === CredentialType.AUTHNAME ? 'alice' : alicePassword;
    },
  };
}

interopTest('crl_file: a revoked client certificate is refused at the handshake; the others are served', ['certtool'], async (t) => {
  const pki = await TestPki.create();
  t.teardown(() => pki.remove());
  const revoked = await pki.revokedClient();
  const daemon = await TestVirtauthd.start({
    users: { alice: alicePassword },
    listenTls: true,
    pki,
    settings: { crl_file: revoked.crlFile },
  });
  t.teardown(() => daemon.stop());

  const error = await t.throwsAsync(openAuth(daemon.uri('tls', { pkipath: revoked.client.pkiPath }), aliceAuth()), {
    instanceOf: VirError,
  });
  t.is(error!.code, ErrorCode.SYSTEM_ERROR);
  t.is(daemon.events('auth.sasl.succeeded').length, 0, 'the revoked client never reached authentication');
  t.true(daemon.events('tls.handshake.failed').length > 0, 'the daemon logs the refused handshake');

  const conn = await openAuth(daemon.uri('tls'), aliceAuth());
  t.is(await conn.getHostname(), hostname());
  await conn.close();

  // The same certificate without the CRL is accepted: the revocation is what refused it.
  const withoutCrl = await TestVirtauthd.start({ users: { alice: alicePassword }, listenTls: true, pki });
  t.teardown(() => withoutCrl.stop());
  const revokedConn = await openAuth(withoutCrl.uri('tls', { pkipath: revoked.client.pkiPath }), aliceAuth());
  t.is(await revokedConn.getHostname(), hostname());
  await revokedConn.close();
});

interopTest('crl_file that cannot be read stops the daemon, naming it', ['certtool'], async (t) => {
  const pki = await TestPki.create();
  t.teardown(() => pki.remove());
  const error = await t.throwsAsync(TestVirtauthd.start({ listenTls: true, pki, settings: { crl_file: '/nonexistent/crl.pem' } }), {
    instanceOf: VirError,
  });
  t.regex(error!.message, /Cannot read TLS certificate revocation list '\/nonexistent\/crl\.pem'/);
});
