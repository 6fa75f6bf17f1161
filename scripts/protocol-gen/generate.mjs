#!/usr/bin/env node
// Generates core's protocol modules from libvirt's own definitions (remote_protocol.x,
// virnetprotocol.x, admin_protocol.x, plus the public headers for the constants they name).
//
//   node scripts/protocol-gen/generate.mjs [--source DIR] [--check]
//
// DIR is an unpacked libvirt source tree (scripts/fetch-libvirt-protocol.sh puts one under
// .cache/libvirt-src/); without --source, $LIBVIRT_SRC_DIR or the cache is used. --check writes
// nothing and exits 1 when a committed file differs from what the source gives.

import { existsSync, readdirSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from './xdr-parser.mjs';
import { readHeaderConstants } from './c-constants.mjs';
import { emitProtocol } from './emit.mjs';

export const repositoryRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const outputDir = join(repositoryRoot, 'core', 'src', 'protocol', 'generated');

const SPECS = [
  {
    file: 'src/rpc/virnetprotocol.x',
    output: 'virnet.ts',
    prefix: 'virNet',
    typePrefix: 'VirNet',
    constPrefix: 'VIRNET_',
  },
  {
    file: 'src/remote/remote_protocol.x',
    output: 'remote.ts',
    prefix: 'remote_',
    typePrefix: 'Remote',
    constPrefix: 'REMOTE_',
    program: {
      enumName: 'remote_procedure',
      procPrefix: 'REMOTE_PROC_',
      objectName: 'RemoteProc',
      tableName: 'remoteProcedures',
      apiName: 'RemoteApi',
      clientName: 'RemoteClient',
      apiPrefix: 'vir',
    },
  },
  {
    file: 'src/admin/admin_protocol.x',
    output: 'admin.ts',
    prefix: 'admin_',
    typePrefix: 'Admin',
    constPrefix: 'ADMIN_',
    program: {
      enumName: 'admin_procedure',
      procPrefix: 'ADMIN_PROC_',
      objectName: 'AdminProc',
      tableName: 'adminProcedures',
      apiName: 'AdminApi',
      clientName: 'AdminClient',
      apiPrefix: 'virAdm',
    },
  },
];

/** The files the generator reads, relative to a libvirt source tree. */
export const REQUIRED_SOURCES = [
  ...SPECS.map((s) => s.file),
  'include/libvirt/libvirt.h',
  'include/libvirt/virterror.h',
  'debian/changelog',
];

/** The libvirt tree to read: --source, $LIBVIRT_SRC_DIR, else the fetch script's cache. */
export function findSourceDir(explicit) {
  const candidates = [];
  if (explicit) candidates.push(explicit);
  if (process.env.LIBVIRT_SRC_DIR) candidates.push(process.env.LIBVIRT_SRC_DIR);
  const cache = join(repositoryRoot, '.cache', 'libvirt-src');
  if (existsSync(cache)) for (const d of readdirSync(cache).sort()) if (d.startsWith('libvirt-')) candidates.push(join(cache, d));
  return candidates.find((dir) => REQUIRED_SOURCES.every((f) => existsSync(join(dir, f)))) ?? null;
}

/** Public API names (as defined in libvirt's src/libvirt*.c) with the error domain each reports in. */
function readApiNames(sourceDir, lookup) {
  const byLower = new Map();
  const files = readdirSync(join(sourceDir, 'src'))
    .filter((f) => /^libvirt(-[a-z-]+)?\.c$/.test(f))
    .map((f) => join(sourceDir, 'src', f));
  files.push(join(sourceDir, 'src', 'admin', 'libvirt-admin.c'));
  for (const path of files.sort()) {
    if (!existsSync(path)) continue;
    const text = readFileSync(path, 'utf8');
    const from = /#define VIR_FROM_THIS (VIR_FROM_[A-Z_]+)/.exec(text)?.[1];
    const domain = from ? lookup(from) : 0;
    const starts = [...text.matchAll(/^(vir[A-Z][A-Za-z0-9]*)\(/gm)];
    starts.forEach((m, i) => {
      const body = text.slice(m.index, i + 1 < starts.length ? starts[i + 1].index : text.length);
      // libvirt's API refuses a write on a read-only connection with virCheckReadOnlyGoto.
      const readOnlyDenied = body.includes('virCheckReadOnlyGoto');
      if (!byLower.has(m[1].toLowerCase())) byLower.set(m[1].toLowerCase(), { name: m[1], domain: domain ?? 0, readOnlyDenied });
    });
  }
  return (candidate) => byLower.get(candidate.toLowerCase()) ?? { name: candidate, domain: 0, readOnlyDenied: false };
}

function versions(sourceDir) {
  const changelog = readFileSync(join(sourceDir, 'debian', 'changelog'), 'utf8');
  const debianVersion = /^libvirt \(([^)]+)\)/.exec(changelog)?.[1];
  if (!debianVersion) throw new Error(`${sourceDir}/debian/changelog does not start with a libvirt entry`);
  const version = debianVersion.replace(/^\d+:/, '').replace(/-[^-]*$/, '');
  return { version, debianVersion };
}

/** Generates every module: [{ path, content }] with paths relative to the repository. */
export function generate(sourceDir) {
  const lookup = readHeaderConstants(join(sourceDir, 'include', 'libvirt'));
  const apiInfo = readApiNames(sourceDir, lookup);
  const { version, debianVersion } = versions(sourceDir);
  return SPECS.map((spec) => {
    const text = readFileSync(join(sourceDir, spec.file), 'utf8');
    const defs = parse(text, spec.file);
    const content = emitProtocol(defs, spec, { resolveExternal: lookup, apiInfo, stamp: { source: spec.file, version, debianVersion } });
    return { path: relative(repositoryRoot, join(outputDir, spec.output)), content };
  });
}

async function main(argv) {
  const check = argv.includes('--check');
  const sourceIndex = argv.indexOf('--source');
  const sourceDir = findSourceDir(sourceIndex >= 0 ? argv[sourceIndex + 1] : undefined);
  if (!sourceDir) {
    console.error('no libvirt source found: run scripts/fetch-libvirt-protocol.sh, or pass --source DIR');
    return 2;
  }
  let differs = 0;
  for (const { path, content } of generate(sourceDir)) {
    const full = join(repositoryRoot, path);
    const current = existsSync(full) ? readFileSync(full, 'utf8') : null;
    if (current === content) continue;
    if (check) {
      console.error(`${path} differs from what ${sourceDir} gives`);
      differs++;
    } else {
      mkdirSync(dirname(full), { recursive: true });
      writeFileSync(full, content);
      console.log(`wrote ${path}`);
    }
  }
  return differs ? 1 : 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.exitCode = await main(process.argv.slice(2));
}
