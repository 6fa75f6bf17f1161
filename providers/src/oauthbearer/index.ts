export { OAuthBearerMechanism, OAUTHBEARER, type OAuthBearerMechanismOptions, type OAuthBearerClientOptions } from './mechanism.js';
export { registerOAuthBearer } from './register.js';
export { oauthBearerSettingsFrom, OAUTH_SETTING_PREFIX, OAUTHBEARER_CONFIG_KEYS } from './settings.js';
export {
  OidcTokenClient,
  deviceFlowPrompt,
  TOKEN_EXCHANGE_GRANT,
  type OidcClientSettings,
  type OidcGrant,
  type TokenRequest,
  type SignInInteraction,
} from './token-client.js';
export {
  TokenCacheFile,
  defaultTokenCacheDirectory,
  type StoredToken,
  type TokenCacheContents,
  type TokenCacheOptions,
} from './token-cache.js';
export { authorizationCodeFlow, LOOPBACK_CALLBACK_PATH, type AuthorizationCodeRequest } from './authorization-code.js';
export { BearerTokenValidator, type BearerValidatorSettings, type TokenValidationMode, type TokenVerdict } from './validator.js';
export { CachedIssuer, checkIssuerUrl, isLoopbackHost, type IssuerConnection } from './discovery.js';
export {
  createOidcCredentialCallback,
  requestDelegatedToken,
  tokenRequestAudience,
  OAUTH2_TOKEN_CHALLENGE_PREFIX,
  OAUTH2_TOKEN_SERVICE,
  type OidcCredentialCallbackOptions,
  type DelegatedTokenRequest,
} from './delegation.js';
export {
  encodeClientMessage,
  parseClientMessage,
  encodeServerError,
  parseServerError,
  OAuthBearerFormatError,
  CLIENT_ERROR_ACK,
  type OAuthBearerServerError,
  type OAuthBearerClientMessage,
  type BearerErrorStatus,
} from './messages.js';
