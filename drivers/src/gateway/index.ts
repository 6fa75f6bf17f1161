export { PassThrough, type CallCheck, type ForwardedCall, type PassThroughLogger, type PassThroughOptions } from './pass-through.js';
export { REMOTE_PROC_LAST, STREAM_PROCEDURES } from './remote-procedures.js';
