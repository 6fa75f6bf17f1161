// vol-upload and vol-download through the gateway to a real libvirtd's storage driver
// (`storage:///system`, a `dir` pool in a temp folder; libvirtd's test driver has no volume
// streams). Real virsh and python3-libvirt, with holes (STREAM_HOLE) and without, each run once
// directly against libvirtd and once through virtauthd: the outputs and the bytes must be equal.
// Then what a client that dies or misbehaves mid-upload leaves behind: nothing, libvirtd closes the volume.
// (Stray stream data is covered in interop-gateway.test.ts and the fake-peer gateway tests.)

import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, readdir, readlink, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import type { ExecutionContext } from 'ava';

import { MessageStatus, MessageType, PACKET_MAX, REMOTE_PROGRAM, encodePacket, xdr } from '@virtauth/core';

import {
  GatewayPair,
  libvirtdClients,
  pythonGatewayScript,
  scratchDir,
  startGatewayPair,
  type GatewayPairOptions,
} from './gateway-support.js';
import { runPython, runVirsh } from './peers/clients.js';
import { requireExecutable, systemPython } from './peers/executables.js';
import { TestPki, describeResult, interopTest, libvirtClientEnv, waitFor } from './peers/index.js';

const STORAGE_URI = 'storage:///system';
const POOL = 'gwpool';
const VOLUME_BYTES = 4 * 1024 * 1024;
const virshPeers = ['root', 'libvirtd', 'libvirtd-storage', 'virsh', 'virt-admin', 'sasl-scram'];
const pythonPeers = ['root', 'libvirtd', 'libvirtd-storage', 'python3-libvirt', 'virsh', 'virt-admin', 'sasl-scram'];

function startStoragePair(t: ExecutionContext, options: GatewayPairOptions = {}): Promise<GatewayPair> {
  return startGatewayPair(t, { driverUri: STORAGE_URI, libvirtd: { drivers: ['storage'] }, ...options });
}

/** A scratch folder with an empty `pool` folder in it, for a `dir` pool's target. */
async function poolFolder(t: ExecutionContext): Promise<{ dir: string; poolDir: string }> {
  const dir = await scratchDir(t, 'vgv');
  const poolDir = join(dir, 'pool');
  await mkdir(poolDir);
  return { dir, poolDir };
}

/**
 * A 4 MiB file that is mostly holes: 64 KiB of data at 1 MiB, 5 bytes just past 3 MiB, and a
 * hole to the end. And a dense file of random bytes, not a multiple of any chunk size.
 */
async function sourceFiles(dir: string): Promise<{ sparse: string; dense: string }> {
  const sparse = join(dir, 'sparse.src');
  const handle = await open(sparse, 'w');
  await handle.write(randomBytes(64 * 1024), 0, 64 * 1024, 1024 * 1024);
  await handle.write(Buffer.from('tail!'), 0, 5, 3 * 1024 * 1024 + 123);
  await handle.truncate(VOLUME_BYTES);
  await handle.close();
  const dense = join(dir, 'dense.src');
  await writeFile(dense, randomBytes(VOLUME_BYTES - 4099));
  return { sparse, dense };
}

/** Bytes the file system really holds for a file (holes take none). */
async function allocatedBytes(file: string): Promise<number> {
  return (await stat(file)).blocks * 512;
}

/** One virsh session: a pool, two volumes, uploads and downloads with and without holes, then all removed. */
function virshSteps(poolDir: string, sources: { sparse: string; dense: string }, out: (name: string) => string): string {
  return [
    `pool-define-as ${POOL} dir --target ${poolDir}`,
    `pool-start ${POOL}`,
    `vol-create-as ${POOL} sparse 4M --allocation 0`,
    `vol-create-as ${POOL} dense 4M --allocation 0`,
    `vol-upload --pool ${POOL} sparse ${sources.sparse} --sparse`,
    `vol-download --pool ${POOL} sparse ${out('sparse')} --sparse`,
    `vol-download --pool ${POOL} sparse ${out('sparse-filled')}`,
    `vol-upload --pool ${POOL} dense ${sources.dense}`,
    `vol-download --pool ${POOL} dense ${out('dense')}`,
    `vol-download --pool ${POOL} dense ${out('dense-part')} --offset 4096 --length 100000`,
    `vol-list ${POOL} --details`,
    `vol-info --pool ${POOL} sparse`,
    `vol-delete --pool ${POOL} sparse`,
    `vol-delete --pool ${POOL} dense`,
    `pool-destroy ${POOL}`,
    `pool-undefine ${POOL}`,
    'pool-list --all',
  ].join(' ; ');
}

async function assertVirshVolumesSame(t: ExecutionContext, pair: GatewayPair, transport: 'unix' | 'tls'): Promise<void> {
  const { dir, poolDir } = await poolFolder(t);
  const sources = await sourceFiles(dir);
  const env = { LIBVIRT_AUTH_FILE: pair.authFile };
  const output = (tag: string) => (name: string) => join(dir, `${tag}-${name}.out`);
  // One after the other against the same daemon: each run leaves no pool behind for the next.
  const direct = await runVirsh([virshSteps(poolDir, sources, output('direct'))], {
    uri: pair.directUri(transport),
    env,
    timeoutMs: 60_000,
  });
  const through = await runVirsh([virshSteps(poolDir, sources, output('gateway'))], {
    uri: pair.gatewayUri(transport),
    env,
    timeoutMs: 60_000,
  });
  const tags = (text: string) => text.replaceAll(/(direct|gateway)-/g, 'TAG-');
  t.is(direct.code, 0, describeResult(direct));
  t.is(through.code, direct.code, `${transport}: ${describeResult(through)}\n${pair.virtauthd.logText().slice(-3000)}`);
  t.is(tags(through.stdout), tags(direct.stdout), transport);
  t.is(tags(through.stderr), tags(direct.stderr), transport);
  t.regex(direct.stdout, /sparse\s+\S+\/pool\/sparse\s+file\s+4\.00 MiB/);

  const [sparseSource, denseSource] = await Promise.all([readFile(sources.sparse), readFile(sources.dense)]);
  const sourceAllocated = await allocatedBytes(sources.sparse);
  for (const tag of ['direct', 'gateway']) {
    const out = output(tag);
    t.deepEqual(await readFile(out('sparse')), sparseSource, `${tag}: sparse round trip`);
    t.deepEqual(await readFile(out('sparse-filled')), sparseSource, `${tag}: the sparse volume read without holes`);
    // The volume is the file's size; its tail beyond the dense file reads as zeros.
    t.deepEqual(await readFile(out('dense')), Buffer.concat([denseSource, Buffer.alloc(4099)]), `${tag}: dense round trip`);
    t.deepEqual(await readFile(out('dense-part')), denseSource.subarray(4096, 4096 + 100_000), `${tag}: offset and length`);
    // Holes arrive as holes (STREAM_HOLE), not as zeros: the download is as sparse as the source.
    const allocated = await allocatedBytes(out('sparse'));
    t.true(
      allocated <= sourceAllocated + 64 * 1024,
      `${tag}: the --sparse download holds ${allocated} bytes, the source ${sourceAllocated}`,
    );
    t.true((await allocatedBytes(out('sparse-filled'))) > 3 * 1024 * 1024, `${tag}: without --sparse the holes are written`);
  }
}

interopTest.serial(
  "vol-upload and vol-download through virtauthd (SCRAM over unix) to libvirtd's storage driver: with and without holes, same bytes and output as directly",
  virshPeers,
  async (t) => {
    const pair = await startStoragePair(t);
    await assertVirshVolumesSame(t, pair, 'unix');
    t.true(pair.virtauthd.events('connect.open').every((r) => r.upstream === pair.upstreamUri));
  },
);

interopTest.serial(
  'vol-upload and vol-download over TLS on both links match direct TLS, holes included',
  [...virshPeers, 'certtool'],
  async (t) => {
    const pki = await TestPki.create();
    t.teardown(() => pki.remove());
    const pair = await startStoragePair(t, { pki, upstream: 'tls' });
    t.regex(pair.upstreamUri, /^storage\+tls:/);
    await assertVirshVolumesSame(t, pair, 'tls');
  },
);

/**
 * python3-libvirt's sparse stream API: upload a file with sparseSendAll (holes found with
 * SEEK_DATA/SEEK_HOLE), download with sparseRecvAll, and report the sections the download
 * delivered (data and holes, neighbours merged) and a digest of the bytes.
 */
const pythonSparseBody = String.raw`
import os

conn = libvirt.openAuth(SETTINGS['uri'], [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], answer, None], 0)
pool = conn.storagePoolCreateXML(
    "<pool type='dir'><name>%s</name><target><path>%s</path></target></pool>" % (SETTINGS['pool'], SETTINGS['poolDir']), 0)
vol = pool.createXML("<volume><name>pysparse</name><capacity>%d</capacity><allocation>0</allocation></volume>" % SETTINGS['size'], 0)
fd = os.open(SETTINGS['source'], os.O_RDONLY)


def read_data(_stream, nbytes, _fd):
    return os.read(fd, nbytes)


def where(_stream, _fd):
    here = os.lseek(fd, 0, os.SEEK_CUR)
    if here >= SETTINGS['size']:
        return [True, 0]
    try:
        data = os.lseek(fd, here, os.SEEK_DATA)
    except OSError:
        data = SETTINGS['size']
    if data > here:
        os.lseek(fd, here, os.SEEK_SET)
        return [False, data - here]
    hole = os.lseek(fd, here, os.SEEK_HOLE)
    os.lseek(fd, here, os.SEEK_SET)
    return [True, hole - here]


def skip(_stream, length, _fd):
    os.lseek(fd, length, os.SEEK_CUR)
    return 0


upload = conn.newStream(0)
vol.upload(upload, 0, SETTINGS['size'], libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
upload.sparseSendAll(read_data, where, skip, fd)
upload.finish()
os.close(fd)

sections = []
digest = hashlib.sha256()


def section(kind, length):
    if sections and sections[-1][0] == kind:
        sections[-1][1] += length
    else:
        sections.append([kind, length])


def got_data(_stream, data, _opaque):
    digest.update(data)
    section('data', len(data))
    return len(data)


def got_hole(_stream, length, _opaque):
    digest.update(bytes(length))
    section('hole', length)
    return 0


download = conn.newStream(0)
vol.download(download, 0, SETTINGS['size'], libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)
download.sparseRecvAll(got_data, got_hole, None)
download.finish()
info = vol.info()
vol.delete(0)
pool.destroy()
conn.close()
json.dump({'sections': sections, 'sha256': digest.hexdigest(), 'info': info}, sys.stdout)
sys.stdout.write('\n')
`;

interopTest.serial(
  "python3-libvirt's sparse streams through virtauthd: the same data and hole sections, the same bytes, as directly",
  pythonPeers,
  async (t) => {
    const pair = await startStoragePair(t);
    const { dir, poolDir } = await poolFolder(t);
    const { sparse } = await sourceFiles(dir);
    const run = async (uri: string) => {
      const script = pythonGatewayScript(uri, pythonSparseBody, { pool: 'pypool', poolDir, source: sparse, size: VOLUME_BYTES });
      const result = await runPython(script, { timeoutMs: 60_000 });
      t.is(result.code, 0, `${describeResult(result)}\n${pair.virtauthd.logText().slice(-2000)}`);
      return JSON.parse(result.stdout.trim().split('\n').pop() ?? 'null') as { sections: [string, number][]; sha256: string };
    };
    const direct = await run(pair.directUri());
    const through = await run(pair.gatewayUri());
    t.deepEqual(through, direct);
    t.is(
      direct.sha256,
      createHash('sha256')
        .update(await readFile(sparse))
        .digest('hex'),
    );
    t.deepEqual(
      direct.sections.map(([kind]) => kind),
      ['hole', 'data', 'hole', 'data', 'hole'],
      JSON.stringify(direct.sections),
    );
  },
);

// ---------------------------------------------------------------------------------------------
// A client that dies or misbehaves mid-upload

/** A storage pair with volume "victim" in a started pool, created directly on libvirtd; and the volume's file. */
async function startWithVictim(t: ExecutionContext): Promise<{ pair: GatewayPair; victimFile: string }> {
  const pair = await startStoragePair(t);
  const { poolDir } = await poolFolder(t);
  const created = await runVirsh([`pool-create-as ${POOL} dir --target ${poolDir} ; vol-create-as ${POOL} victim 4M --allocation 0`], {
    uri: pair.directUri(),
    env: { LIBVIRT_AUTH_FILE: pair.authFile },
  });
  t.is(created.code, 0, describeResult(created));
  return { pair, victimFile: join(poolDir, 'victim') };
}

/**
 * The processes that have `file` open. libvirt 9.0 takes no lock on a volume being uploaded (a
 * delete or a pool-destroy meanwhile succeeds), so what an upload holds is its open file.
 */
async function openersOf(file: string): Promise<number[]> {
  const openers: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let links: string[];
    try {
      links = await readdir(`/proc/${entry}/fd`);
    } catch {
      continue; // Gone meanwhile, or not ours to read.
    }
    for (const fd of links) {
      const target = await readlink(`/proc/${entry}/fd/${fd}`).catch(() => '');
      if (target === file) {
        openers.push(Number(entry));
        break;
      }
    }
  }
  return openers;
}

/** After the client is gone: libvirtd lost its client and closed the volume, and a new upload through virtauthd works. */
async function assertVolumeReleased(t: ExecutionContext, pair: GatewayPair, victimFile: string): Promise<void> {
  await waitFor(async () => (await libvirtdClients(pair.libvirtd)) === 0, 10_000, 'libvirtd to see its client go');
  await waitFor(() => pair.virtauthd.handle.server.clientCount === 0, 10_000, 'virtauthd to drop the client');
  // The aborted stream's end: libvirtd closes the volume file.
  await waitFor(async () => (await openersOf(victimFile)).length === 0, 10_000, 'libvirtd to close the volume');
  const dir = await scratchDir(t);
  const file = join(dir, 'again.bin');
  await writeFile(file, randomBytes(10_000));
  const again = await runVirsh(
    [`vol-upload --pool ${POOL} victim ${file} ; vol-download --pool ${POOL} victim ${file}.back --length 10000`],
    {
      uri: pair.gatewayUri(),
      env: { LIBVIRT_AUTH_FILE: pair.authFile },
    },
  );
  t.is(again.code, 0, describeResult(again));
  t.deepEqual(await readFile(`${file}.back`), await readFile(file));
}

const uploadThenWait = String.raw`
conn = libvirt.openAuth(SETTINGS['uri'], [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], answer, None], 0)
vol = conn.storagePoolLookupByName(SETTINGS['pool']).storageVolLookupByName('victim')
stream = conn.newStream(0)
vol.upload(stream, 0, 4 * 1024 * 1024, 0)
stream.send(b'\x07' * 262144)
print('uploading', flush=True)
time.sleep(600)
`;

interopTest.serial(
  'a client killed mid-upload: the upstream stream is aborted, libvirtd closes the volume, and a later upload succeeds',
  pythonPeers,
  async (t) => {
    const { pair, victimFile } = await startWithVictim(t);
    const dir = await scratchDir(t);
    const scriptFile = join(dir, 'upload.py');
    await writeFile(scriptFile, pythonGatewayScript(pair.gatewayUri(), uploadThenWait, { pool: POOL }));
    const child = spawn(requireExecutable(systemPython, 'python3-libvirt'), ['-I', scriptFile], {
      env: libvirtClientEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    t.teardown(() => void child.kill('SIGKILL'));
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    await waitFor(() => output.includes('uploading') || child.exitCode !== null, 30_000, 'the client to start its upload');
    t.true(output.includes('uploading'), output);
    t.true((await openersOf(victimFile)).length > 0, 'while the upload stream is open, libvirtd has the volume open');
    child.kill('SIGKILL');
    await assertVolumeReleased(t, pair, victimFile);
  },
);

interopTest.serial(
  'an oversized stream chunk mid-upload closes the client and its upstream; libvirtd closes the volume',
  virshPeers,
  async (t) => {
    const { pair, victimFile } = await startWithVictim(t);
    const conn = await pair.openClient();
    const { pool } = await conn.storagePoolLookupByName({ name: POOL });
    const { vol } = await conn.storageVolLookupByName({ pool, name: 'victim' });
    await conn.storageVolUpload({ vol, offset: 0n, length: BigInt(VOLUME_BYTES), flags: 0 });
    t.true((await openersOf(victimFile)).length > 0, 'while the upload stream is open, libvirtd has the volume open');
    // A stream packet whose length word is past libvirt's 32 MiB limit: refused before anything
    // is buffered for it, and the connection ends (there is no way to skip to the next packet).
    const head = encodePacket(
      { prog: REMOTE_PROGRAM, vers: 1, proc: 208, type: MessageType.STREAM, serial: 0, status: MessageStatus.CONTINUE },
      xdr.xvoid,
      undefined,
    );
    head.writeUInt32BE(PACKET_MAX + 4, 0);
    conn.rpc.stream.write(head);
    await conn.rpc.whenClosed();
    await assertVolumeReleased(t, pair, victimFile);
    t.true(
      pair.virtauthd.events('protocol.error').some((r) => /exceeds the maximum/.test(String(r.err))),
      'virtauthd logs why it closed the client',
    );
  },
);
