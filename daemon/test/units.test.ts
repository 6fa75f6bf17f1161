// The rendered units: every placeholder filled, and capabilities, writable paths and socket
// settings derived from the configuration.

import test from 'ava';
import { buildConfig } from '../src/config.js';
import { extraWritablePaths, neededCapabilities, renderUnits, UNIT_FILES } from '../src/systemd/units.js';
import type { ConfValue } from '@virtauth/core';

const render = (
  settings: [string, ConfValue][],
  userDatabase = '/var/lib/virtauth/users.json',
  daemonMain = '/opt/virtauth/daemon/dist/src/main.js',
) =>
  renderUnits(
    { config: buildConfig(new Map(settings)), configFile: '/etc/virtauth/virtauthd.conf', node: '/usr/bin/node', daemonMain },
    userDatabase,
  );

test('defaults: no capability, ProtectHome=yes, sockets under unix_sock_dir with its modes', (t) => {
  const units = render([['unix_sock_dir', '/run/virtauth']]);
  t.deepEqual([...units.keys()], [...UNIT_FILES]);
  for (const [name, text] of units) t.false(/@[A-Z_]+@/.test(text), name);
  const service = units.get('virtauthd.service')!;
  t.regex(
    service,
    /^ExecStart=\/usr\/bin\/node --max-semi-space-size=4 \/opt\/virtauth\/daemon\/dist\/src\/main\.js --config \/etc\/virtauth\/virtauthd\.conf \$VIRTAUTHD_ARGS$/m,
  );
  t.regex(service, /^CapabilityBoundingSet=$/m);
  t.regex(service, /^ProtectHome=yes$/m);
  t.regex(service, /^Type=notify$/m);
  t.false(/ReadWritePaths/.test(service));
  t.regex(units.get('virtauthd.socket')!, /^ListenStream=\/run\/virtauth\/virtauth-sock\nSocketMode=0700$/m);
  t.regex(units.get('virtauthd-ro.socket')!, /^ListenStream=\/run\/virtauth\/virtauth-sock-ro\nSocketMode=0777$/m);
  t.regex(units.get('virtauthd-admin.socket')!, /^ListenStream=\/run\/virtauth\/virtauth-admin-sock$/m);
  t.regex(units.get('virtauthd-tcp.socket')!, /^ListenStream=127\.0\.0\.1:16509$/m);
});

test('features that need a capability or a path get exactly that', (t) => {
  const config = buildConfig(
    new Map<string, ConfValue>([
      ['unix_sock_group', 'libvirt'],
      ['listen_tls', 1],
      ['tls_port', 614],
      ['listen_addr', '::1'],
      ['log_outputs', '1:file:/srv/log/v.log 2:stderr'],
    ]),
  );
  t.deepEqual(neededCapabilities(config), ['CAP_CHOWN', 'CAP_NET_BIND_SERVICE']);
  t.deepEqual(extraWritablePaths({ ...config, unixSockDir: '/run/virtauth' }, '/srv/users/users.json'), ['/srv/users', '/srv/log']);
  const units = render(
    [
      ['unix_sock_group', 'libvirt'],
      ['unix_sock_dir', '/run/virtauth'],
      ['listen_addr', '::1'],
    ],
    '/srv/users/users.json',
    '/root/virtauth/daemon/dist/src/main.js',
  );
  t.regex(units.get('virtauthd.service')!, /^CapabilityBoundingSet=CAP_CHOWN$/m);
  t.regex(units.get('virtauthd.service')!, /^ReadWritePaths=\/srv\/users$/m);
  t.regex(units.get('virtauthd.service')!, /^ProtectHome=read-only$/m, 'code in /root stays readable');
  t.regex(units.get('virtauthd.socket')!, /^SocketGroup=libvirt$/m);
  t.regex(units.get('virtauthd-tls.socket')!, /^ListenStream=\[::1\]:16514$/m);
});
