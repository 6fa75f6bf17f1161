// TLS channel binding between virtauth's client and virtauthd (SCRAM-SHA-256-PLUS), over real
// TLS connections made with a real PKI: which mechanism wins, `channel_binding=require`, binding
// data altered by a mechanism plugin, and a man in the middle relaying between two TLS sessions.
// Also where PLAIN is offered, and PLAIN with a real Cyrus client.

import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import tls from 'node:tls';

import type { ExecutionContext } from 'ava';

import {
  CredentialType,
  ErrorCode,
  ErrorDomain,
  SASL_MECHANISM,
  VirError,
  type ConnectAuth,
  type SaslClientContext,
  type SaslMechanism,
} from '@virtauth/core';
import { ScramSha256PlusMechanism } from '@virtauth/providers';
import { createClientContainer, openAuth } from 'virtauth';

import { TestPki, interopTest, runPythonLibvirt } from './peers/index.js';
import { TestVirtauthd } from './sasl-support.js';
import { RawClient, saslInitOutcome } from './sasl-test-helpers.js';

const alicePassword = 'alice-Pa55-b1nd1ng';
const serverRefusal = { code: ErrorCode.AUTH_FAILED, domain: ErrorDomain.RPC, message: 'authentication failed: authentication failed' };

function aliceAuth(): { auth: ConnectAuth; calls: number } {
  const state = {
    calls: 0,
    auth: {
      credTypes: [CredentialType.AUTHNAME, CredentialType.PASSPHRASE],
      callback: (creds) => {
        state.calls++;
        for (const c of creds) c.result = c.type === CredentialType.AUTHNAME ? 'alice' : alicePassword;
      },
    } satisfies ConnectAuth,
  };
  return state;
}

/** Opens, reads the host name and closes; returns the mechanism virtauthd logged for that login. */
async function loginMechanism(
  t: ExecutionContext,
  daemon: TestVirtauthd,
  uri: string,
  options: Parameters<typeof openAuth>[3] = {},
): Promise<unknown> {
  const before = daemon.events('auth.sasl.succeeded').length;
  const conn = await openAuth(uri, aliceAuth().auth, 0, options);
  try {
    t.is(await conn.getHostname(), hostname());
  } finally {
    await conn.close();
  }
  const logins = daemon.events('auth.sasl.succeeded').slice(before);
  t.is(logins.length, 1, daemon.logText());
  return logins[0]?.mechanism;
}

async function startDaemon(
  t: ExecutionContext,
  settings: Record<string, string | number | readonly string[]> = {},
): Promise<{ daemon: TestVirtauthd; pki: TestPki }> {
  const pki = await TestPki.create();
  t.teardown(() => pki.remove());
  const daemon = await TestVirtauthd.start({ users: { alice: alicePassword }, listenTls: true, listenTcp: true, pki, settings });
  t.teardown(() => daemon.stop());
  return { daemon, pki };
}

interopTest(
  'SCRAM-SHA-256-PLUS wins over TLS when both ends can; unix gets SCRAM-SHA-256; PLAIN is never offered in the clear',
  ['certtool'],
  async (t) => {
    const { daemon } = await startDaemon(t);

    const offered = async (uri: string) => {
      const client = await RawClient.connect(uri);
      try {
        await client.authList();
        return await client.saslInit();
      } finally {
        client.close();
      }
    };
    t.is(await offered(daemon.uri('unix')), 'SCRAM-SHA-256,PLAIN', 'no -PLUS without TLS');
    t.is(await offered(daemon.uri('tls')), 'SCRAM-SHA-256-PLUS,SCRAM-SHA-256,PLAIN');
    t.deepEqual(
      await saslInitOutcome(daemon.uri('tcp')),
      { authList: [1], failure: serverRefusal },
      'plain TCP offers nothing, PLAIN least of all',
    );

    t.is(await loginMechanism(t, daemon, daemon.uri('tls')), 'SCRAM-SHA-256-PLUS');
    t.is(await loginMechanism(t, daemon, daemon.uri('tls', { channel_binding: 'require' })), 'SCRAM-SHA-256-PLUS');
    t.is(await loginMechanism(t, daemon, daemon.uri('tls', { channel_binding: 'disable' })), 'SCRAM-SHA-256');
    t.is(await loginMechanism(t, daemon, daemon.uri('unix')), 'SCRAM-SHA-256');
    t.is(
      await loginMechanism(t, daemon, daemon.uri('tls', { auth: 'sasl.SCRAM-SHA-256' })),
      'SCRAM-SHA-256',
      'auth=sasl.MECH overrides the preference',
    );
  },
);

interopTest(
  'channel_binding=require fails against a server without -PLUS, and on a unix socket, before asking for credentials',
  ['certtool'],
  async (t) => {
    const { daemon } = await startDaemon(t, { sasl_mech_list: ['SCRAM-SHA-256'] });

    const client = await RawClient.connect(daemon.uri('tls'));
    await client.authList();
    t.is(await client.saslInit(), 'SCRAM-SHA-256');
    client.close();

    const required = aliceAuth();
    const error = await t.throwsAsync(openAuth(daemon.uri('tls', { channel_binding: 'require' }), required.auth), { instanceOf: VirError });
    t.is(error?.code, ErrorCode.AUTH_FAILED);
    t.is(error?.domain, ErrorDomain.REMOTE);
    t.regex(error?.message ?? '', /channel binding is required, but the server does not offer SCRAM-SHA-256-PLUS/);
    t.is(required.calls, 0, 'no credential was asked for a login that could not happen');

    const overUnix = aliceAuth();
    const unixError = await t.throwsAsync(openAuth(daemon.uri('unix', { channel_binding: 'require' }), overUnix.auth), {
      instanceOf: VirError,
    });
    t.regex(unixError?.message ?? '', /channel binding is required, but the connection provides no TLS channel binding data/);
    t.is(overUnix.calls, 0);

    // Without the requirement, the client says "y" (it could bind) and the server, lacking -PLUS, accepts.
    t.is(await loginMechanism(t, daemon, daemon.uri('tls')), 'SCRAM-SHA-256');
  },
);

/** A client mechanism plugin that sends SCRAM-SHA-256-PLUS with channel binding data of its own. */
class AlteredBindingMechanism implements SaslMechanism {
  readonly name = 'SCRAM-SHA-256-PLUS';
  /** Above the real -PLUS, so the client picks this one. */
  readonly priority = 1000;
  readonly requiresSecureChannel = false;
  readonly requiresChannelBinding = true;
  private readonly real = new ScramSha256PlusMechanism();

  constructor(
    private readonly alter: (binding: NonNullable<SaslClientContext['channelBinding']>) => NonNullable<SaslClientContext['channelBinding']>,
  ) {}

  createClient(ctx: SaslClientContext) {
    return this.real.createClient({ ...ctx, channelBinding: ctx.channelBinding && this.alter(ctx.channelBinding) });
  }

  createServer(ctx: Parameters<SaslMechanism['createServer']>[0]) {
    return this.real.createServer(ctx);
  }
}

interopTest('channel binding data altered by a client mechanism plugin is refused by virtauthd', ['certtool'], async (t) => {
  const { daemon } = await startDaemon(t);
  const alterations = [
    {
      what: 'one bit flipped',
      alter: (b: { type: 'tls-exporter' | 'tls-server-end-point'; data: Buffer }) => ({
        ...b,
        data: Buffer.from(b.data.map((byte, i) => (i === 0 ? byte ^ 1 : byte))),
      }),
      reason: 'channel-bindings-dont-match',
    },
    {
      what: 'another binding type claimed',
      alter: (b: { type: 'tls-exporter' | 'tls-server-end-point'; data: Buffer }) => ({
        ...b,
        type: b.type === 'tls-exporter' ? ('tls-server-end-point' as const) : ('tls-exporter' as const),
      }),
      reason: 'unsupported-channel-binding-type',
    },
  ];
  for (const alteration of alterations) {
    const container = createClientContainer();
    container.register(SASL_MECHANISM, { useValue: new AlteredBindingMechanism(alteration.alter) });
    const error = await t.throwsAsync(openAuth(daemon.uri('tls'), aliceAuth().auth, 0, { container }), { instanceOf: VirError });
    t.like(error, serverRefusal, alteration.what);
    const failure = daemon.events('auth.sasl.failed').at(-1);
    t.regex(String(failure?.reason), new RegExp(alteration.reason), alteration.what);
  }
  // The same plugin without alteration logs in: the refusals above are the binding's doing.
  const container = createClientContainer();
  container.register(SASL_MECHANISM, { useValue: new AlteredBindingMechanism((b) => b) });
  t.is(await loginMechanism(t, daemon, daemon.uri('tls'), { container }), 'SCRAM-SHA-256-PLUS');
});

interopTest(
  'a man in the middle relaying between two TLS sessions is caught by SCRAM-SHA-256-PLUS, not by plain SCRAM',
  ['certtool'],
  async (t) => {
    const { daemon, pki } = await startDaemon(t);
    // The intruder has a certificate of its own (the client skips verification: no_verify=1) and a
    // client certificate the daemon accepts; it relays the bytes of two separate TLS sessions.
    const intruderPki = await TestPki.create();
    t.teardown(() => intruderPki.remove());
    const [intruderKey, intruderCert, ca, clientCert, clientKey] = await Promise.all(
      [intruderPki.serverKeyFile, intruderPki.serverCertFile, pki.caCertFile, pki.client.certFile, pki.client.keyFile].map((file) =>
        readFile(file),
      ),
    );
    const daemonPort = daemon.listener('tls').port!;
    for (const maxVersion of ['TLSv1.3', 'TLSv1.2'] as const) {
      const intruder = tls.createServer({ key: intruderKey, cert: intruderCert, maxVersion }, (fromClient) => {
        const toDaemon = tls.connect({
          host: '127.0.0.1',
          port: daemonPort,
          servername: 'localhost',
          ca,
          cert: clientCert,
          key: clientKey,
          maxVersion,
        });
        fromClient.pipe(toDaemon).pipe(fromClient);
        const closeBoth = () => {
          fromClient.destroy();
          toDaemon.destroy();
        };
        fromClient.on('error', closeBoth).on('close', closeBoth);
        toDaemon.on('error', closeBoth).on('close', closeBoth);
      });
      await new Promise<void>((resolve) => intruder.listen(0, '127.0.0.1', resolve));
      const port = (intruder.address() as { port: number }).port;
      const uri = (params: string) => `test+tls://localhost:${port}/default?pkipath=${pki.client.pkiPath}${params}`;
      try {
        await t.throwsAsync(
          openAuth(uri(''), aliceAuth().auth),
          { instanceOf: VirError },
          `${maxVersion}: the intruder's certificate is not trusted`,
        );

        const error = await t.throwsAsync(openAuth(uri('&no_verify=1'), aliceAuth().auth), { instanceOf: VirError });
        t.like(error, serverRefusal, maxVersion);
        t.regex(String(daemon.events('auth.sasl.failed').at(-1)?.reason), /channel-bindings-dont-match/, maxVersion);

        // Without binding, the relayed login succeeds: exactly what -PLUS exists to prevent.
        t.is(await loginMechanism(t, daemon, uri('&no_verify=1&channel_binding=disable')), 'SCRAM-SHA-256', maxVersion);
      } finally {
        await new Promise((resolve) => intruder.close(resolve));
      }
    }
  },
);

// Cyrus's PLAIN plugin ships in the package the 'sasl-scram' probe checks (libsasl2-modules).
interopTest(
  "PLAIN on secure channels: virtauth's client and python3-libvirt (Cyrus) log in with auth=sasl.PLAIN over unix and TLS",
  ['certtool', 'python3-libvirt', 'sasl-scram'],
  async (t) => {
    const { daemon } = await startDaemon(t);
    for (const transport of ['unix', 'tls'] as const) {
      t.is(await loginMechanism(t, daemon, daemon.uri(transport, { auth: 'sasl.PLAIN' })), 'PLAIN', transport);

      const before = daemon.events('auth.sasl.succeeded').length;
      const python = await runPythonLibvirt(daemon.uri(transport, { auth: 'sasl.PLAIN' }), {
        authname: 'alice',
        passphrase: alicePassword,
        commands: ['hostname'],
      });
      t.true(python.ok, `${transport}: ${JSON.stringify(python)}\n${daemon.logText()}`);
      t.deepEqual(
        daemon
          .events('auth.sasl.succeeded')
          .slice(before)
          .map((r) => r.mechanism),
        ['PLAIN'],
        transport,
      );

      const refused = await runPythonLibvirt(daemon.uri(transport, { auth: 'sasl.PLAIN' }), {
        authname: 'alice',
        passphrase: 'not-the-password',
        commands: ['hostname'],
      });
      t.like(refused, { ok: false, stage: 'open', error: serverRefusal }, transport);
    }
    t.false(daemon.logText().includes(alicePassword), 'PLAIN carries the password, the log must not');
  },
);

interopTest(
  'reconnecting resumes the TLS session: the DN allow list and channel binding still hold on resumed sessions',
  ['certtool'],
  async (t) => {
    const { daemon, pki } = await startDaemon(t, { tls_allowed_dn_list: ['C=GB,O=virtauth,CN=client1'] });
    const resumedFlags: boolean[] = [];
    for (let attempt = 0; attempt < 3; attempt++) {
      const before = daemon.events('auth.sasl.succeeded').length;
      const conn = await openAuth(daemon.uri('tls'), aliceAuth().auth);
      const socket = (conn as unknown as { transport: { tls?: tls.TLSSocket } }).transport.tls;
      resumedFlags.push(socket?.isSessionReused() ?? false);
      t.is(await conn.getHostname(), hostname());
      await conn.close();
      t.deepEqual(
        daemon
          .events('auth.sasl.succeeded')
          .slice(before)
          .map((r) => r.mechanism),
        ['SCRAM-SHA-256-PLUS'],
        `attempt ${attempt + 1}`,
      );
    }
    t.deepEqual(resumedFlags, [false, true, true]);

    // A daemon whose allow list excludes this client refuses resumed and full handshakes alike.
    const strict = await TestVirtauthd.start({
      users: { alice: alicePassword },
      listenTls: true,
      pki,
      settings: { tls_allowed_dn_list: ['C=GB,O=virtauth,CN=someone-else'] },
    });
    t.teardown(() => strict.stop());
    for (let attempt = 0; attempt < 2; attempt++) {
      await t.throwsAsync(openAuth(strict.uri('tls'), aliceAuth().auth), {
        instanceOf: VirError,
        message: /did not accept our client certificate/,
      });
    }
    t.is(strict.events('client.refused').length, 2);
  },
);
