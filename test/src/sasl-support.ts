// A virtauthd run in this process for SASL interop tests and benchmarks: its config file, a user
// database filled by the real `virtauth passwd add`, listeners on a unix socket, TLS and plain
// TCP, and its log captured in memory so tests can read it. Free of ava, so benchmarks can use it.

import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { parseConf } from '@virtauth/core';
import {
  buildConfig,
  createDaemon,
  createDaemonLogging,
  daemonLoggingOf,
  flushAuditRecords,
  type DaemonHandle,
  type ListenerInfo,
} from '@virtauth/daemon';

import type { TestPki } from './peers/pki.js';
import { describeResult, runProcess } from './peers/process.js';
import { tempDir, whenEmitted } from './peers/util.js';
import { JsonLines, type LogRecord } from './log-capture.js';

/** The compiled `virtauth` command line program (bin of the cli package). */
export const virtauthBin = fileURLToPath(new URL('../../../cli/dist/src/bin.js', import.meta.url));

export type VirtauthTransport = 'unix' | 'tls' | 'tcp';
type ConfigValue = string | number | readonly string[];

export interface VirtauthdOptions {
  /** SASL users added with `virtauth passwd add`, {name: password}. */
  users?: Record<string, string>;
  /** Listeners besides the unix socket pair (auth_unix_rw / auth_unix_ro are always "sasl"). */
  listenTls?: boolean;
  listenTcp?: boolean;
  /** Certificates for the TLS listener. */
  pki?: TestPki;
  /** More settings for the config file, e.g. {sasl_allowed_username_list: ['alice']}. */
  settings?: Record<string, ConfigValue>;
  /** log_level: 1 debug (default here, so that tests see everything the daemon might leak). */
  logLevel?: 1 | 2 | 3 | 4;
}

function formatValue(key: string, value: ConfigValue): string {
  const quote = (text: string) => {
    if (/["\n\\]/.test(text)) throw new Error(`config value for ${key} may not contain quotes, backslashes or newlines`);
    return `"${text}"`;
  };
  if (typeof value === 'number') return String(value);
  if (typeof value === 'string') return quote(value);
  return `[${value.map(quote).join(', ')}]`;
}

export type { LogRecord } from './log-capture.js';

/** Adds or replaces a user exactly as an administrator would: the CLI, password on stdin. */
export async function addVirtauthUser(configFile: string, name: string, password: string): Promise<void> {
  const result = await runProcess(process.execPath, [virtauthBin, 'passwd', 'add', name, '--config', configFile], {
    input: `${password}\n`,
    timeoutMs: 30_000,
  });
  if (result.code !== 0) throw new Error(`virtauth passwd add ${name} failed: ${describeResult(result)}`);
}

export class TestVirtauthd {
  private stopped = false;

  private constructor(
    readonly dir: string,
    readonly configFile: string,
    readonly userDatabaseFile: string,
    readonly handle: DaemonHandle,
    private readonly log: JsonLines,
    private readonly pki: TestPki | undefined,
  ) {}

  static async start(options: VirtauthdOptions = {}): Promise<TestVirtauthd> {
    if (options.listenTls && options.pki === undefined) throw new Error('TestVirtauthd: listenTls needs a TestPki');
    const dir = await tempDir('vd');
    try {
      const configFile = join(dir, 'virtauthd.conf');
      const userDatabaseFile = join(dir, 'users.json');
      const settings: Record<string, ConfigValue> = {
        unix_sock_dir: dir,
        auth_unix_rw: 'sasl',
        auth_unix_ro: 'sasl',
        sasl_user_db: userDatabaseFile,
        listen_addr: '127.0.0.1',
        // Failures are delayed in production; tests that measure the delay set it themselves.
        sasl_failure_delay_ms: 0,
        log_level: options.logLevel ?? 1,
      };
      if (options.listenTls && options.pki) {
        Object.assign(settings, {
          listen_tls: 1,
          tls_port: 0,
          auth_tls: 'sasl',
          key_file: options.pki.serverKeyFile,
          cert_file: options.pki.serverCertFile,
          ca_file: options.pki.caCertFile,
        });
      }
      if (options.listenTcp) Object.assign(settings, { listen_tcp: 1, tcp_port: 0, auth_tcp: 'sasl' });
      Object.assign(settings, options.settings ?? {});
      const text = Object.entries(settings)
        .map(([key, value]) => `${key} = ${formatValue(key, value)}\n`)
        .join('');
      await writeFile(configFile, text);
      for (const [name, password] of Object.entries(options.users ?? {})) await addVirtauthUser(configFile, name, password);

      const config = buildConfig(parseConf(text, configFile), configFile);
      const log = new JsonLines();
      // The service's own logging (log_filters, log_outputs), its stderr captured: virt-admin can change it.
      const logging = createDaemonLogging(
        { level: config.logLevel as 1 | 2 | 3 | 4, filters: config.logFilters, outputs: config.logOutputs ?? [] },
        { stderrStream: log, env: {} },
      );
      const handle = await createDaemon({ config, logger: logging.logger });
      return new TestVirtauthd(dir, configFile, userDatabaseFile, handle, log, options.pki);
    } catch (error) {
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
  }

  listener(transport: VirtauthTransport): ListenerInfo {
    const found = this.handle.listeners.find((l) => l.kind === transport && !l.readOnly);
    if (!found) throw new Error(`this virtauthd has no ${transport} listener`);
    return found;
  }

  /** A client URI for the test driver behind this daemon; `params` go into the query. */
  uri(transport: VirtauthTransport = 'unix', params: Record<string, string> = {}): string {
    const listener = this.listener(transport);
    const query: string[] = [];
    let authority = '';
    if (transport === 'unix') query.push(`socket=${listener.path}`);
    if (transport === 'tcp') authority = `127.0.0.1:${listener.port}`;
    if (transport === 'tls') {
      // The certificate names localhost (and 127.0.0.1); auth.conf sections are per host name.
      authority = `localhost:${listener.port}`;
      if (params.pkipath === undefined && this.pki) query.push(`pkipath=${this.pki.client.pkiPath}`);
    }
    for (const [key, value] of Object.entries(params)) query.push(`${key}=${value}`);
    return `test+${transport}://${authority}/default${query.length ? `?${query.join('&')}` : ''}`;
  }

  /** Everything the daemon logged so far, one JSON object per line. */
  logText(): string {
    return this.log.lines.join('\n');
  }

  /** The daemon's log records so far, the audit records it holds for its next batch included. */
  logRecords(): LogRecord[] {
    flushAuditRecords();
    return this.log.records();
  }

  /** Log records of one event, e.g. 'auth.sasl.succeeded'. */
  events(event: string): LogRecord[] {
    flushAuditRecords();
    return this.log.events(event);
  }

  /** Resolves with the records of `event` once the daemon has logged `count` of them. */
  whenEvents(event: string, count = 1, timeoutMs = 30_000): Promise<LogRecord[]> {
    return whenEmitted(
      this.log,
      ['lines'],
      () => {
        const records = this.log.events(event);
        return records.length >= count ? records : undefined;
      },
      timeoutMs,
      `${count} '${event}' log line(s)`,
    );
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.handle.stop();
    daemonLoggingOf(this.handle.server.log)?.close();
    await rm(this.dir, { recursive: true, force: true });
  }
}
