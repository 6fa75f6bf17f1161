// Output in virsh's formats, so scripts written for virsh read virtauth's output unchanged.

import { DomainState, formatUuid, type DomainInfo, type DomainRef } from '@virtauth/core';

const STATE_NAMES: Record<number, string> = {
  [DomainState.NOSTATE]: 'no state',
  [DomainState.RUNNING]: 'running',
  [DomainState.BLOCKED]: 'idle',
  [DomainState.PAUSED]: 'paused',
  [DomainState.SHUTDOWN]: 'in shutdown',
  [DomainState.SHUTOFF]: 'shut off',
  [DomainState.CRASHED]: 'crashed',
  [DomainState.PMSUSPENDED]: 'pmsuspended',
};

export function stateName(state: number): string {
  return STATE_NAMES[state] ?? 'unknown';
}

/** virsh's table: a leading space, columns padded and separated by three spaces. */
export function formatTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => ' ' + cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('   ');
  const dashes = '-'.repeat(widths.reduce((s, w) => s + w + 3, 0));
  return [line(headers), dashes, ...rows.map(line)].join('\n') + '\n';
}

export function formatDomainList(domains: { dom: DomainRef; state: number }[]): string {
  return formatTable(
    ['Id', 'Name', 'State'],
    domains.map(({ dom, state }) => [dom.id >= 0 ? String(dom.id) : '-', dom.name, stateName(state)]),
  );
}

export interface DomInfoDetails {
  dom: DomainRef;
  info: DomainInfo;
  osType?: string;
  persistent?: boolean;
  autostart?: boolean;
  managedSave?: boolean;
  securityModel?: { model: string; doi: string };
  securityLabel?: { label: string; enforcing: boolean };
}

const field = (name: string, value: string) => `${`${name}:`.padEnd(16)}${value}`;

export function formatDomInfo(d: DomInfoDetails): string {
  const lines = [
    field('Id', d.dom.id >= 0 ? String(d.dom.id) : '-'),
    field('Name', d.dom.name),
    field('UUID', formatUuid(d.dom.uuid) ?? d.dom.uuid.toString('hex')),
  ];
  if (d.osType !== undefined) lines.push(field('OS Type', d.osType));
  lines.push(field('State', stateName(d.info.state)), field('CPU(s)', String(d.info.nrVirtCpu)));
  if (d.info.cpuTime !== 0n) lines.push(field('CPU time', `${(Number(d.info.cpuTime) / 1e9).toFixed(1)}s`));
  lines.push(field('Max memory', `${d.info.maxMem} KiB`), field('Used memory', `${d.info.memory} KiB`));
  if (d.persistent !== undefined) lines.push(field('Persistent', d.persistent ? 'yes' : 'no'));
  if (d.autostart !== undefined) lines.push(field('Autostart', d.autostart ? 'enable' : 'disable'));
  if (d.managedSave !== undefined) lines.push(field('Managed save', d.managedSave ? 'yes' : 'no'));
  if (d.securityModel && d.securityModel.model !== '') {
    lines.push(field('Security model', d.securityModel.model), field('Security DOI', d.securityModel.doi));
    if (d.securityLabel && d.securityLabel.label !== '') {
      lines.push(field('Security label', `${d.securityLabel.label} (${d.securityLabel.enforcing ? 'enforcing' : 'permissive'})`));
    }
  }
  return lines.join('\n') + '\n';
}

/** libvirt's version number (major*1e6 + minor*1e3 + micro) as text. */
export function formatVersion(v: bigint): string {
  const n = Number(v);
  return `${Math.floor(n / 1e6)}.${Math.floor((n % 1e6) / 1e3)}.${n % 1e3}`;
}
