// SCRAM grammar, string preparation and key derivation, checked against RFC 5802/7677.

import test from 'ava';
import fc from 'fast-check';
import {
  decodeBase64Strict,
  escapeSaslName,
  formatClientFirstBare,
  formatGs2Header,
  makeScramVerifier,
  parseClientFinal,
  parseClientFirst,
  parseServerFinal,
  parseServerFirst,
  passwordMatchesVerifier,
  prepareString,
  SaslPrepError,
  SCRAM_SHA_256,
  ScramProtocolError,
  ScramServerError,
  unescapeSaslName,
  verifyClientProof,
  authMessage,
} from '../src/sasl/scram.js';

test('RFC 7677 verifier: StoredKey/ServerKey for "pencil" reproduce the example proof', async (t) => {
  const salt = Buffer.from('W22ZaJ0SNY7soEsUEjb6gQ==', 'base64');
  const verifier = await makeScramVerifier('pencil', { iterations: 4096, salt });
  t.is(verifier.hash, 'SHA-256');
  t.is(verifier.iterations, 4096);
  const nonce = 'rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0';
  const message = authMessage('n=user,r=rOprNGfwEbeRWgbNEkqO', `r=${nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096`, `c=biws,r=${nonce}`);
  const proof = Buffer.from('dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=', 'base64');
  t.true(verifyClientProof(SCRAM_SHA_256, verifier.storedKey, message, proof));
  const tampered = Buffer.from(proof);
  tampered[0] = tampered[0]! ^ 1;
  t.false(verifyClientProof(SCRAM_SHA_256, verifier.storedKey, message, tampered));
  t.false(verifyClientProof(SCRAM_SHA_256, verifier.storedKey, message, proof.subarray(1)));
  t.true(await passwordMatchesVerifier(SCRAM_SHA_256, verifier, 'pencil'));
  t.false(await passwordMatchesVerifier(SCRAM_SHA_256, verifier, 'pencil2'));
});

test('makeScramVerifier: random 16-byte salts, iteration count validated', async (t) => {
  const a = await makeScramVerifier('secret', { iterations: 4096 });
  const b = await makeScramVerifier('secret', { iterations: 4096 });
  t.is(a.salt.length, 16);
  t.notDeepEqual(a.salt, b.salt);
  t.notDeepEqual(a.storedKey, b.storedKey);
  await t.throwsAsync(makeScramVerifier('secret', { iterations: 0 }), { instanceOf: RangeError });
  await t.throwsAsync(makeScramVerifier('secret', { iterations: 1.5 }), { instanceOf: RangeError });
});

test('saslname escaping: "=" and "," are escaped, stray "=" rejected', (t) => {
  t.is(escapeSaslName('a,b=c'), 'a=2Cb=3Dc');
  t.is(unescapeSaslName('a=2Cb=3Dc'), 'a,b=c');
  for (const bad of ['a=', 'a=2', 'a=2c', 'a=3d', 'a=41', '']) {
    const error = t.throws(() => unescapeSaslName(bad), { instanceOf: ScramProtocolError });
    t.is(error?.errorValue, 'invalid-username-encoding');
  }
});

test('property: saslname escaping round-trips and never leaves "," or a bare "="', (t) => {
  fc.assert(
    fc.property(fc.string({ minLength: 1, unit: 'grapheme' }), (name) => {
      const escaped = escapeSaslName(name);
      return !escaped.includes(',') && unescapeSaslName(escaped) === name && !/=(?!2C|3D)/.test(escaped);
    }),
  );
  t.pass();
});

test('property: client-first messages round-trip through the parser', (t) => {
  const nonce = fc.stringMatching(/^[\x21-\x2b\x2d-\x7e]{1,40}$/);
  const name = fc.string({ minLength: 1, maxLength: 30, unit: 'grapheme' }).filter((s) => !s.includes('\0'));
  fc.assert(
    fc.property(name, fc.option(name, { nil: null }), nonce, fc.constantFrom('n', 'y', 'p'), (user, authzid, n, kind) => {
      const flag = kind === 'p' ? { kind: 'p' as const, name: 'tls-exporter' } : { kind: kind as 'n' | 'y' };
      const header = formatGs2Header(flag, authzid);
      const parsed = parseClientFirst(header + formatClientFirstBare(user, n));
      return (
        parsed.username === user &&
        parsed.authzid === authzid &&
        parsed.nonce === n &&
        parsed.gs2Header === header &&
        parsed.flag.kind === kind
      );
    }),
  );
  t.pass();
});

test('property: parsers reject arbitrary text only with SCRAM errors', (t) => {
  fc.assert(
    // Built from the grammar's own characters so that the parsers get past their first checks.
    fc.property(fc.string({ maxLength: 80, unit: fc.constantFrom(...'nyparsicvme=,2CD3QUJbiws+/\u00e9\0 '.split('')) }), (text) => {
      for (const parse of [parseClientFirst, parseServerFirst, parseClientFinal, parseServerFinal]) {
        try {
          parse(text);
        } catch (e) {
          if (!(e instanceof ScramProtocolError || e instanceof ScramServerError)) return false;
        }
      }
      return true;
    }),
  );
  t.pass();
});

test('parseClientFirst: strict GS2 header and attribute order', (t) => {
  const ok = parseClientFirst('n,a=adm=2Cin,n=alice,r=abc,x=ignored');
  t.is(ok.authzid, 'adm,in');
  t.is(ok.bare, 'n=alice,r=abc,x=ignored');
  t.deepEqual(parseClientFirst('p=tls-server-end-point,,n=a,r=b').flag, { kind: 'p', name: 'tls-server-end-point' });
  const cases: [string, ScramProtocolError['errorValue']][] = [
    ['n,,m=ext,n=alice,r=abc', 'extensions-not-supported'],
    ['x,,n=alice,r=abc', 'invalid-encoding'],
    ['p=,,n=alice,r=abc', 'invalid-encoding'],
    ['n,b=x,n=alice,r=abc', 'invalid-encoding'],
    ['n,,r=abc,n=alice', 'invalid-encoding'],
    ['n,,n=alice', 'invalid-encoding'],
    ['n,,n=al=ice,r=abc', 'invalid-username-encoding'],
    ['n,,n=alice,r=a b', 'invalid-encoding'],
    ['n,,n=alice,r=', 'invalid-encoding'],
    ['n,,n=alice,r=abc,', 'invalid-encoding'],
    ['n,,n=alice', 'invalid-encoding'],
    ['n,n=alice,r=abc', 'invalid-encoding'],
  ];
  for (const [message, errorValue] of cases) {
    const error = t.throws(() => parseClientFirst(message), { instanceOf: ScramProtocolError }, message);
    t.is(error?.errorValue, errorValue, message);
  }
});

test('parseServerFirst: nonce, canonical base64 salt, positive iteration count', (t) => {
  t.deepEqual(parseServerFirst('r=abcdef,s=QUJD,i=4096,z=ext'), { nonce: 'abcdef', salt: Buffer.from('ABC'), iterations: 4096 });
  for (const bad of [
    'r=abc,s=QUJD,i=0',
    'r=abc,s=QUJD,i=01',
    'r=abc,s=QUJD,i=-1',
    'r=abc,s=QUJD,i=4294967296',
    'r=abc,s=QUJD',
    'r=abc,s=QR==,i=1',
    'r=abc,s=QUJ,i=1',
    'r=abc,s=QU*D,i=1',
    's=QUJD,r=abc,i=1',
    'm=x,r=abc,s=QUJD,i=1',
  ]) {
    t.throws(() => parseServerFirst(bad), { instanceOf: ScramProtocolError }, bad);
  }
  const error = t.throws(() => parseServerFirst('e=other-error'), { instanceOf: ScramServerError });
  t.is(error?.errorValue, 'other-error');
});

test('parseClientFinal: proof must come last; without-proof part is exact', (t) => {
  const parsed = parseClientFinal('c=biws,r=abc,x=ext,p=QUJD');
  t.is(parsed.withoutProof, 'c=biws,r=abc,x=ext');
  t.deepEqual(parsed.channelBinding, Buffer.from('n,,'));
  t.deepEqual(parsed.proof, Buffer.from('ABC'));
  for (const bad of ['c=biws,r=abc', 'c=biws,p=QUJD,r=abc', 'r=abc,c=biws,p=QUJD', 'c=bi,r=abc,p=QUJD', 'c=biws,r=abc,p=QUJD=']) {
    t.throws(() => parseClientFinal(bad), { instanceOf: ScramProtocolError }, bad);
  }
});

test('parseServerFinal: verifier or sanitized error', (t) => {
  t.deepEqual(parseServerFinal('v=QUJD'), { kind: 'verifier', signature: Buffer.from('ABC') });
  t.deepEqual(parseServerFinal('e=invalid-proof'), { kind: 'error', errorValue: 'invalid-proof' });
  t.deepEqual(parseServerFinal('e=<script> \x1b[31m'), { kind: 'error', errorValue: 'unspecified error' });
  t.throws(() => parseServerFinal('x=1'), { instanceOf: ScramProtocolError });
});

test('decodeBase64Strict: canonical padded base64 only', (t) => {
  t.deepEqual(decodeBase64Strict('QUJD'), Buffer.from('ABC'));
  t.deepEqual(decodeBase64Strict('QQ=='), Buffer.from('A'));
  for (const bad of ['QR==', 'QQ', 'QQ=', 'Q===', 'QUJD\n', 'QU JD', '-_8=']) t.is(decodeBase64Strict(bad), null, bad);
});

test('prepareString: SASLprep mapping and prohibition, without echoing the value', (t) => {
  t.is(prepareString('I\u00ADX', 'password', 'query'), 'IX');
  t.is(prepareString('\u2168', 'password', 'query'), 'IX');
  t.is(prepareString('a\u00A0b', 'user name', 'query'), 'a b');
  const error = t.throws(() => prepareString('hunter\u0007', 'password', 'query'), { instanceOf: SaslPrepError });
  t.false(error!.message.includes('hunter'));
  t.regex(error!.message, /password contains a character SASLprep/);
  t.throws(() => prepareString('\u00AD', 'user name', 'query'), { message: /empty after SASLprep/ });
  // U+0221 is unassigned in Unicode 3.2: allowed in queries, refused for stored strings.
  t.is(prepareString('\u0221', 'password', 'query'), '\u0221');
  t.throws(() => prepareString('\u0221', 'password', 'stored'), { message: /unassigned/ });
});
