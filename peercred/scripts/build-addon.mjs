#!/usr/bin/env node
// Builds the peercred N-API addon with node-gyp, offline, against this machine's Node headers.
// The root `npm run build` runs it before `tsc -b`: npm does not run dependencies' install
// scripts here, so the build is explicit. Skips the compile when the addon is newer than its
// sources; `--force` rebuilds anyway.
import { spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const packageDirectory = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const addonFile = join(packageDirectory, 'build', 'Release', 'peercred.node');
const sources = [
  join(packageDirectory, 'binding.gyp'),
  join(packageDirectory, 'src', 'peercred.cc'),
  join(packageDirectory, 'src', 'socket-tools.cc'),
  join(packageDirectory, 'src', 'socket-tools.h'),
  join(packageDirectory, 'src', 'stream-pump.cc'),
  join(packageDirectory, 'src', 'stream-pump.h'),
  join(packageDirectory, 'src', 'addon-errors.h'),
];
const force = process.argv.includes('--force');

function fail(message) {
  process.stderr.write(`peercred: ${message}\n`);
  process.exit(1);
}

function isUpToDate() {
  if (!existsSync(addonFile)) return false;
  const built = statSync(addonFile).mtimeMs;
  return sources.every((source) => statSync(source).mtimeMs <= built);
}

// npm hands its bundled node-gyp to scripts in npm_config_node_gyp; outside npm, look next to
// this Node's npm installation.
function findNodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    join(packageDirectory, '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  const found = candidates.find((candidate) => candidate && existsSync(candidate));
  if (!found)
    fail(
      `node-gyp not found (looked at ${candidates.filter(Boolean).join(', ')}); run the build through npm (npm run build), whose bundled node-gyp this uses`,
    );
  return found;
}

// node-gyp's nodedir is a prefix holding include/node. An explicit one (npm's `nodedir`, set in
// .npmrc) wins; otherwise the prefix of the running Node. Never download headers.
function findNodeDirectory() {
  const candidates = [process.env.npm_config_nodedir, resolve(dirname(process.execPath), '..'), '/usr'];
  const found = candidates.find((candidate) => candidate && existsSync(join(candidate, 'include', 'node', 'node_api.h')));
  if (!found) {
    fail(
      `Node.js headers (include/node/node_api.h) not found under ${candidates.filter(Boolean).join(', ')}; install the headers of Node ${process.version} (Debian: the nodejs/libnode-dev package that matches this Node) or set nodedir in .npmrc`,
    );
  }
  return found;
}

if (!force && isUpToDate()) process.exit(0);

const nodeGyp = findNodeGyp();
const nodeDirectory = findNodeDirectory();
const started = Date.now();
const child = spawn(
  process.execPath,
  [nodeGyp, 'rebuild', `--nodedir=${nodeDirectory}`, `--directory=${packageDirectory}`, '--loglevel=warn'],
  {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: process.env,
  },
);
child.on('error', (error) => fail(`could not run node-gyp: ${error.message}`));
child.on('close', (code, signal) => {
  if (code !== 0) {
    fail(
      `node-gyp rebuild failed (${signal ? `killed by ${signal}` : `exit ${code}`}); it needs a C++ compiler, make and python3 (Debian: apt-get install g++ make python3)`,
    );
  }
  if (!existsSync(addonFile)) fail(`node-gyp succeeded but ${addonFile} is missing`);
  process.stdout.write(`peercred: built ${addonFile} in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
});
