// Pieces of the single sign-on tests: a person's client config for the test IdP, the real
// `virtauth` CLI run as a child process with its output watched line by line, and a headless
// chromium (puppeteer-core, Debian's binary) that signs in and consents on the IdP's own pages.

import { spawn, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import type { ExecutionContext } from 'ava';

import { AUDIENCE, CLIENT, REQUIRED_SCOPE, type TestIdp } from './fixtures/oidc-idp.js';
import { findExecutable } from './peers/executables.js';
import { tempDir } from './peers/util.js';
import { virtauthBin } from './sasl-support.js';

const skewedClockModule = new URL('./fixtures/skewed-clock.js', import.meta.url).href;

export interface PersonSetup {
  /** The client config file. */
  config: string;
  /** The token cache directory it names. */
  cacheDir: string;
  /** HOME and XDG dirs of the person (all under one temp dir). */
  env: NodeJS.ProcessEnv;
}

/** A client config with one identity provider `test` for the test IdP, for `localhost` (unix sockets). */
export async function personSetup(idp: TestIdp, overrides: Record<string, string> = {}): Promise<PersonSetup> {
  const home = await tempDir('sso');
  const cacheDir = join(home, 'tokens');
  const keys: Record<string, string> = {
    oidc_test_issuer: `"${idp.issuer}"`,
    oidc_test_client_id: `"${CLIENT.cli.id}"`,
    oidc_test_scopes: `"openid offline_access ${REQUIRED_SCOPE}"`,
    oidc_test_resource: `"${AUDIENCE.virtauthd}"`,
    oidc_test_hosts: '[ "localhost" ]',
    oidc_test_flow: '"device"',
    oidc_test_allow_insecure_http: '1',
    token_cache_dir: `"${cacheDir}"`,
    ...overrides,
  };
  const config = join(home, 'client.conf');
  await writeFile(
    config,
    Object.entries(keys)
      .map(([k, v]) => `${k} = ${v}\n`)
      .join(''),
  );
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: home,
    XDG_CONFIG_HOME: join(home, '.config'),
    XDG_STATE_HOME: join(home, '.state'),
    LANG: 'C.UTF-8',
  };
  return { config, cacheDir, env };
}

/** A running `virtauth` process whose stdout and stderr are collected and can be waited on. */
export class CliProcess {
  stdout = '';
  stderr = '';
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcess;
  private readonly waiters: Array<() => void> = [];

  constructor(args: readonly string[], env: NodeJS.ProcessEnv, nodeArgs: readonly string[] = []) {
    this.child = spawn(process.execPath, [...nodeArgs, virtauthBin, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdin!.end();
    const wake = () => {
      for (const w of this.waiters.splice(0)) w();
    };
    this.child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      this.stdout += d;
      wake();
    });
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.stderr += d;
      wake();
    });
    this.exited = new Promise((resolve) =>
      this.child.once('close', (code) => {
        resolve(code);
        wake();
      }),
    );
  }

  /** Waits until the output matches `pattern` (fails with the output if the process ends first). */
  async waitFor(pattern: RegExp, timeoutMs = 30_000): Promise<RegExpExecArray> {
    let ended = false;
    let timedOut = false;
    // Woken by each piece of output, by the exit, and by the bound on a hung process.
    const wakeAll = () => {
      for (const w of this.waiters.splice(0)) w();
    };
    void this.exited.then(() => {
      ended = true;
      wakeAll();
    });
    const bound = setTimeout(() => {
      timedOut = true;
      wakeAll();
    }, timeoutMs);
    try {
      for (;;) {
        const match = pattern.exec(this.stderr) ?? pattern.exec(this.stdout);
        if (match) return match;
        if (ended || timedOut)
          throw new Error(
            `virtauth did not print ${pattern} (${ended ? 'it exited' : 'timed out'}); stdout: ${this.stdout} stderr: ${this.stderr}`,
          );
        await new Promise<void>((resolve) => this.waiters.push(resolve));
      }
    } finally {
      clearTimeout(bound);
    }
  }

  kill(): void {
    this.child.kill('SIGKILL');
  }

  get output(): string {
    return `${this.stdout}${this.stderr}`;
  }
}

/** Runs `virtauth args` to its end; kills it on test teardown if it hangs. */
export async function runCli(
  t: ExecutionContext,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const cli = startCli(t, args, env);
  const code = await cli.exited;
  return { code, stdout: cli.stdout, stderr: cli.stderr };
}

/** `virtauth` on a machine whose clock is `offsetMs` off (Date shifted by a preloaded module). */
export function startCliWithSkewedClock(
  t: ExecutionContext,
  offsetMs: number,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
): CliProcess {
  const cli = new CliProcess(args, { ...env, SKEWED_CLOCK_OFFSET_MS: String(offsetMs) }, ['--import', skewedClockModule]);
  t.teardown(() => cli.kill());
  return cli;
}

export function startCli(t: ExecutionContext, args: readonly string[], env: NodeJS.ProcessEnv): CliProcess {
  const cli = new CliProcess(args, env);
  t.teardown(() => cli.kill());
  return cli;
}

/** Signs in with the device flow, approved by the test IdP's scripted person. */
export async function approveLogin(idp: TestIdp, cli: CliProcess, login = 'alice'): Promise<number | null> {
  await idp.approveDevice(await deviceUrlFrom(cli), login);
  return cli.exited;
}

/** The device flow's printed prompt, as the complete verification URL a person's phone would open. */
export async function deviceUrlFrom(cli: CliProcess): Promise<string> {
  const [, uri, code] = await cli.waitFor(/open (http:\/\/\S+\/device) and enter the code ([A-Z]{4}-[A-Z]{4})/);
  return `${uri}?user_code=${code}`;
}

/** Launch flags for a headless chromium that talks to nothing but the test's servers. */
export const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export interface SignInBrowser {
  /**
   * Opens `url` and signs in as `login` on the IdP's pages, consenting, until the browser is sent
   * to the loopback redirect. With `intercept`, that last request is not delivered: its URL is
   * returned for the test to send itself.
   */
  signIn(url: string, login: string, options?: { intercept?: boolean }): Promise<string>;
}

/** A headless chromium with a fresh profile, closed on teardown. */
export async function startBrowser(t: ExecutionContext): Promise<SignInBrowser> {
  const { default: puppeteer } = await import('puppeteer-core');
  const profile = await tempDir('chr');
  const browser = await puppeteer.launch({
    executablePath: findExecutable('chromium')!,
    headless: true,
    args: [...CHROMIUM_FLAGS, `--user-data-dir=${profile}`],
  });
  t.teardown(() => browser.close());
  return {
    async signIn(url, login, options = {}) {
      const page = await browser.newPage();
      const loopback = /^http:\/\/127\.0\.0\.1:\d+\/callback\?/;
      let redirect: string | null = null;
      let arrived!: () => void;
      const arrival = new Promise<void>((resolve) => (arrived = resolve));
      await page.setRequestInterception(true);
      page.on('request', (request) => {
        if (loopback.test(request.url())) {
          redirect = request.url();
          arrived();
          if (options.intercept) return void request.abort();
        }
        void request.continue();
      });
      await page.goto(url);
      for (let step = 0; step < 10 && redirect === null; step++) {
        if (await page.$('input[name="login"]')) {
          await page.type('input[name="login"]', login);
          await page.type('input[name="password"]', 'any');
        }
        const submit = await page.$('button[type="submit"]');
        if (!submit) break;
        await Promise.all([page.waitForNavigation({ waitUntil: 'load' }).catch(() => {}), submit.click()]);
      }
      await Promise.race([
        arrival,
        new Promise((_, reject) =>
          setTimeout(() => reject(new Error(`the IdP never redirected to the loopback; last page ${page.url()}`)), 15_000).unref(),
        ),
      ]);
      await page.close();
      return redirect!;
    },
  };
}
