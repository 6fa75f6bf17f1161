// `virtauth passwd add|del|list`: virtauthd's SCRAM user database, found through the same
// config file the daemon reads.

import type { Command } from 'commander';
import { FileUserDatabase, loadSaslSettings } from '@virtauth/providers';
import { read } from 'read';

/** Reads a new password: without echo from a terminal, else the first line of stdin. */
async function readPassword(): Promise<string> {
  if (process.stdin.isTTY) {
    const first = await read({ prompt: 'New password: ', silent: true, replace: '' });
    const again = await read({ prompt: 'Retype new password: ', silent: true, replace: '' });
    if (first !== again) throw new Error('the passwords do not match');
    return first;
  }
  let text = '';
  for await (const chunk of process.stdin) text += chunk;
  const line = text.split(/\r?\n/)[0] ?? '';
  return line;
}

function database(configFile: string | undefined): FileUserDatabase {
  const settings = loadSaslSettings(configFile ?? null);
  return new FileUserDatabase({ path: settings.userDatabasePath, iterations: settings.iterations });
}

export function registerPasswdCommands(program: Command): void {
  const passwd = program.command('passwd').description("manage virtauthd's SASL user database");
  passwd
    .command('add')
    .description('add a user or change its password (read without echo, or from stdin)')
    .argument('<user>')
    .option('--config <file>', "virtauthd's config file (it says where the database is)")
    .action(async (user: string, o: { config?: string }) => {
      const password = await readPassword();
      if (password === '') throw new Error('an empty password is not allowed');
      const db = database(o.config);
      await db.setPassword(user, password);
      process.stderr.write(`user '${user}' saved in ${db.path}\n`);
    });
  passwd
    .command('del')
    .description('remove a user')
    .argument('<user>')
    .option('--config <file>', "virtauthd's config file")
    .action(async (user: string, o: { config?: string }) => {
      const db = database(o.config);
      if (!(await db.remove(user))) throw new Error(`no user '${user}' in ${db.path}`);
      process.stderr.write(`user '${user}' removed from ${db.path}\n`);
    });
  passwd
    .command('list')
    .description('list users')
    .option('--config <file>', "virtauthd's config file")
    .action(async (o: { config?: string }) => {
      for (const u of await database(o.config).list()) process.stdout.write(`${u}\n`);
    });
}
