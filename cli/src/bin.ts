#!/usr/bin/env node
// virtauth: a virsh-like client, and the administration of virtauthd's user database.
import 'reflect-metadata';
import { Command, Option } from 'commander';
import { ErrorCode, ErrorDomain, VirError, defaultVirtauthSocketDir, formatUuid, terminalSafe, type ConnectAuth } from '@virtauth/core';
import { createConsoleAuth } from '@virtauth/providers';
import { openAuth, type Connection } from './connect.js';
import { clientRelayPolicy, reportRefusedRelayRequest } from '@virtauth/relay';
import { dominfoCommand, dumpxmlCommand, hostnameCommand, listCommand, uriCommand, versionCommand, CLIENT_VERSION } from './commands.js';
import { registerPasswdCommands } from './passwd.js';
import { defineCommand, domainVerbCommand, eventCommand } from './domain-commands.js';
import { defaultAdminUri, openAdmin, registerAdminCommands, type AdminConnection } from './admin.js';
import { registerLoginCommands } from './login/commands.js';
import { connectionOidcOptions } from './login/connection.js';

class ExitError extends Error {
  constructor(
    readonly lines: string[],
    readonly exitCode = 1,
  ) {
    super(lines.join('\n'));
  }
}

/** An error's text as it may be printed: it usually carries the server's words. */
const errorText = (e: unknown): string => terminalSafe(e instanceof Error ? e.message : String(e));

function defaultUri(): string {
  return (
    process.env.VIRTAUTH_DEFAULT_URI ||
    process.env.LIBVIRT_DEFAULT_URI ||
    `test+unix:///default?socket=${defaultVirtauthSocketDir()}/virtauth-sock`
  );
}

const program = new Command();
program
  .name('virtauth')
  .description('A virsh-like client for virtauthd and libvirtd, and virtauthd user administration')
  .version(CLIENT_VERSION)
  .option('-c, --connect <uri>', 'hypervisor connection URI')
  .option('-r, --readonly', 'connect read-only')
  .option('--no-prompt', 'never ask on the terminal; fail at once when credentials are needed')
  .option(
    '--relay-policy <file>',
    'JSON policy for credential requests daemons relay back (default: $VIRTAUTH_RELAY_POLICY, else ~/.config/virtauth/relay-policy.json if present)',
  )
  .option('--config <file>', 'client config (identity providers); default $XDG_CONFIG_HOME/virtauth/client.conf')
  .option('--json', 'print results (domain verbs, list, events) as JSON, one object per line')
  // Global options before the command, as virsh: a command's own options (passwd's --config) stay its own.
  .enablePositionalOptions()
  .showHelpAfterError();

/**
 * The console callback. Input that has ended (stdin closed, `</dev/null`) means no one can answer:
 * that is AUTH_UNAVAILABLE, at once, rather than a refusal by the user.
 */
function consoleAuth(noPrompt: boolean): ConnectAuth {
  const prompter = createConsoleAuth({ noPrompt });
  let inputEnded = false;
  const markEnded = () => {
    inputEnded = true;
  };
  process.stdin.once('end', markEnded);
  process.stdin.once('close', markEnded);
  return {
    credTypes: prompter.credTypes,
    callback: async (creds, info) => {
      const answered = await prompter.callback(creds, info);
      if (answered === false && inputEnded) {
        throw new VirError({
          code: ErrorCode.AUTH_UNAVAILABLE,
          domain: ErrorDomain.AUTH,
          detail: 'standard input is closed, so no one can answer the credential prompt',
        });
      }
      return answered;
    },
  };
}

async function withConnection(run: (conn: Connection) => Promise<string>, output: { noTrailingLine?: boolean } = {}): Promise<void> {
  const opts = program.opts<{ connect?: string; readonly?: boolean; prompt: boolean; relayPolicy?: string; config?: string }>();
  const uri = opts.connect ?? defaultUri();
  const auth = consoleAuth(!opts.prompt);
  let conn: Connection;
  try {
    const relayPolicy = clientRelayPolicy(opts.relayPolicy);
    const oidc = connectionOidcOptions(opts.config, opts.prompt);
    conn = await openAuth(uri, auth, opts.readonly ? 1 : 0, {
      personPresent: opts.prompt,
      ...(relayPolicy ? { relayPolicy } : {}),
      ...(oidc ? { oidc } : {}),
      relayAudit: (record) => reportRefusedRelayRequest(record, (line) => process.stderr.write(terminalSafe(line))),
    });
  } catch (e) {
    throw new ExitError(['error: failed to connect to the hypervisor', `error: ${errorText(e)}`]);
  }
  try {
    // Names, XML and every other value come from the server.
    process.stdout.write(terminalSafe(await run(conn)));
    // virsh ends its output with a blank line; JSON output stays one object per line.
    if (!output.noTrailingLine) process.stdout.write('\n');
  } catch (e) {
    throw new ExitError([`error: ${errorText(e)}`]);
  } finally {
    await conn.close().catch(() => {});
  }
}

program
  .command('hostname')
  .description("print the hypervisor host's name")
  .action(() => withConnection(hostnameCommand));
program
  .command('version')
  .description('print the library and hypervisor versions')
  .action(() => withConnection(versionCommand));
program
  .command('uri')
  .description('print the connection URI')
  .action(() => withConnection(uriCommand));
program
  .command('list')
  .description('list domains')
  .option('--all', 'active and inactive domains')
  .option('--inactive', 'inactive domains only')
  .option('--name', 'names only')
  .action((o: { all?: boolean; inactive?: boolean; name?: boolean }) =>
    withConnection(async (c) => (jsonOutput() ? listJson(c, o) : listCommand(c, o)), { noTrailingLine: jsonOutput() }),
  );
program
  .command('dominfo')
  .description('domain information')
  .argument('<domain>', 'name, id or UUID')
  .action((d: string) => withConnection((c) => dominfoCommand(c, d)));
program
  .command('dumpxml')
  .description('domain XML description')
  .argument('<domain>', 'name, id or UUID')
  .addOption(new Option('--inactive', 'the persistent definition'))
  .addOption(new Option('--security-info', 'include security-sensitive data'))
  .action((d: string, o: { inactive?: boolean; securityInfo?: boolean }) =>
    withConnection((c) => dumpxmlCommand(c, d, (o.securityInfo ? 1 : 0) | (o.inactive ? 2 : 0))),
  );

function jsonOutput(): boolean {
  return program.opts<{ json?: boolean }>().json === true;
}

async function listJson(conn: Connection, o: { all?: boolean; inactive?: boolean }): Promise<string> {
  const flags = o.all ? 3 : o.inactive ? 2 : 1;
  const domains = await conn.listAllDomains(flags);
  const rows = await Promise.all(
    domains.map(async (d) => ({ name: d.name, uuid: formatUuid(d.uuid), id: d.id, state: (await conn.getDomainState(d)).state })),
  );
  return `${JSON.stringify(rows)}\n`;
}

const verbs: [Parameters<typeof domainVerbCommand>[1], string][] = [
  ['start', 'start a (previously defined) inactive domain'],
  ['shutdown', 'gracefully shut down a domain'],
  ['destroy', 'stop a domain at once'],
  ['suspend', 'suspend a running domain'],
  ['resume', 'resume a suspended domain'],
  ['undefine', "remove a domain's definition"],
];
for (const [verb, description] of verbs) {
  program
    .command(verb)
    .description(description)
    .argument('<domain>', 'name, id or UUID')
    .action((d: string) => withConnection((c) => domainVerbCommand(c, verb, d, jsonOutput()), { noTrailingLine: jsonOutput() }));
}
program
  .command('define')
  .description('define (but do not start) a domain from an XML file')
  .argument('<file>', 'the domain XML')
  .action((f: string) => withConnection((c) => defineCommand(c, f, jsonOutput()), { noTrailingLine: jsonOutput() }));
program
  .command('event')
  .description('wait for domain lifecycle events')
  .option('--domain <domain>', 'only events of this domain')
  .option('--all', 'all event kinds (virtauth reports lifecycle events)')
  .option('--loop', 'keep waiting until interrupted')
  .option('--timeout <seconds>', 'stop waiting after this many seconds', (v) => Number(v))
  .action((o: { domain?: string; loop?: boolean; timeout?: number }) =>
    withConnection(
      (c) => {
        const interrupted = new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
        // Each event is written as it comes; domain names come from the server.
        return eventCommand(c, { ...o, json: jsonOutput() }, (text) => process.stdout.write(terminalSafe(text)), interrupted);
      },
      { noTrailingLine: true },
    ),
  );
registerPasswdCommands(program);
registerLoginCommands(program, {
  configFile: () => program.opts<{ config?: string }>().config,
  write: (text) => process.stdout.write(text),
  warn: (text) => process.stderr.write(text),
});

/** Admin verbs: -c names the daemon's admin socket (virtauthd:///system?socket=...), as virt-admin's -c. */
async function withAdminConnection(run: (conn: AdminConnection) => Promise<string>): Promise<void> {
  const uri = program.opts<{ connect?: string }>().connect ?? defaultAdminUri();
  let conn: AdminConnection;
  try {
    conn = await openAdmin(uri);
  } catch (e) {
    throw new ExitError(['error: Failed to connect to the admin server', `error: ${(e as Error).message}`]);
  }
  try {
    const text = await run(conn);
    // virt-admin ends each command's output with a blank line; JSON stays one object per line.
    process.stdout.write(jsonOutput() ? text : `${text}\n`);
  } catch (e) {
    throw new ExitError([`error: ${(e as Error).message}`]);
  } finally {
    await conn.close();
  }
}
registerAdminCommands(program, { json: jsonOutput, run: withAdminConnection });

program.parseAsync(process.argv).then(
  () => process.exit(0),
  (e) => {
    if (e instanceof ExitError) {
      process.stderr.write(`${e.lines.join('\n')}\n\n`);
      process.exit(e.exitCode);
    }
    process.stderr.write(`error: ${e instanceof VirError ? errorText(e) : terminalSafe((e as Error).stack ?? String(e))}\n`);
    process.exit(1);
  },
);
