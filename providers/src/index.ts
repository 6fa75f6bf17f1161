export { noneAuthProvider } from './none.js';
export { registerDefaultProviders } from './register.js';
