// Channel binding over real loopback TLS connections, with self-signed certificates made by
// openssl in a temporary directory.

import test from 'ava';
import { execFileSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { once } from 'node:events';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls, { type TLSSocket } from 'node:tls';
import {
  CredentialType,
  makeCredentialRequester,
  SaslAuthenticationError,
  type ChannelBinding,
  type SaslClientContext,
  type SaslClientSession,
  type SaslServerSession,
} from '@virtauth/core';
import { channelBindingFor, serverEndPointHash, TLS_EXPORTER_LABEL, tlsServerEndPointData } from '../src/sasl/channel-binding.js';
import { ScramSha256PlusMechanism } from '../src/sasl/scram-sha-256-plus.js';
import { InMemoryUserDatabase } from '../src/userdb/in-memory-user-database.js';

interface TestCertificate {
  cert: string;
  key: string;
  der: Buffer;
}

const workDir = mkdtempSync(join(tmpdir(), 'virtauth-cb-'));
test.after.always(() => rmSync(workDir, { recursive: true, force: true }));

function makeCertificate(name: string, keyArgs: string[], signArgs: string[] = []): TestCertificate {
  const keyFile = join(workDir, `${name}.key`);
  const certFile = join(workDir, `${name}.pem`);
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      ...keyArgs,
      ...signArgs,
      '-nodes',
      '-keyout',
      keyFile,
      '-out',
      certFile,
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=DNS:localhost',
      '-days',
      '2',
    ],
    { stdio: 'pipe' },
  );
  const cert = readFileSync(certFile, 'utf8');
  return { cert, key: readFileSync(keyFile, 'utf8'), der: new X509Certificate(cert).raw };
}

const ecdsaP256 = makeCertificate('p256', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], ['-sha256']);
const ecdsaP384 = makeCertificate('p384', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384'], ['-sha384']);

interface Connection {
  client: TLSSocket;
  server: TLSSocket;
  close(): Promise<void>;
}

async function connect(certificate: TestCertificate, maxVersion: tls.SecureVersion): Promise<Connection> {
  const server = tls.createServer({ cert: certificate.cert, key: certificate.key, maxVersion });
  const accepted = once(server, 'secureConnection') as Promise<[TLSSocket]>;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  const client = tls.connect({ port, host: '127.0.0.1', servername: 'localhost', ca: certificate.cert, maxVersion });
  await once(client, 'secureConnect');
  const [serverSocket] = await accepted;
  return {
    client,
    server: serverSocket,
    close: async () => {
      client.destroy();
      serverSocket.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

test('TLS 1.3: tls-exporter, identical on both ends, empty context equals no context, unique per connection', async (t) => {
  const first = await connect(ecdsaP256, 'TLSv1.3');
  const second = await connect(ecdsaP256, 'TLSv1.3');
  try {
    t.is(first.client.getProtocol(), 'TLSv1.3');
    const clientSide = channelBindingFor(first.client, 'client');
    const serverSide = channelBindingFor(first.server, 'server');
    t.is(clientSide?.type, 'tls-exporter');
    t.is(clientSide?.data.length, 32);
    t.deepEqual(clientSide, serverSide);
    // RFC 8446 §7.5: in TLS 1.3 a zero-length context and an absent one derive the same secret.
    // (@types/node makes the context mandatory; node treats `undefined` as "no context".)
    t.deepEqual(first.client.exportKeyingMaterial(32, TLS_EXPORTER_LABEL, undefined as unknown as Buffer), clientSide!.data);
    t.notDeepEqual(channelBindingFor(second.client, 'client')!.data, clientSide!.data);
  } finally {
    await first.close();
    await second.close();
  }
});

test('TLS 1.2: tls-server-end-point is the certificate hash, identical on both ends', async (t) => {
  for (const [certificate, hash] of [
    [ecdsaP256, 'sha256'],
    [ecdsaP384, 'sha384'],
  ] as const) {
    const connection = await connect(certificate, 'TLSv1.2');
    try {
      t.is(connection.client.getProtocol(), 'TLSv1.2');
      const expected: ChannelBinding = { type: 'tls-server-end-point', data: createHash(hash).update(certificate.der).digest() };
      t.deepEqual(channelBindingFor(connection.client, 'client'), expected);
      t.deepEqual(channelBindingFor(connection.server, 'server'), expected);
    } finally {
      await connection.close();
    }
  }
});

test('no binding before the handshake has completed', (t) => {
  const socket = new tls.TLSSocket(new net.Socket());
  t.is(channelBindingFor(socket, 'client'), null);
  socket.destroy();
});

test('tls-server-end-point hash choice (RFC 5929 §4.1)', (t) => {
  t.is(serverEndPointHash(ecdsaP256.der), 'sha256');
  t.is(serverEndPointHash(ecdsaP384.der), 'sha384');
  // SHA-1 signatures are upgraded to SHA-256.
  t.is(serverEndPointHash(makeCertificate('rsa-sha1', ['-newkey', 'rsa:1024'], ['-sha1']).der), 'sha256');
  t.is(serverEndPointHash(makeCertificate('rsa-sha512', ['-newkey', 'rsa:1024'], ['-sha512']).der), 'sha512');
  // RSASSA-PSS carries its hash in the algorithm parameters.
  t.is(
    serverEndPointHash(makeCertificate('rsa-pss', ['-newkey', 'rsa:1024'], ['-sigopt', 'rsa_padding_mode:pss', '-sha384']).der),
    'sha384',
  );
  // Ed25519 has no separate hash: RFC 5929 defines no binding for it.
  const ed25519 = makeCertificate('ed25519', ['-newkey', 'ed25519']);
  t.is(serverEndPointHash(ed25519.der), null);
  t.is(tlsServerEndPointData(ed25519.der), null);
  t.throws(() => serverEndPointHash(Buffer.from('not a certificate')));
});

test('SCRAM-SHA-256-PLUS over a real TLS 1.3 connection; a relayed exchange is caught', async (t) => {
  const users = new InMemoryUserDatabase();
  await users.setPassword('alice', 'pw for alice');
  const mech = new ScramSha256PlusMechanism();
  const direct = await connect(ecdsaP256, 'TLSv1.3');
  const other = await connect(ecdsaP256, 'TLSv1.3');
  try {
    const clientFor = (binding: ChannelBinding | null): SaslClientSession => {
      const auth = {
        credTypes: [CredentialType.AUTHNAME, CredentialType.PASSPHRASE],
        callback: (creds: { type: number; result: string | null }[]) => {
          for (const c of creds) c.result = c.type === CredentialType.AUTHNAME ? 'alice' : 'pw for alice';
        },
      };
      const ctx: SaslClientContext = {
        requestCredentials: makeCredentialRequester([], auth),
        auth,
        service: 'libvirt',
        host: 'localhost',
        transport: { kind: 'tls', secure: true },
        channelBinding: binding,
        channelBindingPolicy: 'require',
        serverMechanisms: ['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256'],
        maxIterations: 100_000,
      };
      return mech.createClient(ctx);
    };
    const serverFor = (binding: ChannelBinding | null): SaslServerSession =>
      mech.createServer({ users, transport: { kind: 'tls', secure: true }, channelBinding: binding, serverOffersChannelBinding: true });
    const exchange = async (client: SaslClientSession, server: SaslServerSession) => {
      const first = await server.step(await client.start());
      const final = await server.step(await client.step(first.data));
      t.true(final.done);
      await client.step(final.data);
      return server.username;
    };
    t.is(
      await exchange(clientFor(channelBindingFor(direct.client, 'client')), serverFor(channelBindingFor(direct.server, 'server'))),
      'alice',
    );
    // A relay terminating TLS: the client's connection and the server's are different channels.
    await t.throwsAsync(
      exchange(clientFor(channelBindingFor(direct.client, 'client')), serverFor(channelBindingFor(other.server, 'server'))),
      {
        instanceOf: SaslAuthenticationError,
        message: /channel-bindings-dont-match/,
      },
    );
  } finally {
    await direct.close();
    await other.close();
  }
});
