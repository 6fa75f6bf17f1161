// Opaque OAUTHBEARER tokens checked by introspection (RFC 7662) against a scripted issuer on
// loopback: an answer is believed only for this server's audience and an unexpired token, even
// when the issuer says `active: true` (issue 10, item 8).

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import test from 'ava';
import { BearerTokenValidator } from '../src/oauthbearer/validator.js';

const AUDIENCE = 'https://virtauthd.example';
const OPAQUE_TOKEN = 'opaque-token-not-a-jwt';

/** An issuer whose introspection endpoint answers whatever the test sets, and counts the asks. */
async function scriptedIssuer(): Promise<{ issuer: string; answer: Record<string, unknown>; asked: number; close(): Promise<void> }> {
  const state = { issuer: '', answer: {} as Record<string, unknown>, asked: 0, close: async () => {} };
  const server: Server = createServer((req, res) => {
    const send = (body: unknown) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.url === '/.well-known/openid-configuration') {
      send({
        issuer: state.issuer,
        introspection_endpoint: `${state.issuer}/introspect`,
        token_endpoint: `${state.issuer}/token`,
        jwks_uri: `${state.issuer}/jwks`,
      });
      return;
    }
    if (req.url === '/introspect' && req.method === 'POST') {
      req.resume();
      req.on('end', () => {
        state.asked++;
        send(state.answer);
      });
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  state.close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  return state;
}

async function setup() {
  const idp = await scriptedIssuer();
  const validator = new BearerTokenValidator({
    issuer: idp.issuer,
    audience: AUDIENCE,
    validation: 'introspection',
    introspectionClientId: 'virtauthd',
    introspectionClientSecret: 'introspector-secret',
    allowInsecureHttp: true,
    clockToleranceSec: 30,
  });
  return { idp, validator };
}

const now = () => Math.floor(Date.now() / 1000);

test('introspection: an active token for this audience, unexpired, names its user', async (t) => {
  const { idp, validator } = await setup();
  t.teardown(() => idp.close());
  idp.answer = {
    active: true,
    iss: idp.issuer,
    aud: [AUDIENCE, 'other'],
    sub: 'alice',
    exp: now() + 300,
    token_type: 'Bearer',
    scope: 'libvirt',
  };
  const verdict = await validator.validate(OPAQUE_TOKEN);
  t.like(verdict, { ok: true, username: 'alice' });
  t.is(idp.asked, 1);
});

test('introspection: active:true for another audience, or for none, is refused', async (t) => {
  const { idp, validator } = await setup();
  t.teardown(() => idp.close());
  for (const aud of ['https://other-service.example', ['a', 'b'], undefined]) {
    idp.answer = { active: true, iss: idp.issuer, sub: 'alice', exp: now() + 300, ...(aud === undefined ? {} : { aud }) };
    const verdict = await validator.validate(OPAQUE_TOKEN);
    t.false(verdict.ok, `aud ${JSON.stringify(aud)}`);
    if (!verdict.ok) t.regex(verdict.reason, new RegExp(`audience .* does not include ${AUDIENCE.replace(/\./g, '\\.')}`));
  }
});

test('introspection: active:true with an exp in the past (beyond the clock tolerance) is refused', async (t) => {
  const { idp, validator } = await setup();
  t.teardown(() => idp.close());
  idp.answer = { active: true, iss: idp.issuer, aud: AUDIENCE, sub: 'alice', exp: now() - 3600 };
  const verdict = await validator.validate(OPAQUE_TOKEN);
  t.false(verdict.ok);
  if (!verdict.ok) t.regex(verdict.reason, /the token expired at/);
  // Within the tolerance it is still accepted: the check is the expiry, not any exp at all.
  idp.answer = { ...idp.answer, exp: now() - 5 };
  t.like(await validator.validate(OPAQUE_TOKEN), { ok: true, username: 'alice' });
});
