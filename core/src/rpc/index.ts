export * from './packet.js';
export * from './framer.js';
export * from './connection.js';
export * from './keepalive.js';
export * from './dispatcher.js';
