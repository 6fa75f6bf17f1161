// OAUTHBEARER's pieces without an IdP: the RFC 7628 message format, the config keys, the issuer
// URL rules, and the server half's answers to malformed input (the IdP-backed behaviour is
// covered end to end in test/src/oidc.test.ts).

import test from 'ava';
import { CredentialType, ErrorCode, ErrorDomain, SaslAuthenticationError, VirError, credential } from '@virtauth/core';
import { checkIssuerUrl } from '../src/oauthbearer/discovery.js';
import { createOidcCredentialCallback, tokenRequestAudience } from '../src/oauthbearer/delegation.js';
import { OAuthBearerMechanism } from '../src/oauthbearer/mechanism.js';
import {
  CLIENT_ERROR_ACK,
  encodeClientMessage,
  encodeServerError,
  parseClientMessage,
  parseServerError,
} from '../src/oauthbearer/messages.js';
import { oauthBearerSettingsFrom } from '../src/oauthbearer/settings.js';

const secureUnix = { kind: 'unix' as const, secure: true };

test('client message: GS2 header, host and auth pairs framed by %x01, authzid escaped', (t) => {
  const data = encodeClientMessage('abc.DEF-123_~+/==', { authzid: 'a,b=c', host: 'server.example' });
  t.is(data.toString('latin1'), 'n,a=a=2Cb=3Dc,\x01host=server.example\x01auth=Bearer abc.DEF-123_~+/==\x01\x01');
  const parsed = parseClientMessage(data);
  t.is(parsed.authzid, 'a,b=c');
  t.is(parsed.token, 'abc.DEF-123_~+/==');
  t.is(parsed.pairs.get('host'), 'server.example');
  t.is(parseClientMessage(Buffer.from('n,,\x01auth=\x01\x01')).token, null, 'an empty auth is a discovery request');
});

test('malformed client messages are refused with a reason', (t) => {
  const bad: [string, RegExp][] = [
    ['auth=Bearer x\x01\x01', /GS2 header/],
    ['p=tls-exporter,,\x01auth=Bearer x\x01\x01', /channel binding/],
    ['n,,auth=Bearer x', /framed by %x01/],
    ['n,,\x01auth=Basic eA==\x01\x01', /not a Bearer credential/],
    ['n,,\x01auth=Bearer a b\x01\x01', /not a valid b64token/],
    ['n,,\x01host=a\x01host=b\x01auth=Bearer x\x01\x01', /'host' is given twice/],
    ['n,a=x=41,\x01auth=Bearer x\x01\x01', /bad "=" escape/],
  ];
  for (const [text, reason] of bad)
    t.throws(() => parseClientMessage(Buffer.from(text, 'latin1')), { message: reason }, JSON.stringify(text));
  t.throws(() => encodeClientMessage('has space'), { message: /b64token/ });
});

test('server error challenge: JSON with status, scope and openid-configuration; anything else is not one', (t) => {
  const json = encodeServerError({
    status: 'insufficient_scope',
    scope: 'libvirt',
    'openid-configuration': 'https://idp/.well-known/openid-configuration',
  });
  t.deepEqual(JSON.parse(json.toString()), {
    status: 'insufficient_scope',
    scope: 'libvirt',
    'openid-configuration': 'https://idp/.well-known/openid-configuration',
  });
  t.deepEqual(parseServerError(json), {
    status: 'insufficient_scope',
    scope: 'libvirt',
    'openid-configuration': 'https://idp/.well-known/openid-configuration',
  });
  t.is(parseServerError(Buffer.from('not json')), null);
  t.is(parseServerError(Buffer.from('{"scope":"x"}')), null);
});

test('config: no oauth_* key registers nothing; server and client keys are checked', (t) => {
  t.is(oauthBearerSettingsFrom(new Map([['sasl_mech_list', ['SCRAM-SHA-256']]])), null);
  const conf = (entries: Record<string, string | number | string[]>) => () => oauthBearerSettingsFrom(new Map(Object.entries(entries)));
  t.throws(conf({ oauth_issuer: 'https://idp.example' }), { instanceOf: VirError, message: /oauth_audience: is required/ });
  t.throws(conf({ oauth_client_secret: 's' }), { message: /oauth_client_secret: needs oauth_client_id/ });
  t.throws(conf({ oauth_issuer: 'https://idp.example', oauth_audience: 'x', oauth_token_validation: 'magic' }), {
    message: /expected one of auto, jwt, introspection/,
  });
  t.throws(conf({ oauth_issuer: 'https://idp.example', oauth_audience: 'x', oauth_clock_skew: 'ten' }), {
    message: /oauth_clock_skew: expected an integer/,
  });

  const options = oauthBearerSettingsFrom(
    new Map<string, string | number | string[]>(
      Object.entries({
        oauth_issuer: 'https://idp.example',
        oauth_audience: 'https://virtauthd.example',
        oauth_required_scope: 'libvirt',
        oauth_client_id: 'virtauthd-b',
        oauth_client_secret: 'secret',
        oauth_client_hosts: ['*.internal'],
      }),
    ),
  )!;
  t.like(options.server, {
    issuer: 'https://idp.example',
    audience: 'https://virtauthd.example',
    requiredScope: 'libvirt',
    usernameClaim: 'sub',
    validation: 'auto',
    clockToleranceSec: 30,
  });
  t.like(options.client?.clientFor('hv1.internal'), { issuer: 'https://idp.example', clientId: 'virtauthd-b', cachePersonTokens: false });
  t.is(options.client?.clientFor('elsewhere.example'), null);
});

test('issuers must be https; http only on loopback and only when allowed', (t) => {
  t.is(checkIssuerUrl('https://idp.example', false).host, 'idp.example');
  t.is(checkIssuerUrl('http://127.0.0.1:8080', true).port, '8080');
  t.throws(() => checkIssuerUrl('http://127.0.0.1:8080', false), { message: /plain http/ });
  t.throws(() => checkIssuerUrl('http://idp.example', true), { message: /plain http/ });
  t.throws(() => checkIssuerUrl('idp.example', true), { message: /is not a URL/ });
});

test('server half: refuses without validation settings, answers malformed input with invalid_request, then fails on the %x01', async (t) => {
  const unconfigured = new OAuthBearerMechanism({}).createServer({
    users: null as never,
    transport: secureUnix,
    channelBinding: null,
    serverOffersChannelBinding: false,
  });
  await t.throwsAsync(unconfigured.step(encodeClientMessage('abc')), {
    instanceOf: SaslAuthenticationError,
    message: /no token validation configured/,
  });

  const mechanism = new OAuthBearerMechanism({
    server: { issuer: 'https://idp.example', audience: 'https://virtauthd.example', requiredScope: 'libvirt' },
  });
  t.is(mechanism.priority, 0, 'no client configured: never preferred');
  const session = mechanism.createServer({
    users: null as never,
    transport: secureUnix,
    channelBinding: null,
    serverOffersChannelBinding: false,
  });
  const first = await session.step(Buffer.from('n,,auth=Bearer x'));
  t.false(first.done);
  t.deepEqual(parseServerError(first.data!), {
    status: 'invalid_request',
    scope: 'libvirt',
    'openid-configuration': 'https://idp.example/.well-known/openid-configuration',
  });
  const error = await t.throwsAsync(session.step(CLIENT_ERROR_ACK), { instanceOf: SaslAuthenticationError });
  t.regex(error?.reason ?? '', /^OAUTHBEARER: invalid_request: malformed client message/);
  t.is(session.username, null);
});

test('client half: refuses plain TCP, and a host without an OpenID client, before any token is obtained', async (t) => {
  const mechanism = new OAuthBearerMechanism({ client: { clientFor: () => null } });
  t.is(mechanism.priority, 400);
  const ctx = {
    requestCredentials: async () => {},
    auth: null,
    service: 'libvirt',
    host: 'hv.example',
    channelBinding: null,
    channelBindingPolicy: 'prefer' as const,
    serverMechanisms: ['OAUTHBEARER'],
    maxIterations: 1,
  };
  await t.throwsAsync(mechanism.createClient({ ...ctx, transport: { kind: 'tcp', secure: false } }).start(), {
    message: /neither a unix socket nor TLS/,
  });
  const error = await t.throwsAsync(mechanism.createClient({ ...ctx, transport: secureUnix }).start(), { instanceOf: VirError });
  t.like(error, { code: ErrorCode.AUTH_UNAVAILABLE, domain: ErrorDomain.REMOTE });
  t.regex(error?.message ?? '', /no OpenID Connect client is configured for hv\.example/);
});

test('delegation callback: token requests are recognised by their challenge; others go to the fallback, or fail without one', async (t) => {
  t.is(tokenRequestAudience(credential(CredentialType.EXTERNAL, 'p', 'oauth2-token:https://hv.example')), 'https://hv.example');
  t.is(tokenRequestAudience(credential(CredentialType.EXTERNAL, 'p', 'PolicyKit')), null);
  t.is(tokenRequestAudience(credential(CredentialType.ECHOPROMPT, 'p', 'oauth2-token:https://hv.example')), null);

  const seen: number[] = [];
  const fallback = {
    credTypes: [CredentialType.AUTHNAME],
    callback: (creds: { type: number; result: string | null }[]) => void creds.forEach((c) => (seen.push(c.type), (c.result = 'alice'))),
  };
  const client = { issuer: 'https://idp.example', clientId: 'cli', clientSecret: 's' };
  const auth = createOidcCredentialCallback({ client, audiences: ['https://hv.example/*'], fallback });
  t.deepEqual([...auth.credTypes].sort(), [CredentialType.AUTHNAME, CredentialType.EXTERNAL]);
  const name = credential(CredentialType.AUTHNAME, 'name');
  t.true(await auth.callback([name], { service: 'libvirt', host: 'h', origin: [] }));
  t.deepEqual(seen, [CredentialType.AUTHNAME]);
  t.is(name.result, 'alice');

  const refused = await t.throwsAsync(async () =>
    auth.callback([credential(CredentialType.EXTERNAL, 'p', 'oauth2-token:https://evil.example')], {
      service: 'oauth2',
      host: 'h',
      origin: [],
    }),
  );
  t.regex(refused?.message ?? '', /does not hand out tokens for https:\/\/evil\.example/);
  const alone = createOidcCredentialCallback({ client, audiences: ['*'] });
  t.false(await alone.callback([credential(CredentialType.AUTHNAME, 'name')], { service: 'libvirt', host: 'h', origin: [] }));
});
