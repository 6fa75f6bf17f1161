#!/usr/bin/env node
// virtauthd: serves libvirt's remote protocol with pluggable authentication.
import 'reflect-metadata';
import { parseArgs } from 'node:util';
import { VirError } from '@virtauth/core';
import { authTypeName, loadConfig } from './config.js';
import { createDaemon } from './daemon.js';

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
  let shutdown = (why: string): void => void why;
  // An administrator's daemon-timeout ends the daemon as a signal would.
  const daemon = await createDaemon({ config, onIdleTimeout: () => shutdown('no client for the daemon timeout') });
  for (const l of daemon.listeners) {
    const where = l.kind === 'unix' ? l.path : `${l.host}:${l.port}`;
    process.stdout.write(`virtauthd listening on ${l.kind} ${where} (auth ${authTypeName(l.auth)}${l.readOnly ? ', read-only' : ''}): virsh -c '${l.uri}' hostname\n`);
  }
  await new Promise<void>((resolve) => {
    shutdown = (why: string) => {
      process.stderr.write(`virtauthd: ${why}, shutting down\n`);
      daemon.stop().then(resolve, resolve);
    };
    process.once('SIGTERM', () => shutdown('SIGTERM received'));
    process.once('SIGINT', () => shutdown('SIGINT received'));
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
