// A hostile daemon for the client's security tests: it speaks just enough of the remote and relay
// programs on a unix socket to get a client to CONNECT_OPEN, then does what a test tells it to
// (relay requests the client never should answer, ignore the client's caps, return text full of
// terminal escapes, offer weak SASL parameters). Everything the client sends is recorded.

import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';

import {
  RELAY_PROGRAM,
  RELAY_PROTOCOL_VERSION,
  REMOTE_PROGRAM,
  RelayProc,
  RemoteProc,
  RpcConnection,
  relayProtocol as p,
  remote,
  xdr,
  type Reply,
  type XdrReader,
} from '@virtauth/core';

/** One client connection as the fake daemon sees it. */
export class FakePeer {
  /** What the client declared with ENABLE, once it has. */
  enabled: p.RelayEnableArgs | null = null;
  readonly answers: p.RelayAnswerArgs[] = [];
  /** Remote procedure numbers in the order the client called them. */
  readonly calls: number[] = [];
  private nextId = 1;
  private readonly waiting = new Map<number, (a: p.RelayAnswerArgs) => void>();

  constructor(readonly rpc: RpcConnection) {}

  /** Sends a REQUEST (id chosen here unless given) and resolves with the client's ANSWER. */
  request(msg: Omit<p.RelayRequestMsg, 'id' | 'deadline_ms'> & { id?: number; deadline_ms?: number }): Promise<p.RelayAnswerArgs> {
    const id = msg.id ?? this.nextId++;
    const answered = new Promise<p.RelayAnswerArgs>((resolve) => this.waiting.set(id, resolve));
    this.rpc.sendMessage(RELAY_PROGRAM, RELAY_PROTOCOL_VERSION, RelayProc.REQUEST, p.relayRequestMsg, { deadline_ms: 30_000, ...msg, id });
    return answered;
  }

  /** @internal */
  answered(a: p.RelayAnswerArgs): void {
    this.answers.push(a);
    const resolve = this.waiting.get(a.id);
    this.waiting.delete(a.id);
    resolve?.(a);
  }
}

export type FakeHandler = (peer: FakePeer, body: XdrReader) => Reply | Promise<Reply>;

export interface FakeDaemonOptions {
  /** The name ENABLE returns (the last hop the client expects); null: no relay program. */
  relayName?: string | null;
  /** AUTH_LIST's answer; default none (0). */
  authTypes?: number[];
  /** Runs during CONNECT_OPEN, before its reply (relay requests go here). */
  onOpen?: (peer: FakePeer) => Promise<void> | void;
  /** Replies to other remote procedures, by number; unknown ones answer void. */
  handlers?: Partial<Record<number, FakeHandler>>;
  /** Listen with TLS on 127.0.0.1 (a client certificate from `caFile` required) instead of a unix socket. */
  tls?: { certFile: string; keyFile: string; caFile: string };
}

const reply = <R>(codec: xdr.Codec<R>, value: R): Reply => ({ codec: codec as xdr.Codec<unknown>, value });

export class FakeDaemon {
  readonly peers: FakePeer[] = [];
  private readonly server: net.Server;
  /** The TCP port when listening with TLS. */
  port = 0;

  private constructor(
    readonly socket: string,
    private readonly opts: FakeDaemonOptions,
  ) {
    if (opts.tls) {
      const { certFile, keyFile, caFile } = opts.tls;
      this.server = tls.createServer(
        { cert: readFileSync(certFile), key: readFileSync(keyFile), ca: readFileSync(caFile), requestCert: true, rejectUnauthorized: true },
        (s) => {
          // libvirt's servers send one byte once they have accepted the client's certificate.
          s.write(Buffer.from([1]));
          this.accept(s);
        },
      );
    } else {
      this.server = net.createServer((s) => this.accept(s));
    }
  }

  static async start(dir: string, name: string, opts: FakeDaemonOptions = {}): Promise<FakeDaemon> {
    const daemon = new FakeDaemon(join(dir, `${name}.sock`), opts);
    await new Promise<void>((resolve, reject) => {
      daemon.server.once('error', reject);
      if (opts.tls) daemon.server.listen(0, '127.0.0.1', resolve);
      else daemon.server.listen(daemon.socket, resolve);
    });
    if (opts.tls) daemon.port = (daemon.server.address() as net.AddressInfo).port;
    return daemon;
  }

  /** A URI that reaches this daemon with the remote driver (TLS: `extra` should carry pkipath=). */
  uri(path = '/default', extra = ''): string {
    if (this.opts.tls) return `test+tls://localhost:${this.port}${path}?${extra.replace(/^&/, '')}`;
    return `test+unix://${path}?socket=${this.socket}${extra}`;
  }

  private accept(socket: net.Socket): void {
    const rpc = new RpcConnection(socket);
    const peer = new FakePeer(rpc);
    this.peers.push(peer);
    const relayName = this.opts.relayName === undefined ? 'fake@daemon' : this.opts.relayName;
    if (relayName !== null)
      rpc.onProgramMessage(RELAY_PROGRAM, (h, body) => h.proc === RelayProc.ANSWER && peer.answered(p.relayAnswerArgs.decode(body)));
    rpc.setCallHandler(async (h, body) => {
      if (h.prog === RELAY_PROGRAM && relayName !== null && h.proc === RelayProc.ENABLE) {
        peer.enabled = p.relayEnableArgs.decode(body);
        return reply(p.relayEnableRet, { daemon: relayName, max_timeout_ms: peer.enabled.timeout_ms || 5000 });
      }
      if (h.prog !== REMOTE_PROGRAM) throw new Error(`Cannot find program ${h.prog}`);
      peer.calls.push(h.proc);
      const custom = this.opts.handlers?.[h.proc];
      if (custom) return custom(peer, body);
      switch (h.proc) {
        case RemoteProc.AUTH_LIST:
          return reply(remote.authListRet, { types: this.opts.authTypes ?? [0] });
        case RemoteProc.CONNECT_SUPPORTS_FEATURE:
          return reply(remote.connectSupportsFeatureRet, { supported: 0 });
        case RemoteProc.CONNECT_OPEN:
          await this.opts.onOpen?.(peer);
          return reply(xdr.xvoid, undefined);
        case RemoteProc.CONNECT_GET_HOSTNAME:
          return reply(remote.connectGetHostnameRet, { hostname: 'fake.example' });
        default:
          return reply(xdr.xvoid, undefined);
      }
    });
    socket.resume();
  }

  async stop(): Promise<void> {
    for (const peer of this.peers) peer.rpc.close(null);
    await new Promise((resolve) => this.server.close(resolve));
  }
}
