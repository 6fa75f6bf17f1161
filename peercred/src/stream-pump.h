// Moves libvirt stream data from one socket to another on a thread of its own (see the .cc).
#pragma once

#include <node_api.h>

napi_value RegisterStreamPump(napi_env env, napi_value exports);
