#!/usr/bin/env node
// virtauthd: serves libvirt's remote protocol with pluggable authentication.
import 'reflect-metadata';
import { parseArgs } from 'node:util';
import { AUTH_PROVIDER, VirError } from '@virtauth/core';
import { loadConfig } from './config.js';
import { createDaemon } from './daemon.js';
import { authSchemeName } from './plugins.js';

const USAGE = `Usage: virtauthd [--config FILE] [--verbose]

Serves libvirt's remote protocol (virsh, python3-libvirt and the virtauth client can connect).
Without --config it runs on embedded defaults: unix sockets, auth none, the test driver.`;

async function main(): Promise<number> {
  let args;
  try {
    args = parseArgs({ options: { config: { type: 'string', short: 'f' }, verbose: { type: 'boolean', short: 'v' }, help: { type: 'boolean', short: 'h' } } });
  } catch (e) {
    process.stderr.write(`virtauthd: ${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (args.values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const config = loadConfig(args.values.config ?? null);
  if (args.values.verbose) config.logLevel = 2;
  const daemon = await createDaemon({ config });
  const providers = daemon.container.resolveAll(AUTH_PROVIDER);
  for (const l of daemon.listeners) {
    const where = l.kind === 'unix' ? l.path : `${l.host}:${l.port}`;
    process.stdout.write(`virtauthd listening on ${l.kind} ${where} (auth ${authSchemeName(providers, l.auth)}${l.readOnly ? ', read-only' : ''}): virsh -c '${l.uri}' hostname\n`);
  }
  await new Promise<void>((resolve) => {
    const shutdown = (sig: string) => {
      process.stderr.write(`virtauthd: ${sig} received, shutting down\n`);
      daemon.stop().then(resolve, resolve);
    };
    process.once('SIGTERM', () => shutdown('SIGTERM'));
    process.once('SIGINT', () => shutdown('SIGINT'));
  });
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`virtauthd: ${e instanceof VirError ? e.message : (e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  },
);
