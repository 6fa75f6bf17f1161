// A unix datagram socket for tests to stand in for systemd's NOTIFY_SOCKET or the journal's
// socket. Node cannot bind one, so a small python3 program does and reports each datagram
// (or, for a journal entry passed as a memfd, the memfd's contents) as a base64 line.
import { spawn, type ChildProcess } from 'node:child_process';

import { systemPython } from './executables.js';

const receiverProgram = String.raw`
import array, base64, os, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind('\0' + path[1:] if path.startswith('@') else path)
print('ready', flush=True)
while True:
    data, ancillary, flags, address = s.recvmsg(1 << 22, socket.CMSG_SPACE(16))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array('i')
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
            for fd in fds:
                os.lseek(fd, 0, 0)
                chunks = []
                while True:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
                os.close(fd)
                data = b''.join(chunks)
    print(base64.b64encode(data).decode(), flush=True)
`;

export class DatagramReceiver {
  readonly received: Buffer[] = [];
  private readonly waiters = new Set<() => void>();

  private constructor(
    readonly path: string,
    private readonly child: ChildProcess,
  ) {}

  /** Binds `path` (a leading '@' for an abstract name) and resolves once it receives. */
  static async start(path: string): Promise<DatagramReceiver> {
    const child = spawn(systemPython, ['-I', '-c', receiverProgram, path], { stdio: ['ignore', 'pipe', 'pipe'] });
    const receiver = new DatagramReceiver(path, child);
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString('utf8');
    });
    await new Promise<void>((resolve, reject) => {
      let pending = '';
      let ready = false;
      child.once('error', reject);
      child.once('exit', (code) => {
        if (!ready) reject(new Error(`datagram receiver exited (${code}) before binding ${path}: ${stderr.trim()}`));
      });
      child.stdout?.setEncoding('utf8');
      child.stdout?.on('data', (chunk: string) => {
        pending += chunk;
        let newline;
        while ((newline = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, newline);
          pending = pending.slice(newline + 1);
          if (!ready && line === 'ready') {
            ready = true;
            resolve();
          } else if (ready) {
            receiver.received.push(Buffer.from(line, 'base64'));
            for (const wake of receiver.waiters) wake();
          }
        }
      });
    });
    return receiver;
  }

  /** The first datagram (from index `from` on) that satisfies `accept`; fails after `timeoutMs`. */
  async waitFor(accept: (datagram: Buffer) => boolean, timeoutMs = 60_000, from = 0): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.received.slice(from).find(accept);
        if (found === undefined) return false;
        this.waiters.delete(check);
        clearTimeout(timer);
        resolve(found);
        return true;
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(
          new Error(
            `no matching datagram on ${this.path} within ${timeoutMs} ms; got ${this.received.length}: ${this.received.map((d) => JSON.stringify(d.toString('utf8').slice(0, 200))).join(', ')}`,
          ),
        );
      }, timeoutMs);
      if (!check()) this.waiters.add(check);
    });
  }

  close(): void {
    this.child.kill('SIGKILL');
  }
}
