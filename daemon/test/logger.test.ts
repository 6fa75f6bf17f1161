// The daemon's logger hides secrets by field name, wherever a caller puts them.

import test from 'ava';
import { JsonSink } from './helpers.js';
import { REDACTED_PATHS, createLogger } from '../src/index.js';

test('password, token, credentials[].result and data come out redacted, at the top level and one level down', (t) => {
  const sink = new JsonSink();
  const log = createLogger(1, sink);
  log.info(
    {
      event: 'x',
      password: 'pw-top',
      token: 'tok-top',
      data: 'data-top',
      credentials: [
        { type: 5, result: 'cred-result-0' },
        { type: 2, result: 'cred-result-1' },
      ],
      request: { password: 'pw-nested', token: 'tok-nested', data: 'data-nested', credentials: [{ result: 'cred-nested' }] },
      user: 'alice',
    },
    'message',
  );
  const [line] = sink.lines;
  for (const secret of [
    'pw-top',
    'tok-top',
    'data-top',
    'cred-result-0',
    'cred-result-1',
    'pw-nested',
    'tok-nested',
    'data-nested',
    'cred-nested',
  ]) {
    t.false(line!.includes(secret), `${secret} reached the log: ${line}`);
  }
  const record = JSON.parse(line!) as Record<string, any>;
  t.is(record.password, '[redacted]');
  t.is(record.token, '[redacted]');
  t.is(record.data, '[redacted]');
  t.deepEqual(record.credentials, [
    { type: 5, result: '[redacted]' },
    { type: 2, result: '[redacted]' },
  ]);
  t.deepEqual(record.request, { password: '[redacted]', token: '[redacted]', data: '[redacted]', credentials: [{ result: '[redacted]' }] });
  t.is(record.user, 'alice', 'what is not secret stays readable');
  t.true(REDACTED_PATHS.length > 0);
});
