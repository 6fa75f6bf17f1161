import 'reflect-metadata';
import { GatewayPair } from './dist/src/gateway-support.js';
import { runPython } from './dist/src/peers/clients.js';
const pair = await GatewayPair.start({ settings: { auth_unix_rw: 'none' } });
const script = (uri) => `
import time, libvirt
c = libvirt.open('${uri}')
d = c.lookupByName('test')
def shot():
    s = c.newStream(0)
    d.screenshot(s, 0, 0)
    s.recvAll(lambda _s, data, _o: len(data), None)
    s.finish()
for _ in range(20): shot()
ts = []
for _ in range(200):
    t = time.perf_counter(); shot(); ts.append(time.perf_counter() - t)
ts.sort()
print('median ms %.3f p90 %.3f' % (ts[100]*1000, ts[180]*1000))
`;
for (const [name, uri] of [['direct', pair.directUri()], ['gateway', pair.gatewayUri()], ['direct', pair.directUri()], ['gateway', pair.gatewayUri()]]) {
  const r = await runPython(script(uri), { timeoutMs: 60000 });
  console.log(name, r.stdout.trim(), r.stderr.trim().slice(0, 300));
}
await pair.stop();
