// The SCRAM client keeps SaltedPassword per (password, salt, iteration count): a second login with
// the same password skips PBKDF2, and a different password is never answered from the cache.

import test from 'ava';
import { CredentialType, SaslAuthenticationError, makeCredentialRequester, type SaslClientContext } from '@virtauth/core';
import { ScramSha256Mechanism } from '../src/sasl/scram-sha-256.js';
import { InMemoryUserDatabase } from '../src/userdb/in-memory-user-database.js';

// Slow enough that PBKDF2 dominates a login by far, however loaded the machine.
const ITERATIONS = 400_000;

function clientContext(password: string): SaslClientContext {
  const auth = {
    credTypes: [CredentialType.AUTHNAME, CredentialType.PASSPHRASE],
    callback: (creds: { type: number; result: string | null }[]) => {
      for (const c of creds) c.result = c.type === CredentialType.AUTHNAME ? 'alice' : password;
    },
  };
  return {
    requestCredentials: makeCredentialRequester([], auth),
    auth,
    service: 'libvirt',
    host: 'hostA',
    transport: { kind: 'unix', secure: true },
    channelBinding: null,
    channelBindingPolicy: 'prefer',
    serverMechanisms: ['SCRAM-SHA-256'],
    maxIterations: 1_000_000,
  };
}

async function login(mechanism: ScramSha256Mechanism, users: InMemoryUserDatabase, password: string): Promise<number> {
  const started = performance.now();
  const client = mechanism.createClient(clientContext(password));
  const server = mechanism.createServer({
    users,
    transport: { kind: 'unix', secure: true },
    channelBinding: null,
    serverOffersChannelBinding: false,
  });
  const first = await server.step(await client.start());
  const final = await server.step(await client.step(first.data));
  await client.step(final.data);
  if (!client.complete || server.username !== 'alice') throw new Error('the exchange did not complete');
  return performance.now() - started;
}

test('a repeated login skips PBKDF2; another password is not answered from the cache', async (t) => {
  const users = new InMemoryUserDatabase({ iterations: ITERATIONS });
  await users.setPassword('alice', 'cache test password');
  const mechanism = new ScramSha256Mechanism();

  const first = await login(mechanism, users, 'cache test password');
  const second = await login(mechanism, users, 'cache test password');
  t.true(second * 5 < first, `first login ${first.toFixed(1)} ms, second ${second.toFixed(1)} ms`);

  await t.throwsAsync(login(mechanism, users, 'cache test passworD'), { instanceOf: SaslAuthenticationError, message: /invalid-proof/ });

  // A new password means a new salt: the cached entry for the old one is of no use.
  await users.setPassword('alice', 'cache test password 2');
  await t.throwsAsync(login(mechanism, users, 'cache test password'), { instanceOf: SaslAuthenticationError, message: /invalid-proof/ });
  t.true((await login(mechanism, users, 'cache test password 2')) > 0);
});
