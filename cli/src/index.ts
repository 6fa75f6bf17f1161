export { openAuth, open, openReadOnly, createClientContainer, type OpenOptions, type Connection } from './connect.js';
export { lookupDomain, CLIENT_VERSION } from './commands.js';
