import test from 'ava';
import { container as rootContainer } from 'tsyringe';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DRIVER, SASL_MECHANISM, type Driver } from '@virtauth/core';
import { TestDriver } from '@virtauth/drivers';
import { createDaemon, defaultConfig, createLogger } from '../src/index.js';

// A third-party driver that serves `fake:///` with the test driver's data under another name.
class FakeDriver implements Driver {
  readonly name = 'fake';
  private readonly inner = new TestDriver();
  accepts(uri: { driver: string; host: string | null }) {
    return uri.driver === 'fake' && !uri.host;
  }
  open(_uri: Parameters<Driver['open']>[0], ctx: Parameters<Driver['open']>[1]) {
    return this.inner.open(
      { raw: 'test:///default', driver: 'test', transport: null, user: null, host: null, port: null, path: '/default', params: [] },
      ctx,
    );
  }
}

test('plugins registered in the container given to createDaemon are found next to the shipped ones', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'va-plug-'));
  const container = rootContainer.createChildContainer();
  container.register(DRIVER, { useValue: new FakeDriver() });
  const daemon = await createDaemon({
    config: defaultConfig(),
    container,
    logger: createLogger(4, { write: () => true } as unknown as NodeJS.WritableStream),
    listeners: [{ kind: 'unix', path: join(dir, 'sock'), auth: 0, readOnly: false }],
  });
  try {
    const names = daemon.container.resolveAll(DRIVER).map((d) => d.name);
    t.true(names.includes('fake'));
    t.true(names.includes('test'));
    t.true(names.includes('remote'));
    t.true(daemon.container.resolveAll(SASL_MECHANISM).some((m) => m.name === 'SCRAM-SHA-256'));
  } finally {
    await daemon.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
