// Helpers for interop tests against real libvirt peers (libvirtd, virsh, python3-libvirt).
// availability.js imports ava, so this index is for test files; other scripts (benchmarks)
// import the modules they need directly, e.g. './peers/libvirtd.js'.
export * from './availability.js';
export * from './clients.js';
export * from './executables.js';
export * from './libvirtd.js';
export * from './pki.js';
export * from './process.js';
export * from './sshd.js';
export * from './util.js';
export * from './datagram-receiver.js';
