// The daemon's half of the relay against the contract it is written to (ExtensionSession): no
// daemon, no socket, only what the extension may see of a connection.

import test from 'ava';
import {
  CredentialType,
  ErrorCode,
  RELAY_PROGRAM,
  RelayProc,
  RelayStatus,
  VirError,
  XdrReader,
  credential,
  makeCredentialRequester,
  relayProtocol as p,
  xdr,
  type ClientRelay,
  type DriverOpenContext,
  type ExtensionLog,
  type ExtensionSession,
  type MessageHandler,
} from '@virtauth/core';
import { relayExtension } from '../src/daemon/extension.js';
import { RelayCancellation, runRelayHandler, type RelayClientConfig } from '../src/request.js';

/** One client connection as the daemon would hand it over, recording what the extension does. */
class FakeSession implements ExtensionSession {
  static nextId = 1;
  readonly connectionId = FakeSession.nextId++;
  openStarted = false;
  closeReason: VirError | null = null;
  readonly sent: { proc: number; value: unknown }[] = [];
  readonly warnings: object[] = [];
  readonly closers: (() => void)[] = [];
  private handler: MessageHandler | undefined;
  readonly log: ExtensionLog = { debug: () => {}, child: () => this.log };
  readonly peerFaults = { warn: (fields: object) => void this.warnings.push(fields) };
  readonly rpc = {
    id: this.connectionId,
    call: () => Promise.reject(new Error('the daemon side never calls its client')),
    sendMessage: (_prog: number, _vers: number, proc: number, _codec: unknown, value: unknown) => void this.sent.push({ proc, value }),
    onProgramMessage: (prog: number, handler: MessageHandler) => {
      if (prog === RELAY_PROGRAM) this.handler = handler;
    },
    once: () => this.rpc,
  };

  onClose(fn: () => void): void {
    this.closers.push(fn);
  }

  /** A one-way message from the client: the header's proc, and the body as its bytes. */
  receive(proc: number, body: Buffer): void {
    this.handler!({ proc } as Parameters<MessageHandler>[0], new XdrReader(body));
  }
}

const settings = { maxTimeoutMs: 60_000, maxRequestsPerOpen: 8 };
const enableArgs = { cred_types: [CredentialType.AUTHNAME], person_present: 1, timeout_ms: 0, max_requests: 4 };

function setUp() {
  const ext = relayExtension<FakeSession>(settings);
  const [program] = ext.programs({ processName: 'virtauthd@a' });
  const enable = (s: FakeSession) => program!.procedures.get(RelayProc.ENABLE)!.handle(s, enableArgs) as p.RelayEnableArgs;
  const session = new FakeSession();
  ext.onSession(session);
  return { ext, enable, session };
}

const baseContext = (): DriverOpenContext => ({
  requestCredentials: makeCredentialRequester([], null),
  auth: null,
  readOnly: false,
  processName: 'virtauthd@a',
});

test('ENABLE once CONNECT_OPEN has started is refused, and the client is not marked as relaying', (t) => {
  const { ext, enable, session } = setUp();
  session.openStarted = true;
  const e = t.throws(() => enable(session)) as VirError;
  t.is(e.code, ErrorCode.OPERATION_INVALID);
  t.regex(e.message, /must be enabled before CONNECT_OPEN/);
  t.false(ext.relayEnabled(session));
});

test("an ANSWER from a client that never enabled the relay is dropped, undecoded, with a warning in the connection's budget", (t) => {
  const { session } = setUp();
  session.receive(RelayProc.ANSWER, Buffer.from('not XDR at all'));
  t.deepEqual(session.warnings, [{ event: 'relay.answer.rejected', reason: 'the credential relay is not enabled on this connection' }]);
  t.deepEqual(session.sent, []);
});

test("a remote driver opened here forwards the next daemon's request with this daemon added to the chain", async (t) => {
  const { ext, enable, session } = setUp();
  t.deepEqual(enable(session), { daemon: 'virtauthd@a', max_timeout_ms: 60_000 });
  t.true(ext.relayEnabled(session));
  session.openStarted = true;
  const ctx = await ext.decorateOpenContext(session, baseContext(), { uri: 'remote+unix:///', driver: 'remote', sources: [] });
  t.deepEqual(ctx.relay?.credTypes, [CredentialType.AUTHNAME]);
  const hopB = { daemon: 'virtauthd@b', driver: 'xenapi', uri: 'xenapi://xen1/' };
  const creds = [credential(CredentialType.AUTHNAME, 'user')];
  const forwarded = runRelayHandler(
    // The forwarding handler behind ctx.relay, as the wire half would call it for B's REQUEST.
    (ctx.relay as ClientRelay & RelayClientConfig).handle,
    { service: 'xenapi', host: 'xen1', origin: [hopB], credentials: creds, deadline: Date.now() + 30_000 },
    new RelayCancellation(),
  );
  const request = session.sent.find((m) => m.proc === RelayProc.REQUEST)?.value as p.RelayRequestMsg;
  t.deepEqual(request.origin, [hopB, { daemon: 'virtauthd@a', driver: 'remote', uri: 'remote+unix:///' }]);
  session.receive(
    RelayProc.ANSWER,
    xdr.encode(p.relayAnswerArgs, { id: request.id, status: RelayStatus.OK, results: ['alice'], message: '' }),
  );
  await forwarded;
  t.is(creds[0]!.result, 'alice');
  // A replay of the same answer has nothing left to settle.
  session.receive(
    RelayProc.ANSWER,
    xdr.encode(p.relayAnswerArgs, { id: request.id, status: RelayStatus.OK, results: ['mallory'], message: '' }),
  );
  t.is(creds[0]!.result, 'alice');
  t.like(session.warnings.at(-1), { event: 'relay.answer.rejected', id: request.id });
  ext.openFinished(session);
});

test('a session whose client did not enable the relay gives its drivers no ctx.relay, and their requests fail at once', async (t) => {
  const { ext, session } = setUp();
  session.openStarted = true;
  const ctx = await ext.decorateOpenContext(session, baseContext(), { uri: 'xenapi://xen1/', driver: 'xenapi', sources: [] });
  t.is(ctx.relay, undefined);
  const e = await t.throwsAsync(ctx.requestCredentials([credential(CredentialType.AUTHNAME, 'user')], { service: 'xenapi', host: 'xen1' }));
  t.is((e as VirError).int1, RelayStatus.UNAVAILABLE);
  t.regex(e!.message, /did not enable the credential relay/);
  ext.openFinished(session);
});
