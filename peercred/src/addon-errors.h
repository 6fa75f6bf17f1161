// Shared by the addon's source files. Errors thrown to JavaScript by the addon's functions: a JS Error whose `code` is an errno name
// (or the addon's own code), so the TypeScript wrappers can tell failures apart and explain them;
// and the check of the one argument most functions take, a file descriptor.
#pragma once

#include <node_api.h>

#include <cerrno>
#include <cstring>
#include <string>

inline napi_value ThrowWithCode(napi_env env, const char* code, const std::string& message) {
  napi_throw_error(env, code, message.c_str());
  return nullptr;
}

inline const char* ErrnoName(int error) {
  switch (error) {
    case EBADF: return "EBADF";
    case ENOTSOCK: return "ENOTSOCK";
    case ENOTCONN: return "ENOTCONN";
    case ENOPROTOOPT: return "ENOPROTOOPT";
    case EINVAL: return "EINVAL";
    case ENOMEM: return "ENOMEM";
    case ENOENT: return "ENOENT";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EAGAIN: return "EAGAIN";
    case EMSGSIZE: return "EMSGSIZE";
    case ENOBUFS: return "ENOBUFS";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case EPIPE: return "EPIPE";
    case ECONNRESET: return "ECONNRESET";
    case ETIMEDOUT: return "ETIMEDOUT";
    default: return "ESYSCALL";
  }
}

inline napi_value ThrowErrno(napi_env env, const char* what, int error) {
  return ThrowWithCode(env, ErrnoName(error), std::string(what) + ": " + std::strerror(error));
}

// Reads `fd` from a call's first argument; false (with a JS error thrown) when it is not a
// non-negative integer.
inline bool ReadDescriptorArgument(napi_env env, napi_callback_info info, const char* function, int32_t& fd) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok) return false;
  fd = -1;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    ThrowWithCode(env, "ERR_INVALID_ARG", std::string(function) + " expects a file descriptor (a non-negative integer)");
    return false;
  }
  return true;
}

// Puts a native function on the addon's exports.
inline bool AddFunction(napi_env env, napi_value exports, const char* name, napi_callback callback) {
  napi_value function;
  if (napi_create_function(env, name, NAPI_AUTO_LENGTH, callback, nullptr, &function) != napi_ok) return false;
  return napi_set_named_property(env, exports, name, function) == napi_ok;
}
