// The person's token cache without an IdP: file and directory modes, the seal against edits and
// swaps, refusal of files others can read or that are not regular files, and the cross-process
// lock under writers racing each other.

import { chmod, lstat, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { TokenCacheFile, defaultTokenCacheDirectory, type StoredToken } from '../src/oauthbearer/token-cache.js';

const token = (accessToken: string): StoredToken => ({
  accessToken,
  expiresAt: Date.now() + 60_000,
  refreshToken: 'r-1',
  scope: 'openid libvirt',
  subject: 'alice',
  obtainedAt: Date.now(),
});

async function cacheIn(
  t: { teardown(fn: () => Promise<void>): void },
  issuer = 'https://id.example',
  clientId = 'cli',
): Promise<TokenCacheFile> {
  const directory = join(await mkdtemp(join(tmpdir(), 'tc-')), 'tokens');
  t.teardown(() => rm(join(directory, '..'), { recursive: true, force: true }));
  return new TokenCacheFile({ directory, issuer, clientId });
}

async function put(cache: TokenCacheFile, slot: string, value: StoredToken): Promise<void> {
  await cache.update(async ({ entries }) => {
    entries.set(slot, value);
    return { value: undefined, write: true };
  });
}

test('tokens round-trip through a 0600 file in a 0700 directory', async (t) => {
  const cache = await cacheIn(t);
  t.deepEqual(await cache.read(), { entries: new Map(), refused: null }, 'no file: empty, not refused');
  await put(cache, 'aud\nscope', token('at-1'));
  const { entries, refused } = await cache.read();
  t.is(refused, null);
  t.is(entries.get('aud\nscope')?.accessToken, 'at-1');
  t.is((await lstat(cache.path)).mode & 0o777, 0o600);
  t.is((await lstat(join(cache.path, '..'))).mode & 0o777, 0o700);
});

test('an edited, swapped, world-readable or symlinked cache file is refused', async (t) => {
  const cache = await cacheIn(t);
  await put(cache, 'k', token('at-1'));
  const original = await readFile(cache.path, 'utf8');

  await writeFile(cache.path, original.replace('at-1', 'at-2'));
  t.regex((await cache.read()).refused ?? '', /changed outside virtauth \(its seal does not match\)/);
  await writeFile(cache.path, 'not json');
  t.regex((await cache.read()).refused ?? '', /not valid JSON/);
  await writeFile(cache.path, '{"body":"{}"}');
  t.regex((await cache.read()).refused ?? '', /unknown layout/);

  // Another issuer's file, sealed with the same key, moved into this slot.
  const other = new TokenCacheFile({ directory: join(cache.path, '..'), issuer: 'https://evil.example', clientId: 'cli' });
  await put(other, 'k', token('at-evil'));
  await writeFile(cache.path, await readFile(other.path));
  t.regex((await cache.read()).refused ?? '', /belongs to another issuer or client/);

  await writeFile(cache.path, original);
  await chmod(cache.path, 0o644);
  t.regex((await cache.read()).refused ?? '', /accessible to others \(mode 0644, must be 0600\)/);
  await rm(cache.path);
  await symlink(other.path, cache.path);
  t.regex((await cache.read()).refused ?? '', /is not a regular file/);

  // A refused file is replaced by the next write, never merged into it.
  await rm(cache.path);
  await writeFile(cache.path, 'garbage', { mode: 0o600 });
  await put(cache, 'k2', token('at-3'));
  const after = await cache.read();
  t.is(after.refused, null);
  t.deepEqual([...after.entries.keys()], ['k2']);
});

test('a directory others can write to is refused before anything is written', async (t) => {
  const cache = await cacheIn(t);
  await put(cache, 'k', token('at-1'));
  await chmod(join(cache.path, '..'), 0o777);
  const error = await t.throwsAsync(put(cache, 'k', token('at-2')));
  t.regex(error?.message ?? '', /token cache directory .* is accessible to others \(mode 0777, must be 0700\)/);
});

test('writers racing under the lock lose no update', async (t) => {
  const cache = await cacheIn(t);
  const peers = Array.from({ length: 8 }, (_, i) =>
    new TokenCacheFile({ directory: join(cache.path, '..'), issuer: 'https://id.example', clientId: 'cli' }).update(async ({ entries }) => {
      const count = Number(entries.get('count')?.accessToken ?? '0');
      await new Promise((resolve) => setImmediate(resolve));
      entries.set('count', token(String(count + 1)));
      entries.set(`writer-${i}`, token(`at-${i}`));
      return { value: undefined, write: true };
    }),
  );
  await Promise.all(peers);
  const { entries } = await cache.read();
  t.is(entries.get('count')?.accessToken, '8');
  t.is(entries.size, 9);
});

test('the default directory is under XDG_STATE_HOME, else ~/.local/state', (t) => {
  t.is(defaultTokenCacheDirectory({ XDG_STATE_HOME: '/s' }, '/home/a'), '/s/virtauth/tokens');
  t.is(defaultTokenCacheDirectory({ XDG_STATE_HOME: 'relative' }, '/home/a'), '/home/a/.local/state/virtauth/tokens');
  t.is(defaultTokenCacheDirectory({}, '/home/a'), '/home/a/.local/state/virtauth/tokens');
});

test('first writers racing on a fresh directory agree on one whole seal key', async (t) => {
  const first = await cacheIn(t);
  const directory = join(first.path, '..');
  // Separate instances share no memory: each must find the key another may be creating.
  const caches = Array.from({ length: 24 }, () => new TokenCacheFile({ directory, issuer: 'https://id.example', clientId: 'cli' }));
  await Promise.all(caches.map((cache, i) => put(cache, `slot-${i}`, token(`at-${i}`))));
  const { entries, refused } = await first.read();
  t.is(refused, null);
  t.is(entries.size, 24, 'every writer kept the others’ tokens');
  t.deepEqual(
    (await readdir(directory)).filter((name) => name.includes('.key.')),
    [],
    'no draft key is left behind',
  );
});
