// The client config: identity providers from libvirt-syntax keys, their hosts, the environment's
// overrides, and the errors a typo or a missing key gets.

import test from 'ava';
import { ErrorCode, VirError } from '@virtauth/core';
import { clientConfigPath, parseClientConfig, providerForHost, selectProvider } from '../src/login/client-config.js';
import { describeRefusal } from '../src/login/oidc-client.js';

const TEXT = `
oidc_corp_issuer = "https://id.example.com"
oidc_corp_client_id = "virtauth-cli"
oidc_corp_scopes = "openid offline_access libvirt"
oidc_corp_resource = "https://virt.example.com/libvirt"
oidc_corp_hosts = [ "*.example.com", "LOCALHOST" ]
oidc_lab_issuer = "https://lab-id.example.org"
oidc_lab_client_id = "lab"
oidc_lab_flow = "device"
token_cache_dir = "/var/tmp/tokens"
`;

test('providers, their hosts and flows are read in file order', (t) => {
  const config = parseClientConfig(TEXT, 'client.conf', {});
  t.deepEqual(
    config.providers.map((p) => [p.name, p.issuer, p.clientId, p.flow]),
    [
      ['corp', 'https://id.example.com', 'virtauth-cli', undefined],
      ['lab', 'https://lab-id.example.org', 'lab', 'device'],
    ],
  );
  t.is(config.tokenCacheDir, '/var/tmp/tokens');
  t.is(providerForHost(config.providers, 'virt1.example.com')?.name, 'corp');
  t.is(providerForHost(config.providers, 'localhost')?.name, 'corp', 'host globs are case-insensitive');
  t.is(providerForHost(config.providers, 'elsewhere.org')?.name, 'lab', 'a provider without hosts serves every host');
  t.is(selectProvider(config, 'lab').issuer, 'https://lab-id.example.org');
  t.is(selectProvider(config, 'https://id.example.com').name, 'corp');
  t.throws(() => selectProvider(config, undefined), { message: /several identity providers are configured; choose one with --issuer/ });
  t.throws(() => selectProvider(config, 'nope'), { message: /no identity provider 'nope' is configured/ });
});

test('unknown keys, missing keys and bad values are CONF_SYNTAX errors naming the key', (t) => {
  const bad: [string, RegExp][] = [
    ['oidc_corp_isuer = "x"', /unknown key 'oidc_corp_isuer'/],
    ['oidc_corp_issuer = "x"', /oidc_corp_client_id is missing/],
    ['oidc_corp_client_id = "x"', /oidc_corp_issuer is missing/],
    ['oidc_corp_issuer = "x"\noidc_corp_client_id = "c"\noidc_corp_flow = "implicit"', /oidc_corp_flow: expected "browser" or "device"/],
    ['oidc_corp_issuer = "x"\noidc_corp_client_id = "c"\noidc_corp_hosts = "one"', /oidc_corp_hosts: expected a \[ "list"/],
    [
      'oidc_corp_issuer = "x"\noidc_corp_client_id = "c"\noidc_corp_resource = "a"\noidc_corp_audience = "b"',
      /either _resource or _audience/,
    ],
    ['oidc_corp_issuer = "x"\noidc_corp_client_id = "c"\noidc_corp_redirect_port = 70000', /expected a port number/],
    ['token_cache_dir = "relative/dir"', /token_cache_dir: expected an absolute path/],
  ];
  for (const [text, message] of bad) {
    const error = t.throws(() => parseClientConfig(text, 'client.conf', {}), { instanceOf: VirError, message });
    t.is(error?.code, ErrorCode.CONF_SYNTAX);
  }
});

test('VIRTAUTH_OIDC_* override the provider of their issuer, or define one, tried first', (t) => {
  const overridden = parseClientConfig(TEXT, 'client.conf', {
    VIRTAUTH_OIDC_ISSUER: 'https://lab-id.example.org',
    VIRTAUTH_OIDC_SCOPES: 'openid',
    VIRTAUTH_OIDC_HOSTS: 'a.example, b.example',
  });
  t.deepEqual(
    overridden.providers.map((p) => p.name),
    ['lab', 'corp'],
  );
  t.like(overridden.providers[0], { clientId: 'lab', scopes: 'openid', hosts: ['a.example', 'b.example'], flow: 'device' });

  const added = parseClientConfig('', 'client.conf', {
    VIRTAUTH_OIDC_ISSUER: 'https://new.example',
    VIRTAUTH_OIDC_CLIENT_ID: 'c',
    VIRTAUTH_TOKEN_CACHE_DIR: '/t',
    HOME: '/h',
  });
  t.like(added.providers[0], { name: 'env', issuer: 'https://new.example', clientId: 'c' });
  t.is(added.tokenCacheDir, '/t');
  t.throws(() => parseClientConfig('', 'c', { VIRTAUTH_OIDC_ISSUER: 'https://new.example' }), {
    message: /set VIRTAUTH_OIDC_CLIENT_ID too/,
  });
  t.throws(() => parseClientConfig('', 'c', { VIRTAUTH_OIDC_SCOPES: 'x' }), {
    message: /VIRTAUTH_OIDC_SCOPES is set without VIRTAUTH_OIDC_ISSUER/,
  });
  t.throws(() => selectProvider(parseClientConfig('', 'c', {}), undefined), { message: /no identity provider is configured/ });
});

test('the config file: --config, then VIRTAUTH_CLIENT_CONFIG, then the XDG config dir', (t) => {
  t.deepEqual(clientConfigPath('/given.conf', { VIRTAUTH_CLIENT_CONFIG: '/env.conf' }), { path: '/given.conf', explicit: true });
  t.deepEqual(clientConfigPath(undefined, { VIRTAUTH_CLIENT_CONFIG: '/env.conf' }), { path: '/env.conf', explicit: true });
  t.deepEqual(clientConfigPath(undefined, { XDG_CONFIG_HOME: '/x', HOME: '/h' }), { path: '/x/virtauth/client.conf', explicit: false });
  t.deepEqual(clientConfigPath(undefined, { HOME: '/h' }), { path: '/h/.config/virtauth/client.conf', explicit: false });
});

test("a server's RFC 7628 refusal names what it wanted; its text is cut short", (t) => {
  const provider = {
    name: 'corp',
    issuer: 'https://id.example.com',
    clientId: 'c',
    scopes: 'openid',
    resource: 'https://virt.example.com',
  };
  t.regex(
    describeRefusal({ host: 'h', provider, error: { status: 'insufficient_scope', scope: 'libvirt' } }),
    /it wants the scope\(s\) 'libvirt', and this login asked for 'openid'; add them to oidc_corp_scopes/,
  );
  t.regex(
    describeRefusal({
      host: 'h',
      provider,
      error: { status: 'invalid_token', 'openid-configuration': 'https://other-id.example/.well-known/openid-configuration' },
    }),
    /it trusts tokens from https:\/\/other-id\.example, not from https:\/\/id\.example\.com/,
  );
  t.regex(
    describeRefusal({ host: 'h', provider, error: { status: 'invalid_token' } }),
    /issued for another audience .*or expired because the clocks/,
  );
  t.true(describeRefusal({ host: 'h', provider, error: { status: 'x'.repeat(5000) } }).length < 700);
  t.regex(
    describeRefusal({ host: 'h', provider, error: { status: 'insufficient_scope', scope: 'libvirt\u001b]0;pwned\u0007' } }),
    /wants the scope\(s\) 'libvirt\?\]0;pwned\?'/,
  );
});
