// The journal's native format: fields written and read back, binary form for multi-line values,
// field names the journal accepts, and what a log record becomes.

import fc from 'fast-check';
import test from 'ava';
import { decodeJournalEntry, encodeJournalEntry, journalFieldName, journalFieldsOf } from '../src/logging/journal.js';
import { JournalSink } from '../src/logging/sinks.js';
import { keepProcessAlive } from './helpers.js';

test('values with newlines use the length-prefixed form; entries read back as written', (t) => {
  const fields: [string, string][] = [
    ['MESSAGE', 'line one\nline two'],
    ['PRIORITY', '4'],
    ['VIRTAUTH_EMPTY', ''],
  ];
  const bytes = encodeJournalEntry(fields);
  t.true(bytes.includes(Buffer.from('MESSAGE\n\x11\0\0\0\0\0\0\0line one\nline two\n', 'latin1')));
  t.true(bytes.includes(Buffer.from('PRIORITY=4\n')));
  t.deepEqual(decodeJournalEntry(bytes), fields);
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.constantFrom('MESSAGE', 'VIRTAUTH_X', 'CODE_FILE'), fc.string({ unit: 'grapheme' }))), (generated) => {
      t.deepEqual(decodeJournalEntry(encodeJournalEntry(generated)), generated);
    }),
  );
});

test('truncated or malformed entries are rejected by the reader, never misread', (t) => {
  const bytes = encodeJournalEntry([['MESSAGE', 'a\nb']]);
  for (let cut = 1; cut < bytes.length; cut++) t.throws(() => decodeJournalEntry(bytes.subarray(0, cut)), undefined, `cut at ${cut}`);
});

test('field names: upper case, digits and _, prefixed with VIRTAUTH_, at most 64 characters', (t) => {
  t.is(journalFieldName('peerUid'), 'VIRTAUTH_PEER_UID');
  t.is(journalFieldName('tls.dn-list'), 'VIRTAUTH_TLS_DN_LIST');
  t.is(journalFieldName('x'.repeat(100)).length, 64);
  fc.assert(fc.property(fc.string(), (key) => t.regex(journalFieldName(key), /^VIRTAUTH_[A-Z0-9_]*$/)));
});

test('a record becomes MESSAGE, PRIORITY, CODE_* and VIRTAUTH_* fields', (t) => {
  const fields = new Map(
    journalFieldsOf(
      {
        level: 40,
        time: 1,
        name: 'virtauthd',
        msg: 'client refused',
        conn: 7,
        event: 'client.refused',
        err: { message: 'x' },
        src: { file: 'daemon/src/server.ts', line: 12, func: 'accept' },
        hostname: 'h',
      },
      'virtauthd',
    ),
  );
  t.is(fields.get('MESSAGE'), 'client refused');
  t.is(fields.get('PRIORITY'), '4');
  t.is(fields.get('SYSLOG_IDENTIFIER'), 'virtauthd');
  t.is(fields.get('CODE_FILE'), 'daemon/src/server.ts');
  t.is(fields.get('CODE_LINE'), '12');
  t.is(fields.get('CODE_FUNC'), 'accept');
  t.is(fields.get('VIRTAUTH_EVENT'), 'client.refused');
  t.is(fields.get('VIRTAUTH_CLIENT_ID'), '7');
  t.is(fields.get('VIRTAUTH_ERR'), '{"message":"x"}');
  t.false(fields.has('VIRTAUTH_HOSTNAME'));
  t.false(fields.has('VIRTAUTH_TIME'));
});

test('the journal sink: big entries go as a memfd, a full queue waits and retries in order, no journal warns once', async (t) => {
  const sent: { viaMemfd: boolean; message: string; droppedBefore: string | undefined }[] = [];
  let mode: 'ok' | 'EMSGSIZE' | 'EAGAIN' | 'ENOENT' = 'EMSGSIZE';
  const complaints: string[] = [];
  let onSent = () => {};
  const sink = new JournalSink(
    '/run/test-journal',
    'virtauthd',
    (_path, data, viaMemfd) => {
      if (mode !== 'ok' && !(mode === 'EMSGSIZE' && viaMemfd)) throw Object.assign(new Error(mode), { code: mode });
      const fields = new Map(decodeJournalEntry(data));
      sent.push({ viaMemfd, message: fields.get('MESSAGE')!.slice(0, 10), droppedBefore: fields.get('VIRTAUTH_DROPPED_BEFORE') });
      onSent();
    },
    (message) => complaints.push(message),
  );
  const record = (msg: string) => () => ({ level: 30, msg });
  sink.write('', record('x'.repeat(300_000)));
  t.deepEqual(
    sent.map((s) => s.viaMemfd),
    [true],
  );

  mode = 'EAGAIN';
  sink.write('', record('a'));
  sink.write('', record('b'));
  t.is(sent.length, 1, 'nothing sent while the queue is full, and nothing thrown');
  mode = 'ok';
  // The sink retries on its own timer (unref'd, as a daemon's must be): wait for both sends.
  keepProcessAlive(t);
  await new Promise<void>((resolve) => (onSent = () => sent.length === 3 && resolve()));
  t.deepEqual(
    sent.slice(1).map((s) => s.message),
    ['a', 'b'],
    'sent later, in order',
  );
  t.deepEqual(complaints, []);

  mode = 'ENOENT';
  sink.write('', record('d'));
  sink.write('', record('e'));
  t.is(complaints.length, 1);
  t.regex(complaints[0]!, /cannot write to the journal at \/run\/test-journal \(ENOENT\)/);
  mode = 'ok';
  sink.write('', record('f'));
  t.like(sent.at(-1), { message: 'f', droppedBefore: '2' });
  sink.close();
});
