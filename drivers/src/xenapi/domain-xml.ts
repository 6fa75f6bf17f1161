// A libvirt-style <domain type='xen'> description of a XenAPI VM: the subset the record answers.

import { domainId, type VmRecord } from './records.js';

export function escapeXml(text: string): string {
  return text.replace(/[&<>'"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', "'": '&apos;', '"': '&quot;' })[c]!);
}

// XenAPI's on_normal_exit / on_crash_behaviour names → libvirt's lifecycle action names.
const LIFECYCLE_ACTIONS: Record<string, string> = {
  destroy: 'destroy',
  restart: 'restart',
  preserve: 'preserve',
  rename_restart: 'rename-restart',
  coredump_and_destroy: 'coredump-destroy',
  coredump_and_restart: 'coredump-restart',
};

export function domainXml(vm: VmRecord): string {
  const id = domainId(vm);
  const maxKiB = vm.memoryStaticMax / 1024n;
  const currentKiB = (vm.memoryDynamicMax > 0n ? vm.memoryDynamicMax : vm.memoryStaticMax) / 1024n;
  const currentVcpus = vm.vcpusAtStartup > 0 && vm.vcpusAtStartup < vm.vcpusMax ? ` current='${vm.vcpusAtStartup}'` : '';
  const lines = [
    `<domain type='xen'${id >= 0 ? ` id='${id}'` : ''}>`,
    `  <name>${escapeXml(vm.nameLabel)}</name>`,
    `  <uuid>${escapeXml(vm.uuid)}</uuid>`,
  ];
  if (vm.nameDescription !== '') lines.push(`  <description>${escapeXml(vm.nameDescription)}</description>`);
  lines.push(
    `  <memory unit='KiB'>${maxKiB}</memory>`,
    `  <currentMemory unit='KiB'>${currentKiB}</currentMemory>`,
    `  <vcpu placement='static'${currentVcpus}>${vm.vcpusMax}</vcpu>`,
    '  <os>',
    `    <type>${vm.hvm ? 'hvm' : 'xen'}</type>`,
    '  </os>',
  );
  const lifecycle: [string, string][] = [
    ['on_poweroff', vm.actionsAfterShutdown],
    ['on_reboot', vm.actionsAfterReboot],
    ['on_crash', vm.actionsAfterCrash],
  ];
  for (const [element, action] of lifecycle) {
    const mapped = LIFECYCLE_ACTIONS[action];
    if (mapped) lines.push(`  <${element}>${mapped}</${element}>`);
  }
  lines.push('</domain>', '');
  return lines.join('\n');
}
