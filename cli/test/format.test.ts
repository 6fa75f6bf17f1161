// virsh's output formats, which scripts written for virsh parse: table columns, dominfo's fields
// and their order, version numbers.

import test from 'ava';
import { DomainState } from '@virtauth/core';
import { formatDomInfo, formatDomainList, formatTable, formatVersion, stateName } from '../src/format.js';

const uuid = Buffer.from('6695eb01f6a4830479aa97f2502e193f', 'hex');

test('tables: a leading space, columns as wide as their widest cell, three spaces between, dashes to the width plus three per column', (t) => {
  t.is(
    formatTable(
      ['Id', 'Name', 'State'],
      [
        ['1', 'a-long-name', 'running'],
        ['-', 'b', 'shut off'],
      ],
    ),
    [' Id   Name          State', '-'.repeat(30), ' 1    a-long-name   running', ' -    b             shut off', ''].join('\n'),
  );
  t.is(formatTable(['Id', 'Name'], []), ` Id   Name\n${'-'.repeat(12)}\n`, 'no rows: the header and the dashes');
});

test('the domain list shows an inactive domain\'s id as "-" and states by name', (t) => {
  const text = formatDomainList([
    { dom: { name: 'web', uuid, id: 3 }, state: DomainState.RUNNING },
    { dom: { name: 'db', uuid, id: -1 }, state: DomainState.SHUTOFF },
  ]);
  t.deepEqual(text.split('\n').slice(2), [' 3    web    running', ' -    db     shut off', '']);
});

test("state names are virsh's; a state this client does not know is 'unknown'", (t) => {
  t.is(stateName(DomainState.BLOCKED), 'idle');
  t.is(stateName(DomainState.PMSUSPENDED), 'pmsuspended');
  t.is(stateName(99), 'unknown');
  t.is(stateName(-1), 'unknown');
});

test("dominfo: virsh's fields in virsh's order; those the server did not give are left out", (t) => {
  const info = { state: DomainState.PAUSED, maxMem: 2048n, memory: 1024n, nrVirtCpu: 2, cpuTime: 1_500_000_000n };
  t.is(
    formatDomInfo({
      dom: { name: 'web', uuid, id: 3 },
      info,
      osType: 'hvm',
      persistent: true,
      autostart: false,
      managedSave: false,
      securityModel: { model: 'selinux', doi: '0' },
      securityLabel: { label: 'system_u:system_r:svirt_t:s0', enforcing: true },
    }),
    [
      'Id:             3',
      'Name:           web',
      'UUID:           6695eb01-f6a4-8304-79aa-97f2502e193f',
      'OS Type:        hvm',
      'State:          paused',
      'CPU(s):         2',
      'CPU time:       1.5s',
      'Max memory:     2048 KiB',
      'Used memory:    1024 KiB',
      'Persistent:     yes',
      'Autostart:      disable',
      'Managed save:   no',
      'Security model: selinux',
      'Security DOI:   0',
      'Security label: system_u:system_r:svirt_t:s0 (enforcing)',
      '',
    ].join('\n'),
  );
  t.is(
    formatDomInfo({ dom: { name: 'off', uuid, id: -1 }, info: { ...info, cpuTime: 0n }, securityModel: { model: '', doi: '' } }),
    [
      'Id:             -',
      'Name:           off',
      'UUID:           6695eb01-f6a4-8304-79aa-97f2502e193f',
      'State:          paused',
      'CPU(s):         2',
      'Max memory:     2048 KiB',
      'Used memory:    1024 KiB',
      '',
    ].join('\n'),
    'no CPU time when none was used, no security lines for an empty model',
  );
});

test("versions: libvirt's major*1e6 + minor*1e3 + micro", (t) => {
  t.is(formatVersion(9_000_000n), '9.0.0');
  t.is(formatVersion(10_002_003n), '10.2.3');
  t.is(formatVersion(0n), '0.0.0');
});
