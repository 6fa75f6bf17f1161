// Audit lines written straight to the log's destination: the same line pino would write, and
// nothing built when info lines are off.

import test from 'ava';
import { PassThrough } from 'node:stream';
import { auditLineWriter } from '../src/audit-log.js';
import { createLogger } from '../src/logger.js';

function capture() {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
  return {
    stream,
    lines: () =>
      text
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

const record = {
  id: 7,
  connectionId: 3,
  origin: [{ daemon: 'virtauthd@b', driver: 'xenapi', uri: 'xenapi://x/' }],
  service: 'xenapi',
  host: 'x',
  credentialTypes: ['PASSPHRASE'],
  outcome: 'OK',
  durationMs: 4,
};

test('an audit line is the line pino writes for the same record, written at once, in order', (t) => {
  const out = capture();
  const log = createLogger(2, out.stream).child({ conn: 3, transport: 'unix' }).child({ event: 'relay.audit' });
  const write = auditLineWriter(log, 'relayed credential request');
  t.truthy(write);
  log.info(record, 'relayed credential request');
  write!(record);
  write!({ ...record, id: 8 });
  const [viaPino, first, second] = out.lines();
  const withoutTime = ({ time: _time, ...rest }: Record<string, unknown>) => rest;
  t.deepEqual(withoutTime(first!), withoutTime(viaPino!));
  t.is(typeof first!['time'], 'number');
  t.is(second!['id'], 8);
});

test('a prepared line, its first fields rendered ahead, is the line written at once', (t) => {
  const out = capture();
  const log = createLogger(2, out.stream).child({ conn: 3, transport: 'unix' }).child({ event: 'relay.audit' });
  const write = auditLineWriter(log, 'relayed credential request')!;
  const { outcome, durationMs, ...first } = record;
  const finish = write.prepare(first);
  // Fields changed after prepare() are not in the line: it was rendered when prepared.
  first.service = 'changed';
  write(record);
  finish({ outcome: 'TIMED_OUT', durationMs: 9, message: 'no answer' });
  finish({ outcome, durationMs });
  const [whole, timedOut, ok] = out.lines();
  const withoutTime = ({ time: _time, ...rest }: Record<string, unknown>) => rest;
  t.deepEqual(withoutTime(ok!), withoutTime(whole!));
  t.deepEqual(Object.keys(ok!), Object.keys(whole!), 'the same fields in the same order');
  t.like(timedOut, { service: 'xenapi', outcome: 'TIMED_OUT', durationMs: 9, message: 'no answer', msg: 'relayed credential request' });
});

test('with info lines off there is no writer, and nothing is built', (t) => {
  const out = capture();
  t.is(auditLineWriter(createLogger(3, out.stream), 'relayed credential request'), null);
});
