// Socket helpers that Node's net module lacks: unix datagrams (sd_notify, the journal's native
// protocol) and the local address of an inherited descriptor (systemd socket activation).
#pragma once

#include <node_api.h>

napi_value RegisterSocketTools(napi_env env, napi_value exports);
