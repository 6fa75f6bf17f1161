#!/usr/bin/env node
// Installs virtauthd's systemd units (npm run install-service [-- OPTIONS]), rendered for this
// machine and the configuration the service will run with. Needs the built daemon (npm run build).
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import 'reflect-metadata';

const usage = `Usage: npm run install-service -- [--unit-dir DIR] [--config FILE] [--no-reload]

  --unit-dir DIR  where the units go (default /etc/systemd/system)
  --config FILE   the configuration the service runs with (default /etc/virtauth/virtauthd.conf,
                  created with the socket directory /run/virtauth if it does not exist)
  --no-reload     do not run 'systemctl daemon-reload' afterwards`;

function fail(message) {
  process.stderr.write(`install-service: ${message}\n`);
  process.exit(1);
}

let args;
try {
  args = parseArgs({
    options: {
      'unit-dir': { type: 'string' },
      config: { type: 'string' },
      'no-reload': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
} catch (error) {
  fail(`${error.message}\n${usage}`);
}
if (args.values.help) {
  process.stdout.write(`${usage}\n`);
  process.exit(0);
}

const unitDir = resolve(args.values['unit-dir'] ?? '/etc/systemd/system');
const configFile = resolve(args.values.config ?? '/etc/virtauth/virtauthd.conf');

let daemon;
let providers;
try {
  daemon = await import('@virtauth/daemon');
  providers = await import('@virtauth/providers');
} catch (error) {
  fail(`the daemon is not built (${error.message}): run 'npm run build' first`);
}

if (!existsSync(configFile)) {
  mkdirSync(dirname(configFile), { recursive: true, mode: 0o755 });
  writeFileSync(
    configFile,
    [
      '# virtauthd configuration (libvirtd.conf syntax; keys in README.md).',
      '# Under socket activation the socket units decide paths and ports; reload with: systemctl reload virtauthd',
      'unix_sock_dir = "/run/virtauth"',
      '',
    ].join('\n'),
    { mode: 0o644 },
  );
  process.stdout.write(`created ${configFile}\n`);
}

let config;
try {
  config = daemon.loadConfig(configFile);
} catch (error) {
  fail(error.message);
}
const userDatabase = providers.saslSettingsFrom(config.extra).userDatabasePath;
const units = daemon.renderUnits({ config, configFile }, userDatabase);
mkdirSync(unitDir, { recursive: true });
for (const [name, text] of units) {
  writeFileSync(join(unitDir, name), text, { mode: 0o644 });
  process.stdout.write(`wrote ${join(unitDir, name)}\n`);
}

const systemdRunning = existsSync('/run/systemd/system');
if (!args.values['no-reload'] && systemdRunning) {
  const reload = spawnSync('systemctl', ['daemon-reload'], { stdio: 'inherit' });
  if (reload.status !== 0) fail('systemctl daemon-reload failed');
}
process.stdout.write(`
Enable and start (the service starts on the first connection, and exits after 120 s idle):
  systemctl enable --now virtauthd.socket virtauthd-ro.socket virtauthd-admin.socket
Remote access: also enable virtauthd-tcp.socket and/or virtauthd-tls.socket.
Reload the configuration: systemctl reload virtauthd
${systemdRunning ? '' : '(systemd is not running here: units written only)\n'}`);
