// The audit trail across a shutdown: virtauthd as its operator runs it (program, config file, a
// log file at log_level 2) relays credential requests, and is stopped with SIGTERM while one
// waits for its answer. Every request has its record in the file, the withdrawn one included,
// and no answer's value is in it.

import { randomBytes } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import test from 'ava';

import { CredentialType } from '@virtauth/core';
import { openAuth } from 'virtauth';

import { tempDir } from './peers/index.js';
import { ChildRun, RELAY_PROBE_ALLOWED, type DaemonAuditRecord } from './relay-helpers.js';

const daemonMain = fileURLToPath(new URL('../../../daemon/dist/src/main.js', import.meta.url));
const probePlugin = fileURLToPath(new URL('./fixtures/relay-probe-plugin.js', import.meta.url));

test('SIGTERM: every relayed request has its audit record in the log file, the one still waiting included; no answer is in it', async (t) => {
  const dir = await tempDir('va');
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const logFile = join(dir, 'virtauthd.log');
  const configFile = join(dir, 'virtauthd.conf');
  // virtauthd.conf's values read as JSON's: numbers, "strings", [ "lists" ].
  const settings = {
    unix_sock_dir: dir,
    auth_unix_rw: 'none',
    auth_unix_ro: 'none',
    log_level: 2,
    log_outputs: `2:file:${logFile}`,
    plugins: [probePlugin],
    uri_allowed_list: [RELAY_PROBE_ALLOWED],
  };
  await writeFile(
    configFile,
    Object.entries(settings)
      .map(([key, value]) => `${key} = ${JSON.stringify(value)}\n`)
      .join(''),
  );
  const daemon = ChildRun.spawn(process.execPath, [daemonMain, '--config', configFile]);
  t.teardown(() => daemon.stop('SIGKILL'));
  await daemon.line((l) => l.startsWith('virtauthd listening on unix') && !l.includes('read-only'), 20_000, 'virtauthd to listen');

  const secret = `answer-${randomBytes(9).toString('base64url')}`;
  const answered = 3;
  let asked = 0;
  let lastAsked!: () => void;
  const lastRequestWaits = new Promise<void>((resolve) => (lastAsked = resolve));
  const auth = {
    credTypes: [CredentialType.AUTHNAME],
    callback: (creds: { result?: string | null }[], info: { signal?: AbortSignal }) => {
      if (++asked <= answered) {
        for (const c of creds) c.result = secret;
        return;
      }
      lastAsked();
      // Never answered: the daemon stops while this request waits.
      return new Promise<boolean>((resolve) => info.signal?.addEventListener('abort', () => resolve(false), { once: true }));
    },
  };
  const uri = `relayprobe+unix:///?socket=${join(dir, 'virtauth-sock')}&probe=flood&count=${answered + 1}`;
  const opening = openAuth(uri, auth, 0, { credentialSources: [] }).then(
    () => 'opened',
    (e: Error) => e.message,
  );
  await lastRequestWaits;
  await daemon.stop('SIGTERM');
  t.is(await daemon.exited, 0, daemon.stderr.text());
  t.not(await opening, 'opened');

  const text = await readFile(logFile, 'utf8');
  const audits = text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as DaemonAuditRecord & { event?: string })
    .filter((r) => r.event === 'relay.audit');
  t.deepEqual(
    audits.map((r) => r.id),
    [1, 2, 3, 4],
    'one record per request, in order',
  );
  t.deepEqual(
    audits.slice(0, answered).map((r) => r.outcome),
    ['OK', 'OK', 'OK'],
  );
  t.not(audits[answered]!.outcome, 'OK', 'the request withdrawn at shutdown is recorded as not answered');
  t.false(text.includes(secret), 'no answer value in the log');
});
